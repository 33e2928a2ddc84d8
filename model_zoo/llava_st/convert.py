"""Rename a released LLaVA-ST checkpoint (the authors' LLaVA-NeXT fork) into `LlavaSTForCausalLM` names.

The release stores one flat state dict in LLaVA-NeXT's layout; this project's model nests the same
tensors differently. The conversion is a pure renaming: no tensor is reshaped, and the LAPE output
tables load directly because the release's ``Linear(D, M, bias=False)`` weight is already (M, D).

| released key                                                 | this project's key                  |
|--------------------------------------------------------------|-------------------------------------|
| ``model.vision_tower.vision_tower.vision_model.X``           | ``vision_tower.X`` (1)              |
| ``model.mm_projector.{0,2}.X``                               | ``mm_projector.{0,2}.X``            |
| ``model.vision_resampler.token_packer.devide_attention.X``   | ``stp.step1.X``                     |
| ``model.vision_resampler.token_packer_fast.devide_attention.X`` | ``stp.spatial.X`` (F_s)          |
| ``model.vision_resampler.token_packer_slow.devide_attention.X`` | ``stp.temporal.X`` (F_t)         |
| ``model.temporal_input_embeddings.weight``                   | ``lape.temporal_input``             |
| ``model.temporal_output_embeddings.weight``                  | ``lape.temporal_output``            |
| ``model.spatial_height_input_embeddings.weight``             | ``lape.height_input``               |
| ``model.spatial_height_output_embeddings.weight``            | ``lape.height_output``              |
| ``model.spatial_width_input_embeddings.weight``              | ``lape.width_input``                |
| ``model.spatial_width_output_embeddings.weight``             | ``lape.width_output``               |
| ``model.embed_tokens.X``, ``model.layers.X``, ``model.norm.X`` | ``language_model.model.<same>``   |
| ``lm_head.weight``                                           | ``language_model.lm_head.weight``   |

(1) transformers >= 5's ``SiglipVisionModel`` holds ``embeddings``/``encoder``/``post_layernorm`` directly,
without the ``vision_model`` level of transformers 4 and of the release.

Dropped, because the model never uses them (see REFERENCE.md and the release's code):
- ``model.image_newline``: the anyres row separator; this project has no anyres.
- ``model.vision_tower.vision_tower.vision_model.head.*``: SigLIP's pooling head (the release replaces it
  with Identity; features come from a hidden layer, not the pooled output).
- any key containing ``reparam_mat``: the NTP matrices R[i, j] = 2^-|i-j|, a function of the table size
  that `LAPE` rebuilds itself.
Any other key raises `ReleaseCheckpointError` naming it, so a checkpoint of another layout (for example
one with unmerged LoRA adapters) fails loudly instead of loading half its weights.

Note: the release deletes SigLIP's last encoder layer before saving, so its tower has one layer fewer than
a 27-layer SigLIP config; load the converted dict into a model whose vision config matches the checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from torch import Tensor

logger = logging.getLogger(__name__)

_TOWER = "model.vision_tower.vision_tower.vision_model."
_RESAMPLER = "model.vision_resampler."

# Longest-first is not needed: no prefix below is a prefix of another.
PREFIX_RENAMES: tuple[tuple[str, str], ...] = (
    (_TOWER, "vision_tower."),
    ("model.mm_projector.0.", "mm_projector.0."),
    ("model.mm_projector.2.", "mm_projector.2."),
    (_RESAMPLER + "token_packer.devide_attention.", "stp.step1."),
    (_RESAMPLER + "token_packer_fast.devide_attention.", "stp.spatial."),
    (_RESAMPLER + "token_packer_slow.devide_attention.", "stp.temporal."),
    ("model.embed_tokens.", "language_model.model.embed_tokens."),
    ("model.layers.", "language_model.model.layers."),
    ("model.norm.", "language_model.model.norm."),
    ("lm_head.", "language_model.lm_head."),
)

EXACT_RENAMES: dict[str, str] = {
    "model.temporal_input_embeddings.weight": "lape.temporal_input",
    "model.temporal_output_embeddings.weight": "lape.temporal_output",
    "model.spatial_height_input_embeddings.weight": "lape.height_input",
    "model.spatial_height_output_embeddings.weight": "lape.height_output",
    "model.spatial_width_input_embeddings.weight": "lape.width_input",
    "model.spatial_width_output_embeddings.weight": "lape.width_output",
}


class ReleaseCheckpointError(ValueError):
    """A released-checkpoint key that the converter does not know how to place."""


def is_dropped_release_key(key: str) -> bool:
    """Released keys the model has no use for (listed in the module docstring)."""
    return key == "model.image_newline" or key.startswith(_TOWER + "head.") or "reparam_mat" in key


def release_key_to_ours(key: str) -> str:
    """Our name of one released key; raises `ReleaseCheckpointError` for a key it cannot place."""
    if key in EXACT_RENAMES:
        return EXACT_RENAMES[key]
    for old, new in PREFIX_RENAMES:
        if key.startswith(old):
            return new + key[len(old):]
    raise ReleaseCheckpointError(
        f"unknown key {key!r} in the released LLaVA-ST checkpoint: it is neither mapped nor a known unused key "
        "(see model_zoo/llava_st/convert.py for the table). If it belongs to a PEFT/LoRA adapter, merge the "
        "adapter into the weights first; otherwise check that the checkpoint is a LLaVA-ST release.")


def convert_release_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Return the released ``state_dict`` under this project's names (same tensors, no copies)."""
    converted: dict[str, Tensor] = {}
    dropped: list[str] = []
    for key, tensor in state_dict.items():
        if is_dropped_release_key(key):
            dropped.append(key)
            continue
        converted[release_key_to_ours(key)] = tensor
    if dropped:
        logger.info("dropped %d unused released keys: %s", len(dropped), ", ".join(sorted(dropped)))
    return converted
