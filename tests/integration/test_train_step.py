"""The one micro-step on 2 Ray Train workers with real DeepSpeed (gloo): whatever each rank's batch holds,
one optimizer step moves the parameters by exactly the mean of the ranks' gradients, under ZeRO-2 and ZeRO-3.

Two micro-steps accumulate into one optimizer step, each single-media across ranks as the plan makes them:
1. videos: rank 0's has coordinates (an input placeholder and a coordinate target), rank 1's has none;
2. images: rank 0 has one, rank 1's sample was lost and arrives as a target-less stand-in.
DeepSpeed divides each micro-step's loss by the accumulation steps and averages over ranks, so the
reference is SGD (lr 1) on the sum of the three real samples' gradients / 4, computed in one process.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import ray.cloudpickle
import torch
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

pytestmark = pytest.mark.integration
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import a test module
LR = 1.0


def _batches(config) -> list[dict[str, torch.Tensor]]:
    """Rank 0's video (coordinates in and out), rank 1's video (none), rank 0's image, rank 1's stand-in."""
    from model_zoo.contract import IGNORE_INDEX

    v = config.text_vocab_size + config.coord_vocab_size  # <TEMP-INPUT>; +1 is <TEMP-OUTPUT>
    specs = [(2, [10, v, 12], [20, v + 1, 21], {v: 0.3, v + 1: 0.6}), (2, [13, 14], [22, 23, 24], {}),
             (1, [15, 16], [25, 26], {}), (1, [17, 18], [], {})]
    out, g = [], torch.Generator().manual_seed(3)
    for kind, prompt, answer, values in specs:
        visual = [config.video_token_id] * config.video_seq_len if kind == 2 else \
            [config.image_token_id] * config.image_seq_len
        ids = prompt[:1] + visual + prompt[1:] + answer
        labels = [IGNORE_INDEX] * (len(ids) - len(answer)) + answer
        frames = config.num_frames if kind == 2 else 1
        pixels = torch.rand(frames, 3, config.image_size, config.image_size, generator=g) * 2 - 1
        out.append({"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
                    "labels": torch.tensor([labels]), "coord_values": torch.tensor([[values.get(t, 0.0) for t in ids]]),
                    "pixel_values": pixels if answer else -torch.ones_like(pixels),  # a stand-in: zero frames
                    "media_kind": torch.tensor([kind])})
    return out


def _model():
    import model_zoo
    from llavast.train.lora import LoraSpec, add_lora
    from model_zoo.llava_st import LlavaSTForCausalLM, tiny_config

    contract = model_zoo.spec("llava_st")
    torch.manual_seed(0)
    model = LlavaSTForCausalLM(tiny_config())
    add_lora(model, LoraSpec(r=4, alpha=8, dropout=0.0, target_modules=contract.lora_target_modules(model)))
    with torch.no_grad():  # a non-zero B, so the LoRA A matrices get gradients too
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.normal_(0, 0.02)
    contract.apply_stage(model, {"lora", "stp", "lape"}, True)
    return model, contract


def one_step(loop_config: dict) -> None:
    import deepspeed
    import ray.train
    from safetensors.torch import save_file

    from llavast.config.stage import DeepSpeedSection, TrainSection
    from llavast.data.collate import StreamBatch
    from llavast.train.ds_config import deepspeed_config
    from llavast.train.stage_model import snapshot
    from llavast.train.step import EngineRoot, micro_step, register_external_parameters

    zero = loop_config["zero_stage"]
    rank = ray.train.get_context().get_world_rank()
    model, contract = _model()
    model.activation_checkpointing_enable()
    video0, video1, image0, lost1 = _batches(model.config)
    params = [p for p in model.parameters() if p.requires_grad]
    config = deepspeed_config(DeepSpeedSection(zero_stage=zero, param_persistence_threshold=0),
                              TrainSection(stage=2, max_grad_norm=None, micro_batch_size=1, grad_accum_steps=2),
                              False, sum(p.numel() for p in params))
    optimizer = torch.optim.SGD(params, lr=LR)
    if zero == 3:
        register_external_parameters(model)
    engine, *_ = deepspeed.initialize(model=EngineRoot(model), optimizer=optimizer, config=config)
    for inputs in [(video0, video1), (image0, lost1)]:
        micro_step(engine, StreamBatch(inputs=inputs[rank], uids=[f"s{rank}"]))
    after = snapshot(model, contract, {"lora", "stp", "lape"}, zero == 3)
    if rank == 0:
        save_file({k: v.contiguous() for k, v in after.items()}, loop_config["out"])


def _expected(batches: list[dict[str, torch.Tensor]], divisor: int) -> dict[str, torch.Tensor]:
    """SGD with lr 1 on the sum of the samples' gradients / divisor, in one process without DeepSpeed."""
    model, contract = _model()
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [model.get_parameter(n) for n in names]
    total = [torch.zeros_like(p) for p in params]
    for batch in batches:
        grads = torch.autograd.grad(model(**batch).loss, params, allow_unused=True)
        total = [t + (g if g is not None else 0) for t, g in zip(total, grads)]
    return {n: p.detach() - LR * t / divisor for n, p, t in zip(names, params, total)}


def _fit(zero_stage: int, tmp_path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = tmp_path / f"zero{zero_stage}.safetensors"
    trainer = TorchTrainer(
        one_step, train_loop_config={"zero_stage": zero_stage, "out": str(out)},
        torch_config=TorchConfig(backend="gloo"),
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.25}),
        run_config=RunConfig(name=f"step-zero{zero_stage}", storage_path=str(tmp_path / "ray"),
                             worker_runtime_env={"env_vars": {"DS_ACCELERATOR": "cpu"}}))
    trainer.fit()
    return load_file(str(out))


@pytest.mark.parametrize("zero_stage", [2, 3])
def test_one_micro_step_gives_the_exact_mean_gradient(zero_stage: int, ray_local: None, tmp_path: Path) -> None:
    from model_zoo.llava_st import tiny_config

    video0, video1, image0, _ = _batches(tiny_config())
    expected = _expected([video0, video1, image0], divisor=4)  # the stand-in adds zero, and counts in the mean
    got = _fit(zero_stage, tmp_path)
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.allclose(got[name], value, atol=1e-6), name
    before = _model()[0]
    for group in ("stp.", "lape.", "language_model."):  # each trainable part moved (not a vacuous equality)
        names = [n for n in expected if n.startswith(group)]
        assert names and any(not torch.equal(got[n], before.get_parameter(n)) for n in names), group
