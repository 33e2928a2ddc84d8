"""The micro-step strategies on 2 Ray Train workers with real DeepSpeed (gloo): whatever each rank's batch
holds, one step moves the parameters by exactly the mean of the ranks' gradients.

ZeRO-2: rank 0 trains on a video, rank 1 on an image (STP unused there); a plain `engine.backward`
mismatches DeepSpeed's gradient buckets there (gloo aborts: "Received data size doesn't match
expected size"), `ReplayStep` does not. ZeRO-3: both ranks on videos, rank 1's
sample lost to decoding and replaced by a zero-loss placeholder.
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
    """A video sample with a coordinate target, a second video, an image (right-padded single rows)."""
    from model_zoo.contract import IGNORE_INDEX

    v = config.text_vocab_size + config.coord_vocab_size  # <TEMP-INPUT>; +1 is <TEMP-OUTPUT>
    specs = [(2, [10, 11, 12], [20, v + 1, 21], 0.6), (2, [13, 14], [22, 23, 24], 0.0), (1, [15, 16], [25, 26], 0.0)]
    out, g = [], torch.Generator().manual_seed(3)
    for kind, prompt, answer, value in specs:
        visual = [config.video_token_id] * config.video_seq_len if kind == 2 else \
            [config.image_token_id] * config.image_seq_len
        ids = prompt[:1] + visual + prompt[1:] + answer
        labels = [IGNORE_INDEX] * (len(ids) - len(answer)) + answer
        coords = [value if t == v + 1 else 0.0 for t in ids]
        frames = config.num_frames if kind == 2 else 1
        out.append({"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
                    "labels": torch.tensor([labels]), "coord_values": torch.tensor([coords]),
                    "pixel_values": torch.rand(frames, 3, config.image_size, config.image_size, generator=g) * 2 - 1,
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
    from llavast.train.step import ReplayModule, ReplayStep, Zero3Step, register_external_parameters

    zero, strategy = loop_config["zero_stage"], loop_config["strategy"]
    rank = ray.train.get_context().get_world_rank()
    model, contract = _model()
    model.activation_checkpointing_enable()
    video, video2, image = _batches(model.config)
    params = [p for p in model.parameters() if p.requires_grad]
    config = deepspeed_config(DeepSpeedSection(zero_stage=zero, param_persistence_threshold=0),
                              TrainSection(stage=2, max_grad_norm=None), False, sum(p.numel() for p in params))
    optimizer = torch.optim.SGD(params, lr=LR)
    if zero == 3:
        register_external_parameters(model)
    engine, *_ = deepspeed.initialize(model=ReplayModule(model), optimizer=optimizer, config=config)
    if strategy == "replay":
        batch = StreamBatch(inputs=[video, image][rank], uids=[f"s{rank}"])
        ReplayStep(engine, pad_id=0, device=torch.device("cpu"))(batch, kind=2 - rank)
    else:
        lost = StreamBatch(inputs=None, uids=[], dropped={"decode_error": 1})
        batch = [StreamBatch(inputs=video, uids=["s0"]), lost][rank]
        Zero3Step(engine, model.config, pad_id=0, micro_batch_size=1, device=torch.device("cpu"))(batch, kind=2)
    after = snapshot(model, contract, {"lora", "stp", "lape"}, zero == 3)
    if rank == 0:
        save_file({k: v.contiguous() for k, v in after.items()}, loop_config["out"])


def _expected(batches: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """SGD with lr 1 on the mean of the per-rank gradients, computed in one process without DeepSpeed."""
    model, contract = _model()
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [model.get_parameter(n) for n in names]
    total = [torch.zeros_like(p) for p in params]
    for batch in batches:
        grads = torch.autograd.grad(model(**batch).loss, params, allow_unused=True)
        total = [t + (g if g is not None else 0) for t, g in zip(total, grads)]
    return {n: p.detach() - LR * t / 2 for n, p, t in zip(names, params, total)}


def _fit(strategy: str, zero_stage: int, tmp_path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = tmp_path / f"{strategy}-{zero_stage}.safetensors"
    trainer = TorchTrainer(
        one_step, train_loop_config={"zero_stage": zero_stage, "strategy": strategy, "out": str(out)},
        torch_config=TorchConfig(backend="gloo"),
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.25}),
        run_config=RunConfig(name=f"step-{strategy}-{zero_stage}", storage_path=str(tmp_path / "ray"),
                             worker_runtime_env={"env_vars": {"DS_ACCELERATOR": "cpu"}}))
    trainer.fit()
    return load_file(str(out))


def test_replay_step_gives_the_exact_mean_gradient_on_mixed_media(ray_local: None, tmp_path: Path) -> None:
    from model_zoo.llava_st import tiny_config

    video, _, image = _batches(tiny_config())
    expected = _expected([video, image])
    got = _fit("replay", 2, tmp_path)
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.allclose(got[name], value, atol=1e-6), name
    stp = [n for n in expected if n.startswith("stp.")]
    assert stp and all(not torch.equal(got[n], _model()[0].get_parameter(n)) for n in stp[:3])


def test_zero3_step_with_a_lost_sample(ray_local: None, tmp_path: Path) -> None:
    from model_zoo.llava_st import tiny_config

    video = _batches(tiny_config())[0]
    expected = _expected([video])  # the placeholder contributes a zero gradient to the mean
    got = _fit("zero3", 3, tmp_path)
    for name, value in expected.items():
        assert torch.allclose(got[name], value, atol=1e-5), name
