"""The one way to load a stage's model: base checkpoint -> an artifact's weights and adapters (`load_model`).
A stage then merges/adds LoRA and freezes per its policy (`build_stage_model`); evaluation merges the adapter
and freezes everything (`load_for_inference`); a config alone, without weights, is `load_config`.

Also the way back out: `export_artifact` gathers what the stage carries (under ZeRO-3 on every rank,
since each holds only a shard) into a `StageArtifact`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import model_zoo
from llavast.config.stage import LoraSection
from llavast.train.artifact import MergedLora, StageArtifact, apply_artifact, config_dict
from llavast.train.lora import LoraSpec, add_lora, has_lora, lora_state, merge_lora
from llavast.train.policy import StagePolicy
from model_zoo.contract import ModelContract

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")  # what a config-only download leaves out
# Config fields a stage sets when it runs (not part of the artifact's shape check) that inference restores.
RUN_TIME_FIELDS = ("lape_enabled",)


def load_model(model_name: str, base_dir: Path, overrides: dict[str, Any], artifact: StageArtifact | None,
               seed: int) -> tuple[nn.Module, Any]:
    """(model, tokenizer) as a stage or version left it: the base built with `overrides`, seeded (what the base
    lacks, a new STP or LAPE, starts the same on every rank, actor and run), the artifact applied."""
    contract = model_zoo.spec(model_name)
    torch.manual_seed(seed)
    model = contract.build(str(base_dir), **overrides)
    tokenizer = contract.load_tokenizer(str(base_dir), model.config)
    if artifact is not None:
        apply_artifact(model, artifact, contract)
    return model, tokenizer


def load_for_inference(model_name: str, base_dir: Path, overrides: dict[str, Any], artifact: StageArtifact | None,
                       device: torch.device) -> tuple[nn.Module, Any]:
    """The model a version holds, ready to answer: its artifact applied (the active LoRA merged in for speed),
    the stage's run-time settings (LAPE on or off) restored, every parameter frozen, eval mode."""
    if artifact is not None:
        overrides = {**overrides, **{k: artifact.config[k] for k in RUN_TIME_FIELDS if k in artifact.config}}
    model, tokenizer = load_model(model_name, base_dir, overrides, artifact, seed=0)
    if has_lora(model):
        merge_lora(model)
    model.requires_grad_(False)
    return model.to(device).eval(), tokenizer


def load_config(model_name: str, base_dir: Path, overrides: dict[str, Any]) -> tuple[Any, Any]:
    """(model config, tokenizer) without any weights: what a driver needs to tokenise and plan."""
    contract = model_zoo.spec(model_name)
    config = contract.load_config(str(base_dir), **overrides)
    return config, contract.load_tokenizer(str(base_dir), config)


@dataclass
class StageModel:
    """A model prepared for one stage, with what its artifact will need to record."""

    model: nn.Module
    tokenizer: Any
    contract: ModelContract  # the model's side: parameter groups, apply_stage, weights export/import, ...
    policy: StagePolicy
    lora_spec: LoraSpec | None = None
    merged: list[MergedLora] = field(default_factory=list)
    carried_groups: frozenset[str] = frozenset()


def build_stage_model(model_name: str, base_dir: Path, overrides: dict[str, Any], policy: StagePolicy,
                      lora: LoraSection, parent: StageArtifact | None, seed: int) -> StageModel:
    """Build the base, apply the parent artifact, merge/add LoRA as the policy says, freeze the rest.

    Seeded, so every rank builds bit-identical freshly-initialised modules (LoRA A, a new STP).
    """
    contract = model_zoo.spec(model_name)
    model, tokenizer = load_model(model_name, base_dir, overrides, parent, seed)
    merged: list[MergedLora] = []
    lora_spec: LoraSpec | None = None
    carried = set(contract.carried_groups) | (policy.trainable - {"lora"})
    if parent is not None:
        merged, lora_spec = list(parent.merged), parent.lora_spec
        carried |= set(parent.manifest.get("groups", []))
    if policy.merge_parent_lora and lora_spec is not None:
        merged.append(MergedLora(lora_spec, lora_state(model)))
        merge_lora(model)
        lora_spec = None
    if policy.trains_lora and lora_spec is None:
        lora_spec = LoraSpec(r=lora.r, alpha=lora.alpha, dropout=lora.dropout,
                             target_modules=contract.lora_target_modules(model))
        add_lora(model, lora_spec)
    contract.apply_stage(model, policy.trainable, policy.lape)
    return StageModel(model=model, tokenizer=tokenizer, contract=contract, policy=policy, lora_spec=lora_spec,
                      merged=merged, carried_groups=frozenset(carried))


@contextlib.contextmanager
def gathered(params: list[nn.Parameter], zero3: bool) -> Iterator[None]:
    """Full parameter values inside the block; under ZeRO-3 every rank must enter it (a collective)."""
    if not zero3:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        yield


def snapshot(model: nn.Module, contract: ModelContract, groups: frozenset[str] | set[str],
             zero3: bool) -> dict[str, Tensor]:
    """CPU copies of the named groups' parameters, gathered first under ZeRO-3 (call on every rank)."""
    params = [p for g in groups for _, p in contract.parameter_groups(model)[g]]
    with gathered(params, zero3):
        return contract.export_weights(model, groups)


def export_artifact(stage_model: StageModel, model: nn.Module, zero3: bool,
                    manifest: dict[str, Any]) -> StageArtifact:
    """The stage artifact of `model` (the engine's module): carried groups, the active LoRA, the merged
    LoRAs. Collective under ZeRO-3: call it on every rank."""
    groups = set(stage_model.carried_groups)
    weights = snapshot(model, stage_model.contract, groups, zero3)
    lora = snapshot(model, stage_model.contract, {"lora"}, zero3) if stage_model.lora_spec else None
    return StageArtifact(
        manifest=dict(manifest, groups=sorted(groups)), weights=weights, lora=lora,
        lora_spec=stage_model.lora_spec, merged=stage_model.merged, config=config_dict(model.config))
