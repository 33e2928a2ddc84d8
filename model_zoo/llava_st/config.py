"""LLaVA-ST configuration: the vision tower, the LLM, and the LAPE/STP hyperparameters.

One config object carries everything the model needs, including the packing and coordinate-vocabulary
hyperparameters (M_t/M_h/M_w, k1, k2, sigma) that the sweeps tune, so a saved checkpoint always records
the shapes it was trained with. Symbols follow the paper (REFERENCE.md 1.1-1.3).
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig, Qwen2Config, SiglipVisionConfig

from .settings import LAPE_INITS, QUERY_POOLS, VIDEO_FAST_TOKENS

LLM_LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LlavaSTConfigError(ValueError):
    """A LLaVA-ST hyperparameter violates a constraint of the packer or the vocabulary."""


class LlavaSTConfig(PretrainedConfig):
    """Configuration of `LlavaSTForCausalLM`.

    Args:
        vision_config: SigLIP vision tower config (dict or `SiglipVisionConfig`).
        text_config: Qwen2 LLM config (dict or `Qwen2Config`).
        vision_feature_layer: hidden-state index of the tower whose features are used (-2: second to last).
        num_frames: N, frames sampled per video.
        m_t, m_h, m_w: sizes of the temporal / height / width coordinate vocabularies (LAPE tables).
        k1: step-1 spatial query grid side (W1 -> k1); k2: F_s query grid side (k1 -> k2).
        sigma: number of temporal queries of F_t (N -> sigma).
        stp_width, stp_heads: packer attention width E and head count.
        stp_query_pool: "interpolate" (released: F.interpolate picks window centres) or "mean" (paper).
        lape_enabled: add rho to the visual features (stage 1 trains with LAPE off).
        lape_init: how the six LAPE tables start when a model is first built (stage 1 on a base checkpoint):
            "small" N(0, initializer_range) for all six; "release" as the authors' release, which creates them
            after the base weights load and keeps PyTorch's defaults: input tables N(0, 1) (nn.Embedding),
            output tables U(-1/sqrt(D), 1/sqrt(D)) (nn.Linear); "sincos" smooth sin-cos rows, the same for an axis'
            input and output table, each axis in its own third of D (`lape.sincos_table`): neighbouring coordinates
            start close, which the tiny from-scratch preset needs to learn WHERE (docs/results.md). Later stages
            load the tables from the artifact.
        video_fast_tokens: what fills the first k2^2 N positions of each video's visual block. "stp" (default,
            the paper, and what training always uses): F_s, the spatial packer's output. "release_text": only for
            inference with the authors' released weights, whose LLM never saw F_s (the release's bug 1) but the
            text embeddings of `<vid_start>`, k2^2 N - 2 x `<vid_patch>`, `<vid_end>`: those rows of the LLM's
            input embedding go there instead (F_t positions unchanged). `loading.from_release_state_dict` sets it.
        vid_start_token_id, vid_patch_token_id, vid_end_token_id: the embedding rows "release_text" reads (the
            release's added tokens, rows L+3, L+5, L+4 for a base tokenizer of length L; set by the converter,
            `convert.release_video_token_ids`). Required in "release_text" mode, unused otherwise.
        lora_r, lora_alpha, lora_dropout: LoRA defaults for stages 2 and 3.
        image_token_id, video_token_id: ids of `<image>` / `<video>` in the text vocabulary.
    """

    model_type = "llava_st"
    sub_configs = {"vision_config": SiglipVisionConfig, "text_config": Qwen2Config}

    def __init__(
        self,
        vision_config: dict[str, Any] | SiglipVisionConfig | None = None,
        text_config: dict[str, Any] | Qwen2Config | None = None,
        vision_feature_layer: int = -2,
        num_frames: int = 100,
        m_t: int = 100,
        m_h: int = 100,
        m_w: int = 100,
        k1: int = 9,
        k2: int = 3,
        sigma: int = 20,
        stp_width: int = 1024,
        stp_heads: int = 8,
        stp_query_pool: str = "interpolate",
        lape_enabled: bool = True,
        lape_init: str = "small",
        video_fast_tokens: str = "stp",
        vid_start_token_id: int | None = None,
        vid_patch_token_id: int | None = None,
        vid_end_token_id: int | None = None,
        lora_r: int = 128,
        lora_alpha: int = 256,
        lora_dropout: float = 0.05,
        image_token_id: int | None = None,
        video_token_id: int | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(vision_config, dict):
            vision_config = SiglipVisionConfig(**vision_config)
        if isinstance(text_config, dict):
            text_config = Qwen2Config(**text_config)
        # Defaults: the LLaVA-OneVision-7B shapes (SigLIP-so400m-patch14-384 + Qwen2-7B).
        self.vision_config = vision_config or SiglipVisionConfig(
            hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
            image_size=384, patch_size=14, vision_use_head=False,
        )
        self.text_config = text_config or Qwen2Config(
            vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
            num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768,
            rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=False,
        )
        self.vision_feature_layer = vision_feature_layer
        self.num_frames = num_frames
        self.m_t, self.m_h, self.m_w = m_t, m_h, m_w
        self.k1, self.k2, self.sigma = k1, k2, sigma
        self.stp_width, self.stp_heads, self.stp_query_pool = stp_width, stp_heads, stp_query_pool
        self.lape_enabled = lape_enabled
        if lape_init not in LAPE_INITS:
            raise ValueError(f"lape_init {lape_init!r}: expected one of {', '.join(LAPE_INITS)}")
        self.lape_init = lape_init
        if video_fast_tokens not in VIDEO_FAST_TOKENS:
            raise LlavaSTConfigError(
                f"video_fast_tokens {video_fast_tokens!r}: expected one of {', '.join(VIDEO_FAST_TOKENS)}")
        self.video_fast_tokens = video_fast_tokens
        self.vid_start_token_id, self.vid_patch_token_id = vid_start_token_id, vid_patch_token_id
        self.vid_end_token_id = vid_end_token_id
        self.lora_r, self.lora_alpha, self.lora_dropout = lora_r, lora_alpha, lora_dropout
        self.image_token_id, self.video_token_id = image_token_id, video_token_id
        super().__init__(**kwargs)

    # ---- derived shapes -------------------------------------------------------------------------------
    @property
    def image_size(self) -> int:
        """Side in pixels of the square frame the vision tower takes (384 for SigLIP-so400m-384)."""
        return self.vision_config.image_size

    @property
    def grid_size(self) -> int:
        """W1 = H1: patches per side of one frame (27 for 384 / 14)."""
        return self.vision_config.image_size // self.vision_config.patch_size

    @property
    def hidden_size(self) -> int:
        """D, the LLM width; LAPE and STP act in this space."""
        return self.text_config.hidden_size

    @property
    def text_vocab_size(self) -> int:
        """V: ids below V are text tokens (embed_tokens / lm_head rows)."""
        return self.text_config.vocab_size

    @property
    def coord_vocab_size(self) -> int:
        return self.m_t + self.m_h + self.m_w

    @property
    def image_seq_len(self) -> int:
        """Visual tokens of an image: the full W1 x H1 grid (images skip STP)."""
        return self.grid_size**2

    @property
    def video_seq_len(self) -> int:
        """Visual tokens of a video: N_s + N_t = k2^2 N + k1^2 sigma (2520 by default)."""
        return self.k2**2 * self.num_frames + self.k1**2 * self.sigma

    @property
    def release_video_text_ids(self) -> tuple[int, int, int]:
        """(vid_start, vid_patch, vid_end) embedding rows of the "release_text" mode."""
        return self.vid_start_token_id, self.vid_patch_token_id, self.vid_end_token_id

    # ---- validation -----------------------------------------------------------------------------------
    def validate(self) -> LlavaSTConfig:
        """Raise `LlavaSTConfigError` naming the first violated constraint; return self when valid."""
        positive = {
            "num_frames (N)": self.num_frames, "m_t": self.m_t, "m_h": self.m_h, "m_w": self.m_w,
            "k1": self.k1, "k2": self.k2, "sigma": self.sigma, "grid_size (W1)": self.grid_size,
            "stp_width (E)": self.stp_width, "stp_heads": self.stp_heads,
        }
        for name, value in positive.items():
            if not isinstance(value, int) or value <= 0:
                raise LlavaSTConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("m_t", "m_h", "m_w"):
            if getattr(self, name) < 2:
                raise LlavaSTConfigError(f"{name} must be >= 2 (a value v maps to v * ({name} - 1))")
        if self.grid_size % self.k1:
            raise LlavaSTConfigError(
                f"k1 must divide the feature grid W1: W1={self.grid_size} is not divisible by k1={self.k1}")
        if self.k1 % self.k2:
            raise LlavaSTConfigError(f"k2 must divide k1: k1={self.k1} is not divisible by k2={self.k2}")
        if self.num_frames % self.sigma:
            raise LlavaSTConfigError(
                f"sigma must divide the frame count N: N={self.num_frames} is not divisible by sigma={self.sigma}")
        if self.stp_width % self.stp_heads:
            raise LlavaSTConfigError(
                f"stp_heads must divide stp_width: E={self.stp_width} is not divisible by {self.stp_heads} heads")
        if self.stp_query_pool not in QUERY_POOLS:
            raise LlavaSTConfigError(f"stp_query_pool must be one of {QUERY_POOLS}, got {self.stp_query_pool!r}")
        if self.lora_r <= 0 or self.lora_alpha <= 0 or not 0.0 <= self.lora_dropout < 1.0:
            raise LlavaSTConfigError(
                f"LoRA needs r > 0, alpha > 0 and 0 <= dropout < 1, got r={self.lora_r}, "
                f"alpha={self.lora_alpha}, dropout={self.lora_dropout}")
        if self.vision_feature_layer >= 0 or -self.vision_feature_layer > self.vision_config.num_hidden_layers + 1:
            raise LlavaSTConfigError(
                f"vision_feature_layer must index the tower's hidden states from the end, got "
                f"{self.vision_feature_layer} for {self.vision_config.num_hidden_layers} layers")
        if self.video_fast_tokens not in VIDEO_FAST_TOKENS:
            raise LlavaSTConfigError(
                f"video_fast_tokens must be one of {VIDEO_FAST_TOKENS}, got {self.video_fast_tokens!r}")
        if self.video_fast_tokens == "release_text":
            names = ("vid_start_token_id", "vid_patch_token_id", "vid_end_token_id")
            for name, row in zip(names, self.release_video_text_ids, strict=True):
                if not isinstance(row, int) or not 0 <= row < self.text_vocab_size:
                    raise LlavaSTConfigError(
                        f"video_fast_tokens='release_text' needs {name} as a row of the text embedding "
                        f"[0, {self.text_vocab_size}), got {row!r} (the converter sets it: "
                        "loading.from_release_state_dict)")
            if self.k2**2 * self.num_frames < 2:
                raise LlavaSTConfigError("video_fast_tokens='release_text' needs k2^2 N >= 2 positions "
                                         "(<vid_start> ... <vid_end>)")
        return self
