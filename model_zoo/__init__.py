"""Model definitions for the platform, by name. No Ray, no MLflow, no I/O policy: torch + transformers only.

The platform reaches a model only through `spec(name)` (or `spec_of(config)`), an instance of the model
contract `model_zoo.contract.ModelContract`: building, tokenizer, parameter groups, stage policy, batch
contract, artifact weights. A second model (e.g. SpaceVLLM) plugs in by implementing that contract and
registering it here, without touching the platform.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .settings import ModelSettings

if TYPE_CHECKING:  # the registry itself imports no torch: `settings(name)` stays light
    from torch import nn

    from .contract import ModelConfig, ModelContract

# name -> its package: `<package>.spec` holds the contract class `SPEC`, `<package>.settings` the `SETTINGS`
_REGISTRY: dict[str, str] = {"llava_st": "model_zoo.llava_st"}


def names() -> list[str]:
    return sorted(_REGISTRY)


@functools.cache
def spec(name: str) -> ModelContract:
    """The contract of model `name` (the name jobs give in `model.name`)."""
    from .contract import ModelContract

    contract = importlib.import_module(f"{_package(name)}.spec").SPEC()
    if not isinstance(contract, ModelContract) or contract.name != name:
        raise TypeError(f"model {name!r} is registered with {contract!r}, not a ModelContract named {name!r}")
    return contract


@functools.cache
def settings(name: str) -> ModelSettings:
    """What a job may set in model `name`'s `model.overrides`, read without importing the model (no torch)."""
    found = importlib.import_module(f"{_package(name)}.settings").SETTINGS
    if not isinstance(found, ModelSettings) or found.model != name:
        raise TypeError(f"model {name!r} declares {found!r}, not the ModelSettings of {name!r}")
    return found


def _package(name: str) -> str:
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; registered models: {names()}")
    return _REGISTRY[name]


def spec_of(config: ModelConfig) -> ModelContract:
    """The contract of the model a config belongs to (its `model_type` is the registered name)."""
    return spec(config.model_type)


def build(name: str, source: ModelConfig | str | Path, **overrides: Any) -> nn.Module:
    """Build model `name` from a config object (random init) or a checkpoint path (pretrained)."""
    return spec(name).build(source, **overrides)
