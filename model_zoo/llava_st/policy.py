"""Stage-policy hooks the platform calls: which parameter groups exist and which train in each stage.

Groups: vision (SigLIP), projector, llm (Qwen2's decoder, final norm and lm_head, incl. LoRA base
weights), embed_tokens (Qwen2's text input embedding), lora (adapter weights), stp, lape (the six tables).
Default trainable groups per stage (the paper):
    stage 1 content alignment   : stp                (LAPE off: rho_hat = 0)
    stage 2 coordinate alignment: lora + stp + lape
    stage 3 multi-task tuning   : lora + stp + lape  (stage-2 LoRA merged into the LLM, a new LoRA added)
The authors' release also trains embed_tokens in stages 2 and 3 (at 2e-5): `train.trainable` adds it.
The platform reaches these through `model_zoo.spec("llava_st")` (`spec.py`, the model contract).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor, nn

GROUPS = ("vision", "projector", "llm", "embed_tokens", "lora", "stp", "lape")
STAGE_TRAINABLE: dict[int, frozenset[str]] = {
    1: frozenset({"stp"}),
    2: frozenset({"lora", "stp", "lape"}),
    3: frozenset({"lora", "stp", "lape"}),
}
# Groups absent from a LLaVA-OneVision base checkpoint: an artifact always carries them, so the next
# stage continues from exactly these values (the release re-initialised STP every stage: bug 2).
CARRIED_GROUPS = frozenset({"stp", "lape"})
_WRAPPERS = re.compile(r"^(module\.|base_model\.model\.|_orig_mod\.)+")
_EMBED_TOKENS = "language_model.model.embed_tokens."
_PREFIX_GROUP = {"vision_tower": "vision", "mm_projector": "projector", "language_model": "llm", "stp": "stp",
                 "lape": "lape"}


def canonical_name(name: str) -> str:
    """A parameter name without DDP/DeepSpeed/peft wrapper prefixes."""
    return _WRAPPERS.sub("", name)


def group_of(name: str) -> str:
    name = canonical_name(name)
    if ".lora_" in name:
        return "lora"
    if name.startswith(_EMBED_TOKENS):
        return "embed_tokens"
    head = name.split(".", 1)[0]
    if head not in _PREFIX_GROUP:
        raise KeyError(f"parameter {name!r} belongs to no LLaVA-ST parameter group")
    return _PREFIX_GROUP[head]


def parameter_groups(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {g: [] for g in GROUPS}
    for name, param in model.named_parameters():
        groups[group_of(name)].append((name, param))
    return groups


def lape_enabled_for_stage(stage: int) -> bool:
    return stage != 1


def apply_stage(model: nn.Module, trainable: frozenset[str] | set[str], lape_enabled: bool) -> None:
    """Freeze everything but the `trainable` groups and switch LAPE injection on or off."""
    unknown = set(trainable) - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown parameter groups {sorted(unknown)}; groups are {GROUPS}")
    for group, params in parameter_groups(model).items():
        for _, param in params:
            param.requires_grad_(group in trainable)
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "lape_enabled"):
        raise TypeError("apply_stage expects a LlavaSTForCausalLM (possibly wrapped)")
    if getattr(config, "video_fast_tokens", "stp") != "stp":
        raise ValueError(
            f"video_fast_tokens={config.video_fast_tokens!r} is the released-weight inference mode (the release's "
            "F_s bug); training keeps both streams: set model.config.video_fast_tokens = 'stp' to train")
    config.lape_enabled = lape_enabled


def lora_target_modules(model: nn.Module) -> str:
    """A regex (peft full-match) naming every nn.Linear of the LLM's decoder, and nothing else.

    Derived from the module tree rather than hard-coded, so a different LLM width or depth works; the
    vision tower, projector, STP, LAPE tables and lm_head are never targets.
    """
    names = sorted({
        canonical_name(name).split(".")[-1]
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and ".lora_" not in name
        and canonical_name(name).startswith("language_model.model.layers.")
    })
    if not names:
        raise ValueError("the model has no Linear layers under language_model.model.layers")
    return rf"(.*\.)?language_model\.model\.layers\.\d+\.(.*\.)?({'|'.join(names)})"


def trainable_state_dict(model: nn.Module, groups: frozenset[str] | set[str]) -> dict[str, Tensor]:
    """The weights of `groups` under canonical names, detached on CPU: what a stage artifact stores."""
    return {
        canonical_name(name): param.detach().cpu().clone()
        for group in groups for name, param in parameter_groups(model)[group]
    }


def load_trainable_state_dict(model: nn.Module, tensors: Mapping[str, Tensor]) -> None:
    """Copy `trainable_state_dict` output into the model's parameters, matched by canonical name; every
    name must exist with the same shape (ValueError otherwise)."""
    params = {canonical_name(name): param for name, param in model.named_parameters()}
    unknown = sorted(set(tensors) - set(params))
    if unknown:
        raise ValueError(f"weights name parameters the model does not have: {unknown[:3]}")
    with torch.no_grad():
        for name, value in tensors.items():
            if params[name].shape != value.shape:
                raise ValueError(f"weight {name}: shape {tuple(value.shape)}, model {tuple(params[name].shape)}")
            params[name].copy_(value)
