"""Loading LLaVA-ST from pretrained weights on a path (nothing is downloaded).

(a) A Hugging Face LLaVA-OneVision checkpoint directory (the llava-hf layout that
    `LlavaOnevisionForConditionalGeneration.save_pretrained` writes) plus its tokenizer: the SigLIP tower,
    projector and Qwen2 come from the checkpoint; LAPE and STP are new and freshly initialised.
(b) A LLaVA-ST checkpoint saved by this project (`LlavaSTForCausalLM.save_pretrained`): `from_pretrained`.
(c) Released LLaVA-ST weights (a state dict in the authors' names): `from_release_state_dict`, which renames them
    with `convert.convert_release_state_dict` and switches the model to released-weight inference.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import AutoTokenizer, LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

from .config import LlavaSTConfig
from .convert import convert_release_state_dict, release_inference_fields
from .lape import LAPE
from .modeling import LlavaSTForCausalLM
from .stp import SpatialTemporalPacker
from .vocab import add_coordinate_tokens

DEFAULTS_FILE = "llava_st_defaults.json"


def checkpoint_kind(path: str | Path) -> str:
    """"llava_onevision" or "llava_st", from the directory's config.json."""
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{path}: no config.json; expected a llava-hf LLaVA-OneVision or LLaVA-ST checkpoint")
    model_type = json.loads(config_file.read_text()).get("model_type")
    if model_type not in ("llava_onevision", "llava_st"):
        raise ValueError(f"{config_file}: model_type {model_type!r} is neither 'llava_onevision' nor 'llava_st'")
    return model_type


def checkpoint_defaults(path: str | Path) -> dict[str, Any]:
    """LLaVA-ST fields a OneVision checkpoint directory suggests (`llava_st_defaults.json`), else none.

    The tiny preset writes one, so its checkpoint loads as the tiny LLaVA-ST shape (N=4, ...) by path alone.
    """
    file = Path(path) / DEFAULTS_FILE
    return json.loads(file.read_text()) if file.is_file() else {}


def from_llava_onevision(path: str | Path, dtype: torch.dtype = torch.float32,
                         **overrides: Any) -> LlavaSTForCausalLM:
    """Build LLaVA-ST on a llava-hf LLaVA-OneVision checkpoint; `overrides` set LlavaSTConfig fields (N, k1...).

    Field values: the paper's defaults < the checkpoint's `llava_st_defaults.json` < `overrides`.
    The pretrained modules are adopted, not copied: the LLaVA-ST shell is built on the meta device, so a
    7B checkpoint is held in memory once.
    """
    config = onevision_config(path, **overrides)
    ov = LlavaOnevisionForConditionalGeneration.from_pretrained(path, dtype=dtype)
    with torch.device("meta"):
        model = LlavaSTForCausalLM(config)
    model.vision_tower = ov.model.vision_tower
    model.mm_projector[0] = ov.model.multi_modal_projector.linear_1
    model.mm_projector[2] = ov.model.multi_modal_projector.linear_2
    model.language_model.model = ov.model.language_model
    model.language_model.lm_head = ov.lm_head
    model.lape = LAPE(config).to(dtype)
    model.stp = SpatialTemporalPacker(config).to(dtype)
    model.config.dtype = dtype
    meta = [name for name, p in model.named_parameters() if p.is_meta]
    if meta:
        raise RuntimeError(f"parameters left uninitialised after loading {path}: {meta[:5]}")
    return model.eval()


def onevision_config(path: str | Path, **overrides: Any) -> LlavaSTConfig:
    """The LLaVA-ST config on a OneVision checkpoint: its tower and LLM, the paper's defaults < the checkpoint's
    `llava_st_defaults.json` < `overrides`."""
    overrides = {**checkpoint_defaults(path), **overrides}
    ov_config = LlavaOnevisionConfig.from_pretrained(path)
    return LlavaSTConfig(
        vision_config=ov_config.vision_config.to_dict(), text_config=ov_config.text_config.to_dict(),
        vision_feature_layer=ov_config.vision_feature_layer, image_token_id=ov_config.image_token_index,
        video_token_id=ov_config.video_token_index, **overrides,
    ).validate()


def load_config(path: str | Path, **overrides: Any) -> LlavaSTConfig:
    """The config `load_model(path, **overrides)` builds, without reading any weights (config.json only)."""
    if checkpoint_kind(path) == "llava_onevision":
        return onevision_config(path, **overrides)
    if overrides:
        raise ValueError(f"{path} is a LLaVA-ST checkpoint: its shapes are fixed, overrides {sorted(overrides)} "
                         "cannot apply")
    return LlavaSTConfig.from_pretrained(path).validate()


def load_model(path: str | Path, dtype: torch.dtype = torch.float32, **overrides: Any) -> LlavaSTForCausalLM:
    """Path (a) or (b), chosen by the checkpoint's model_type."""
    if checkpoint_kind(path) == "llava_onevision":
        return from_llava_onevision(path, dtype=dtype, **overrides)
    if overrides:
        raise ValueError(f"{path} is a LLaVA-ST checkpoint: its shapes are fixed, overrides {sorted(overrides)} "
                         "cannot apply")
    return LlavaSTForCausalLM.from_pretrained(path, dtype=dtype).eval()


def from_release_state_dict(state_dict: Mapping[str, Tensor], config: LlavaSTConfig,
                            base_tokenizer_length: int | None = None) -> LlavaSTForCausalLM:
    """The authors' released weights, loaded strictly, in faithful released-weight inference mode.

    `config` gives the checkpoint's shapes (a 26-layer tower with `vision_feature_layer=-1`, V = the released
    embedding's rows, ...); a copy of it gets ``video_fast_tokens="release_text"`` and the `<vid_start>`/
    `<vid_patch>`/`<vid_end>` rows from `convert.release_inference_fields` (L = rows - 14 unless
    `base_tokenizer_length` is given), so each video's first k2^2 N positions hold those text embeddings, as the
    released LLM saw them (REFERENCE bug 1), not F_s. For inference only: training refuses this mode.
    The model is built at full size before the weights load (twice the memory of the weights, briefly).
    """
    fields = release_inference_fields(state_dict, base_tokenizer_length)
    converted = convert_release_state_dict(state_dict)
    rows = converted["language_model.model.embed_tokens.weight"].shape[0]
    if rows != config.text_vocab_size:
        raise ValueError(f"the released embedding has {rows} rows but config.text_config.vocab_size is "
                         f"{config.text_vocab_size}: build the config with the checkpoint's vocab size")
    config = LlavaSTConfig.from_dict({**config.to_dict(), **fields}).validate()
    model = LlavaSTForCausalLM(config)
    model.load_state_dict(converted, strict=True)
    return model.eval()


def load_tokenizer(path: str | Path, config: LlavaSTConfig) -> Any:
    """The checkpoint's tokenizer with the coordinate tokens and placeholders added at ids >= V."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    add_coordinate_tokens(tokenizer, config)
    return tokenizer
