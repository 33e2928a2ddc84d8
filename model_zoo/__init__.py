"""Model definitions for the platform, by name. No Ray, no MLflow, no I/O policy: torch + transformers only.

The platform reaches a model only through `spec(name)` (or `spec_of(config)`), an instance of the model
contract `model_zoo.contract.ModelContract`: building, tokenizer, parameter groups, stage policy, batch
contract, artifact weights. A second model (e.g. SpaceVLLM) plugs in by implementing that contract and
registering it here, without touching the platform.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from .contract import ModelConfig, ModelContract


def _llava_st() -> ModelContract:
    from .llava_st.spec import LlavaSTSpec

    return LlavaSTSpec()


_REGISTRY: dict[str, Callable[[], ModelContract]] = {"llava_st": _llava_st}


def names() -> list[str]:
    return sorted(_REGISTRY)


@functools.cache
def spec(name: str) -> ModelContract:
    """The contract of model `name` (the name jobs give in `model.name`)."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; registered models: {names()}")
    contract = _REGISTRY[name]()
    if not isinstance(contract, ModelContract) or contract.name != name:
        raise TypeError(f"model {name!r} is registered with {contract!r}, not a ModelContract named {name!r}")
    return contract


def spec_of(config: ModelConfig) -> ModelContract:
    """The contract of the model a config belongs to (its `model_type` is the registered name)."""
    return spec(config.model_type)


def build(name: str, source: ModelConfig | str | Path, **overrides: Any) -> nn.Module:
    """Build model `name` from a config object (random init) or a checkpoint path (pretrained)."""
    return spec(name).build(source, **overrides)
