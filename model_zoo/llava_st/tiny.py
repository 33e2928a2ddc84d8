"""Tiny LLaVA-ST for tests and the demo: real architecture, toy sizes, built offline in seconds.

The SigLIP keeps the 27 x 27 patch grid (54 px frames, 2 px patches) so LAPE and STP see the real
geometry; widths and depths are toy-sized. The tokenizer is a byte-level BPE trained with `tokenizers`
on a small generated corpus, with Qwen2's special tokens and chat template. `build_tiny_checkpoint`
writes both in the llava-hf LLaVA-OneVision layout, so tests load them through the same path (a) as
real pretrained weights, plus `llava_st_defaults.json` so the path alone loads the tiny LLaVA-ST shape.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    PreTrainedTokenizerFast,
    Qwen2Config,
    SiglipVisionConfig,
)

from .config import LlavaSTConfig
from .loading import DEFAULTS_FILE

QWEN2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]
TINY_TEXT_VOCAB = 1024  # embedding rows; the trained BPE is smaller and padded, like Qwen2-7B's 152064
TINY_BPE_VOCAB = 900

TINY_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                   image_size=54, patch_size=2, vision_use_head=False)
TINY_TEXT = dict(vocab_size=TINY_TEXT_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                 tie_word_embeddings=False, rope_theta=10000.0)
TINY_LLAVA_ST = dict(num_frames=4, sigma=2, k1=9, k2=3, stp_width=32, stp_heads=4)


def tiny_config(**overrides: object) -> LlavaSTConfig:
    """The tiny preset's config (image/video token ids are those of the tiny tokenizer)."""
    fields = dict(vision_config=SiglipVisionConfig(**TINY_VISION), text_config=Qwen2Config(**TINY_TEXT),
                  image_token_id=SPECIAL_TOKENS.index("<image>"), video_token_id=SPECIAL_TOKENS.index("<video>"),
                  **TINY_LLAVA_ST)
    fields.update(overrides)
    return LlavaSTConfig(**fields).validate()


def _corpus() -> list[str]:
    """Sentences shaped like ST-Align conversations, so the BPE learns useful merges."""
    colours = ["red", "green", "blue", "yellow", "white", "purple", "orange", "cyan"]
    shapes = ["square", "circle", "ball", "box", "car", "person", "dog", "triangle"]
    motions = ["moves left", "moves right", "goes up", "falls down", "stays still", "appears", "disappears"]
    templates = [
        "Describe the video in detail.", "What happens in the video?", "When does the {c} {s} {m}?",
        "Where is the {c} {s}? Answer with a bounding box.", "The {c} {s} {m} in the video.",
        "During the span of the event, the {c} {s} {m}. Object bounding box:",
        "Give the time span when the {c} {s} {m}.", "Ends in the end, the {c} {s} {m}.",
        "Please localize the {c} {s} in the image.", "A {c} {s} and a {s} on a dark background.",
        "Yes.", "No.", "There are two objects: a {c} {s} and another {s}.",
    ]
    lines = [t.format(c=c, s=s, m=m) for t, c, s, m in itertools.product(templates, colours, shapes, motions[:3])]
    lines += [" ".join(str(i) for i in range(k, k + 12)) for k in range(0, 100, 12)]
    lines += ["abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,:;!?()[]{}<>-_'\""]
    return lines


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Train a deterministic byte-level BPE offline and wrap it as a Qwen2-style fast tokenizer."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TINY_BPE_VOCAB, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(_corpus(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   unk_token=None, bos_token=None)
    fast.chat_template = QWEN2_CHAT_TEMPLATE
    return fast


def build_tiny_checkpoint(path: str | Path, seed: int = 0) -> Path:
    """Write a random tiny LLaVA-OneVision checkpoint + tokenizer (llava-hf layout) to `path`."""
    path = Path(path)
    config = tiny_config()
    ov_config = LlavaOnevisionConfig(
        vision_config=config.vision_config.to_dict(), text_config=config.text_config.to_dict(),
        image_token_index=config.image_token_id, video_token_index=config.video_token_id,
        vision_feature_layer=config.vision_feature_layer, vision_feature_select_strategy="full",
    )
    torch.manual_seed(seed)
    LlavaOnevisionForConditionalGeneration(ov_config).save_pretrained(path)
    build_tiny_tokenizer().save_pretrained(path)
    (path / DEFAULTS_FILE).write_text(json.dumps(TINY_LLAVA_ST, indent=1, sort_keys=True))
    return path
