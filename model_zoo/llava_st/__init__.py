"""LLaVA-ST (CVPR 2025): LLaVA-OneVision + Language-Aligned Positional Embedding + Spatial-Temporal Packer.

The names below load on first use, so `model_zoo.llava_st.settings` (what a job may override) is read without
importing torch or transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LAPE": ".lape",
    "CoordinateVocab": ".vocab",
    "LlavaSTConfig": ".config",
    "LlavaSTConfigError": ".config",
    "LlavaSTForCausalLM": ".modeling",
    "SpatialTemporalPacker": ".stp",
    "build_tiny_checkpoint": ".tiny",
    "build_tiny_tokenizer": ".tiny",
    "convert_release_state_dict": ".convert",
    "from_llava_onevision": ".loading",
    "from_release_state_dict": ".loading",
    "load_model": ".loading",
    "load_tokenizer": ".loading",
    "tiny_config": ".tiny",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
