"""LLaVA-ST (CVPR 2025): LLaVA-OneVision + Language-Aligned Positional Embedding + Spatial-Temporal Packer."""

from .config import LlavaSTConfig, LlavaSTConfigError
from .convert import convert_release_state_dict
from .lape import LAPE
from .loading import from_llava_onevision, from_release_state_dict, load_model, load_tokenizer
from .modeling import LlavaSTForCausalLM
from .stp import SpatialTemporalPacker
from .tiny import build_tiny_checkpoint, build_tiny_tokenizer, tiny_config
from .vocab import CoordinateVocab

__all__ = [
    "LAPE",
    "CoordinateVocab",
    "LlavaSTConfig",
    "LlavaSTConfigError",
    "LlavaSTForCausalLM",
    "SpatialTemporalPacker",
    "build_tiny_checkpoint",
    "build_tiny_tokenizer",
    "convert_release_state_dict",
    "from_llava_onevision",
    "from_release_state_dict",
    "load_model",
    "load_tokenizer",
    "tiny_config",
]
