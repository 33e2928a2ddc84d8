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

Released-weight inference (`loading.from_release_state_dict`): the released LLM never saw F_s (the release's
bug 1) but the text embeddings of the tokens its prompt held there. The release added 14 tokens after the base
Qwen2 tokenizer (length L), in this order: ``RELEASE_ADDED_TOKENS``. So `<vid_start>`, `<vid_patch>` and
`<vid_end>` are rows L+3, L+5 and L+4 of its embedding, which has L + 14 rows (151,646 + 14 = 151,660 for the
7B); `release_video_token_ids` computes them and the loader puts them into the config with
``video_fast_tokens="release_text"``.

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


# The tokens the release appends to the base tokenizer, in order (its ids L, L+1, ...); the coordinate tokens follow.
RELEASE_ADDED_TOKENS: tuple[str, ...] = (
    "<im_start>", "<im_end>", "<im_patch>", "<vid_start>", "<vid_end>", "<vid_patch>", "<slow_vid_start>",
    "<slow_vid_end>", "<TEMP-INPUT>", "<TEMP-OUTPUT>", "<HEIGHT-INPUT>", "<HEIGHT-OUTPUT>", "<WIDTH-INPUT>",
    "<WIDTH-OUTPUT>",
)
RELEASED_EMBED_KEY = "model.embed_tokens.weight"


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


def release_video_token_ids(base_tokenizer_length: int) -> dict[str, int]:
    """The config fields of `<vid_start>`/`<vid_patch>`/`<vid_end>`: rows L+3, L+5, L+4 (module docstring)."""
    row = {name: base_tokenizer_length + i for i, name in enumerate(RELEASE_ADDED_TOKENS)}
    return {"vid_start_token_id": row["<vid_start>"], "vid_patch_token_id": row["<vid_patch>"],
            "vid_end_token_id": row["<vid_end>"]}


def release_inference_fields(state_dict: Mapping[str, Tensor],
                             base_tokenizer_length: int | None = None) -> dict[str, object]:
    """`LlavaSTConfig` fields for faithful inference with this released ``state_dict`` (released names).

    ``video_fast_tokens="release_text"`` and the three row ids. L, the base tokenizer's length, defaults to the
    embedding's rows minus the release's 14 added tokens; pass it when the checkpoint's tokenizer says otherwise
    (for example an embedding padded beyond the tokenizer).
    """
    if RELEASED_EMBED_KEY not in state_dict:
        raise ReleaseCheckpointError(f"no {RELEASED_EMBED_KEY!r} in the released state dict: cannot place the "
                                     "<vid_start>/<vid_patch>/<vid_end> rows")
    rows = state_dict[RELEASED_EMBED_KEY].shape[0]
    if base_tokenizer_length is None:
        base_tokenizer_length = rows - len(RELEASE_ADDED_TOKENS)
    if not 0 <= base_tokenizer_length <= rows - len(RELEASE_ADDED_TOKENS):
        raise ReleaseCheckpointError(
            f"base tokenizer length {base_tokenizer_length} does not fit the released embedding of {rows} rows "
            f"(the release adds {len(RELEASE_ADDED_TOKENS)} tokens after it)")
    return {"video_fast_tokens": "release_text", **release_video_token_ids(base_tokenizer_length)}
