"""LLaVA-ST's settings a job may override (`model.overrides`), with the paper's symbols and the packer's rules.
Pure Python: `llavast validate` reads them without importing the model."""

from __future__ import annotations

from ..settings import Divides, ModelSettings, Setting

QUERY_POOLS = ("interpolate", "mean")
LAPE_INITS = ("small", "release", "sincos")  # small: N(0, 0.02); release: the release's; sincos: smooth rows
VIDEO_FAST_TOKENS = ("stp", "release_text")

SETTINGS = ModelSettings("llava_st", {
    "num_frames": Setting(int, "frames sampled per video", minimum=1, symbol="N"),
    "m_t": Setting(int, "temporal coordinate bins", minimum=2, symbol="M_t"),
    "m_h": Setting(int, "vertical coordinate bins", minimum=2, symbol="M_h"),
    "m_w": Setting(int, "horizontal coordinate bins", minimum=2, symbol="M_w"),
    "k1": Setting(int, "the packer's spatial pooling window (divides W1)", minimum=1),
    "k2": Setting(int, "the packer's fine window (divides k1)", minimum=1),
    "sigma": Setting(int, "the packer's temporal groups (divides N)", minimum=1),
    "stp_width": Setting(int, "the packer's width", minimum=1, symbol="E"),
    "stp_heads": Setting(int, "the packer's attention heads (divide E)", minimum=1),
    "stp_query_pool": Setting(str, "how the packer pools its queries", choices=QUERY_POOLS),
    "lape_enabled": Setting(bool, "add LAPE to the visual features"),
    "lape_init": Setting(str, "how new LAPE tables start", choices=LAPE_INITS),
    "video_fast_tokens": Setting(str, "the fast video stream: the packer's, or the release's text rows",
                                 choices=VIDEO_FAST_TOKENS),
}, rules=(
    Divides("k1", "k2", "k2 must divide k1 (k1 % k2 == 0)"),
    Divides("num_frames", "sigma", "sigma must divide N (num_frames % sigma == 0)"),
    Divides("stp_width", "stp_heads", "stp_heads must divide E (stp_width % stp_heads == 0)"),
))
