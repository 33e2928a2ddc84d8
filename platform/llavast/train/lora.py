"""LoRA on the LLM with peft, injected in place so the model keeps its class and parameter names.

In-place injection (rather than a PeftModel wrapper) keeps `policy.parameter_groups` and the batch
contract unchanged: adapter weights are `...q_proj.lora_A.default.weight` (group "lora"), the frozen
base weight moves to `...q_proj.base_layer.weight` (group "llm"), and merging puts the plain Linear back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import Tensor, nn

ADAPTER = "default"


@dataclass(frozen=True)
class LoraSpec:
    """What is needed to rebuild an adapter: rank, scale, dropout and the target-module regex."""

    r: int
    alpha: float
    dropout: float
    target_modules: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, object]) -> LoraSpec:
        return cls(r=int(raw["r"]), alpha=float(raw["alpha"]), dropout=float(raw["dropout"]),  # type: ignore[arg-type]
                   target_modules=str(raw["target_modules"]))


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, BaseTunerLayer) for m in model.modules())


def add_lora(model: nn.Module, spec: LoraSpec) -> None:
    """Inject a fresh adapter (A random, B zero: the model's output is unchanged until it trains)."""
    if has_lora(model):
        raise ValueError("the model already has a LoRA adapter; merge it first")
    config = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                        target_modules=spec.target_modules)
    inject_adapter_in_model(config, model, adapter_name=ADAPTER)


def lora_state(model: nn.Module) -> dict[str, Tensor]:
    """The adapter weights, by parameter name (detached, CPU)."""
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters() if ".lora_" in name}


def load_lora_state(model: nn.Module, tensors: dict[str, Tensor]) -> None:
    """Copy saved adapter weights in; the adapter's parameter names must match exactly."""
    params = {name: p for name, p in model.named_parameters() if ".lora_" in name}
    missing, unexpected = sorted(set(params) - set(tensors)), sorted(set(tensors) - set(params))
    if missing or unexpected:
        raise ValueError(f"LoRA weights do not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    with torch.no_grad():
        for name, param in params.items():
            if param.shape != tensors[name].shape:
                raise ValueError(f"LoRA weight {name}: saved shape {tuple(tensors[name].shape)}, "
                                 f"model {tuple(param.shape)}")
            param.copy_(tensors[name])


def merge_lora(model: nn.Module) -> None:
    """Fold the adapter into the base weights (W += scale * B A) and put the plain Linears back."""
    tuned = [(name, m) for name, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
    if not tuned:
        raise ValueError("the model has no LoRA adapter to merge")
    for name, module in tuned:
        module.merge(safe_merge=True)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, module.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config
