"""docs/tuning.md's tables, computed here (`python -m llavast.tune.tables` prints them; a unit test keeps the doc
current): visual tokens and activation memory over packer settings, and what the coordinate vocabulary costs,
at the 7B model's shapes (N = 100, W1 = 27, Qwen2-7B; a unit test checks them against the model's defaults)."""

from __future__ import annotations

import itertools

from llavast.tune.space import PAPER_VISUAL_TOKENS, Shapes, activation_gib, visual_tokens

# LLaVA-OneVision-7B: SigLIP-so400m-patch14-384 (W1 = 384 // 14 = 27), Qwen2-7B (D 3584, 28 layers, 28 heads);
# the paper's N = 100, k1 = 9, k2 = 3, sigma = 20, M = 100; micro-batch 1, 512 text tokens beside the video.
PAPER_DEFAULTS = {"m_t": 100, "m_h": 100, "m_w": 100, "k1": 9, "k2": 3, "sigma": 20}
PAPER_7B = Shapes(grid_size=27, num_frames=100, hidden_size=3584, num_layers=28, num_heads=28, text_tokens=512,
                  micro_batch_size=1, gradient_checkpointing=True, defaults=PAPER_DEFAULTS)
BEGIN, END = "<!-- BEGIN GENERATED TUNING TABLES -->", "<!-- END GENERATED TUNING TABLES -->"
K1, K2, SIGMA, BINS = (3, 9, 27), (1, 3), (10, 20, 25, 50), (25, 50, 100, 200, 400)


def _row(cells: list[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def packer_table() -> list[str]:
    checkpointed = PAPER_7B
    full = Shapes(**{**PAPER_7B.__dict__, "gradient_checkpointing": False})
    n, w1, defaults = PAPER_7B.num_frames, PAPER_7B.grid_size, PAPER_7B.defaults
    lines = [_row(["k1", "k2", "sigma", "N_s = k2^2 N", "N_t = k1^2 sigma", "visual tokens", "vs paper",
                   "activations GiB (checkpointed)", "activations GiB (not)"]),
             _row(["---"] * 9)]
    for k1, k2, sigma in itertools.product(K1, K2, SIGMA):
        if k1 % k2 or n % sigma or w1 % k1:
            continue
        tokens = visual_tokens(k1, k2, sigma, n)
        mark = "**" if (k1, k2, sigma) == (defaults["k1"], defaults["k2"], defaults["sigma"]) else ""
        lines.append(_row([f"{mark}{k1}{mark}", k2, sigma, k2 * k2 * n, k1 * k1 * sigma,
                           f"{mark}{tokens:,}{mark}", f"{tokens / PAPER_VISUAL_TOKENS:.2f}",
                           f"{activation_gib(tokens + checkpointed.text_tokens, checkpointed):.1f}",
                           f"{activation_gib(tokens + full.text_tokens, full):.1f}"]))
    return lines


def vocabulary_table() -> list[str]:
    d = PAPER_7B.hidden_size
    lines = [_row(["M (each axis)", "coordinate tokens M_t + M_h + M_w", "LAPE parameters 2 (M_t + M_h + M_w) D",
                   "LAPE MiB (bf16)", "bin width", "on a 60 s video", "on a 1,000 px side"]),
             _row(["---"] * 7)]
    for m in BINS:
        params = 2 * 3 * m * d
        lines.append(_row([m, 3 * m, f"{params:,}", f"{params * 2 / 2**20:.1f}", f"1/{m - 1}",
                           f"{60 / (m - 1):.2f} s", f"{1000 / (m - 1):.1f} px"]))
    return lines


def markdown() -> str:
    return "\n".join([BEGIN, "", *packer_table(), "", *vocabulary_table(), "", END])


if __name__ == "__main__":
    print(markdown())
