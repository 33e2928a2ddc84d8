"""Stage policies on the tiny model without Ray or DeepSpeed: freezing, LoRA add/merge, artifact round trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import model_zoo
from llavast.config.stage import LoraSection, TrainSection
from llavast.errors import ConfigError, TrainError
from llavast.train.artifact import read_artifact, write_artifact
from llavast.train.lora import LoraSpec, add_lora, has_lora, merge_lora
from llavast.train.policy import resolve_policy
from llavast.train.stage_model import build_stage_model, export_artifact
from model_zoo.llava_st import LlavaSTForCausalLM, tiny_config

from .model_batches import make_batch

CONTRACT = model_zoo.spec("llava_st")
LORA = LoraSection(r=4, alpha=8, dropout=0.0)


def _policy(stage: int, **train: object):
    return resolve_policy(TrainSection(stage=stage, **train), CONTRACT)


def _trainable_groups(model: torch.nn.Module) -> set[str]:
    return {g for g, params in CONTRACT.parameter_groups(model).items() if any(p.requires_grad for _, p in params)}


def _perturb(model: torch.nn.Module, groups: set[str], seed: int) -> None:
    """Stand-in for training: move every parameter of `groups` (LoRA B away from zero too)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for group in groups:
            for _, p in CONTRACT.parameter_groups(model)[group]:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)


def _stage_artifact(stage_model, tmp: Path):
    manifest = {"stage": stage_model.policy.stage}
    artifact = export_artifact(stage_model, stage_model.model, zero3=False, manifest=manifest)
    write_artifact(tmp, artifact, stage_model.tokenizer)
    return read_artifact(tmp)


def test_policy_defaults_follow_the_paper_and_overrides_apply() -> None:
    p1, p2, p3 = _policy(1), _policy(2), _policy(3)
    assert (p1.trainable, p1.lape, p1.merge_parent_lora) == ({"stp"}, False, False)
    assert (p2.trainable, p2.lape, p2.merge_parent_lora) == ({"lora", "stp", "lape"}, True, False)
    assert (p3.trainable, p3.lape, p3.merge_parent_lora) == ({"lora", "stp", "lape"}, True, True)
    custom = _policy(2, trainable=("stp", "projector"), lape=False)
    assert (custom.trainable, custom.lape) == ({"stp", "projector"}, False)
    with pytest.raises(ConfigError, match=r"train.trainable: unknown parameter groups \['decoder'\]"):
        _policy(1, trainable=("decoder",))
    with pytest.raises(ConfigError, match=r"train.group_lr: \['lora'\] do not train in stage 1"):
        _policy(1, group_lr={"lora": 1e-4})


def test_lora_merge_keeps_the_function() -> None:
    torch.manual_seed(0)
    model = LlavaSTForCausalLM(tiny_config()).eval()
    add_lora(model, LoraSpec(r=4, alpha=8, dropout=0.0, target_modules=CONTRACT.lora_target_modules(model)))
    _perturb(model, {"lora"}, seed=1)
    batch = make_batch(model.config, [{"prompt": [10, 11, 12], "answer": [20, 21]}])
    with torch.no_grad():
        before = model(**batch).loss
        merge_lora(model)
        after = model(**batch).loss
    assert not has_lora(model)
    assert torch.allclose(before, after, atol=1e-5)


def test_stage_chain_carries_stp_merges_lora_and_freezes_the_rest(tiny_checkpoint: Path, tmp_path: Path) -> None:
    s1 = build_stage_model("llava_st", tiny_checkpoint, {}, _policy(1), LORA, parent=None, seed=0)
    assert _trainable_groups(s1.model) == {"stp"} and s1.model.config.lape_enabled is False
    assert s1.lora_spec is None and not has_lora(s1.model)
    _perturb(s1.model, {"stp"}, seed=2)
    a1 = _stage_artifact(s1, tmp_path / "a1")
    assert set(a1.manifest["groups"]) == {"stp", "lape"} and a1.lora is None

    s2 = build_stage_model("llava_st", tiny_checkpoint, {}, _policy(2), LORA, parent=a1, seed=1)
    assert _trainable_groups(s2.model) == {"lora", "stp", "lape"} and s2.model.config.lape_enabled is True
    for name, value in a1.weights.items():  # carried over, not re-initialised (release bug 2)
        assert torch.equal(dict(s2.model.named_parameters())[name], value), name
    lora_b = [p for n, p in s2.model.named_parameters() if ".lora_B." in n]
    assert lora_b and all(torch.count_nonzero(p) == 0 for p in lora_b)
    _perturb(s2.model, {"lora", "stp", "lape"}, seed=3)
    a2 = _stage_artifact(s2, tmp_path / "a2")
    assert a2.lora_spec == s2.lora_spec and a2.lora is not None and all(t.numel() for t in a2.lora.values())

    s3 = build_stage_model("llava_st", tiny_checkpoint, {}, _policy(3), LORA, parent=a2, seed=2)
    assert len(s3.merged) == 1 and s3.merged[0].spec == a2.lora_spec
    assert _trainable_groups(s3.model) == {"lora", "stp", "lape"}
    assert all(torch.count_nonzero(p) == 0 for n, p in s3.model.named_parameters() if ".lora_B." in n)
    # The stage-2 adapter is inside the LLM weights now: W = W0 + (alpha / r) B A.
    base = model_zoo.build("llava_st", str(tiny_checkpoint))
    q = "language_model.model.layers.0.self_attn.q_proj"
    a, b = a2.lora[f"{q}.lora_A.default.weight"], a2.lora[f"{q}.lora_B.default.weight"]
    expected = base.get_parameter(f"{q}.weight") + (LORA.alpha / LORA.r) * b @ a
    assert torch.allclose(s3.model.get_parameter(f"{q}.base_layer.weight"), expected, atol=1e-6)

    # A stage-3 artifact rebuilds the same model from the base alone (no DeepSpeed, no parents needed).
    _perturb(s3.model, {"lora"}, seed=4)
    a3 = _stage_artifact(s3, tmp_path / "a3")
    rebuilt = build_stage_model("llava_st", tiny_checkpoint, {}, _policy(3, merge_parent_lora=False), LORA,
                                parent=a3, seed=9)
    want, got = s3.model.state_dict(), rebuilt.model.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.allclose(want[k], got[k], atol=1e-6) for k in want)


def test_artifact_refuses_empty_tensors_and_foreign_configs(tiny_checkpoint: Path, tmp_path: Path) -> None:
    s1 = build_stage_model("llava_st", tiny_checkpoint, {}, _policy(1), LORA, parent=None, seed=0)
    artifact = export_artifact(s1, s1.model, zero3=False, manifest={"stage": 1})
    name = next(iter(artifact.weights))
    artifact.weights[name] = torch.empty(0)
    with pytest.raises(TrainError, match="empty tensors"):
        write_artifact(tmp_path / "bad", artifact, None)
    good = _stage_artifact(s1, tmp_path / "good")
    with pytest.raises(TrainError, match="differing keys: .*num_frames"):
        build_stage_model("llava_st", tiny_checkpoint, {"num_frames": 2, "sigma": 1}, _policy(2), LORA,
                          parent=good, seed=0)
    with pytest.raises(TrainError, match="not a stage artifact"):
        read_artifact(tmp_path / "nothing")
