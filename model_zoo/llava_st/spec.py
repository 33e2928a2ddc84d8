"""LLaVA-ST's side of the model contract (`model_zoo.contract`): what `model_zoo.spec("llava_st")` returns."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ..contract import ModelConfig, ModelContract
from ..settings import ModelSettings
from . import policy
from .config import LlavaSTConfig
from .loading import load_config, load_model, load_tokenizer
from .modeling import LlavaSTForCausalLM
from .settings import SETTINGS
from .tiny import build_tiny_checkpoint
from .vocab import CoordinateVocab


class LlavaSTSpec(ModelContract):
    name = "llava_st"

    @property
    def settings(self) -> ModelSettings:
        return SETTINGS

    def build(self, source: ModelConfig | str | Path, **overrides: Any) -> nn.Module:
        if isinstance(source, LlavaSTConfig):
            if overrides:
                raise ValueError("pass overrides inside the LlavaSTConfig when building from a config")
            return LlavaSTForCausalLM(source)
        if isinstance(source, (str, Path)):
            return load_model(source, **overrides)
        raise TypeError(f"llava_st builds from a LlavaSTConfig or a checkpoint path, not {type(source).__name__}")

    def load_config(self, path: str | Path, **overrides: Any) -> ModelConfig:
        return load_config(path, **overrides)

    def load_tokenizer(self, path: str | Path, config: ModelConfig) -> Any:
        return load_tokenizer(path, config)

    def write_demo_checkpoint(self, path: str | Path) -> Path:
        return build_tiny_checkpoint(path)

    @property
    def groups(self) -> tuple[str, ...]:
        return policy.GROUPS

    @property
    def carried_groups(self) -> frozenset[str]:
        return policy.CARRIED_GROUPS

    def group_of(self, parameter_name: str) -> str:
        return policy.group_of(parameter_name)

    def stage_trainable(self, stage: int) -> frozenset[str]:
        if stage not in policy.STAGE_TRAINABLE:
            raise ValueError(f"LLaVA-ST has stages {sorted(policy.STAGE_TRAINABLE)}, not {stage}")
        return policy.STAGE_TRAINABLE[stage]

    def lape_enabled_for_stage(self, stage: int) -> bool:
        return policy.lape_enabled_for_stage(stage)

    def apply_stage(self, model: nn.Module, trainable: frozenset[str] | set[str], lape_enabled: bool) -> None:
        policy.apply_stage(model, trainable, lape_enabled)

    def lora_target_modules(self, model: nn.Module) -> str:
        return policy.lora_target_modules(model)

    def placeholder_ids(self, config: ModelConfig) -> dict[str, int]:
        return dict(CoordinateVocab(config).placeholder_ids)

    def export_weights(self, model: nn.Module, groups: frozenset[str] | set[str]) -> dict[str, Tensor]:
        return policy.trainable_state_dict(model, groups)

    def import_weights(self, model: nn.Module, tensors: Mapping[str, Tensor]) -> None:
        policy.load_trainable_state_dict(model, tensors)


SPEC = LlavaSTSpec  # what the registry (`model_zoo.spec("llava_st")`) instantiates
