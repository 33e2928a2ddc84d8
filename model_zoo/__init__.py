"""Model definitions for the platform, by name. No Ray, no MLflow, no I/O policy: torch + transformers only.

The platform asks `build(name, source)` for a model and `spec(name).policy` for its stage-policy hooks,
so a second model (e.g. SpaceVLLM) plugs in by registering a `ModelSpec`, without touching the train loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    build: Callable[..., nn.Module]  # (config object | checkpoint path, **overrides) -> model
    load_tokenizer: Callable[..., Any]  # (checkpoint path, model config) -> tokenizer
    policy: ModuleType  # parameter groups, STAGE_TRAINABLE, apply_stage, lora_target_modules, ...


def _llava_st() -> ModelSpec:
    from .llava_st import LlavaSTConfig, LlavaSTForCausalLM, load_model, load_tokenizer, policy

    def build(source: Any, **overrides: Any) -> nn.Module:
        if isinstance(source, LlavaSTConfig):
            if overrides:
                raise ValueError("pass overrides inside the LlavaSTConfig when building from a config")
            return LlavaSTForCausalLM(source)
        if isinstance(source, (str, Path)):
            return load_model(source, **overrides)
        raise TypeError(f"llava_st builds from a LlavaSTConfig or a checkpoint path, not {type(source).__name__}")

    return ModelSpec(build=build, load_tokenizer=load_tokenizer, policy=policy)


_REGISTRY: dict[str, Callable[[], ModelSpec]] = {"llava_st": _llava_st}


def names() -> list[str]:
    return sorted(_REGISTRY)


def spec(name: str) -> ModelSpec:
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; registered models: {names()}")
    return _REGISTRY[name]()


def build(name: str, source: Any, **overrides: Any) -> nn.Module:
    """Build model `name` from a config object (random init) or a checkpoint path (pretrained)."""
    return spec(name).build(source, **overrides)
