"""The STP written the slow, obvious way: Python loops over frames, positions and windows.

It is the reference the vectorised ``model_zoo.llava_st.stp.SpatialTemporalPacker`` is tested against
(tests/unit/test_stp.py) and the baseline it is timed against (benchmarks/stp_benchmark.py). It follows
REFERENCE.md 1.3 literally and shares no layout code with the packer: every window is cut out by index,
its query is pooled by an explicit formula (not ``F.interpolate``), and attention is one call of the
block's own ``nn.MultiheadAttention`` per window.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def centre(region: Tensor, dim: int) -> Tensor:
    """Linear interpolation at the window's centre along ``dim``, as align_corners=False interpolation.

    With an integer factor s the source coordinate of output i is (i + 0.5) * s - 0.5 = i*s + (s-1)/2:
    the middle element for odd s, the mean of the two middle elements for even s.
    """
    pos = (region.shape[dim] - 1) / 2
    lo, frac = math.floor(pos), pos - math.floor(pos)
    low = region.select(dim, lo)
    if frac == 0:
        return low
    return (1 - frac) * low + frac * region.select(dim, lo + 1)


def pooled_query(region: Tensor, mode: str) -> Tensor:
    """The query of one window. region: (s, s, D) spatial or (w, D) temporal -> (D,)."""
    if mode == "mean":
        return region.reshape(-1, region.shape[-1]).mean(0)
    if mode != "interpolate":
        raise ValueError(f"unknown query pooling {mode!r}")
    while region.dim() > 1:
        region = centre(region, 0)
    return region


def packer_one_window(packer: nn.Module, query: Tensor, region: Tensor) -> Tensor:
    """One point-to-region step: query (D,), region (R, D) -> (D,)."""
    q = packer.ln_q(packer.to_q(query))[None, None]  # (1, 1, E): (L, batch, E)
    k = packer.ln_k(packer.to_k(region))[:, None]  # (R, 1, E)
    v = packer.ln_v(packer.to_v(region))[:, None]
    out = packer.attn(q, k, v, need_weights=False)[0][0, 0]
    return query + packer.to_out(out)


def spatial_packer_loop(packer: nn.Module, x: Tensor, grid: int, size: int, mode: str) -> Tensor:
    """x (T, grid*grid, D) -> (T, size*size, D): every frame, every size x size window, one at a time."""
    s = grid // size
    frames = []
    for frame in x.float():
        plane = frame.reshape(grid, grid, -1)
        tokens = []
        for row in range(size):
            for col in range(size):
                region = plane[row * s:(row + 1) * s, col * s:(col + 1) * s]  # (s, s, D)
                query = pooled_query(region, mode)
                tokens.append(packer_one_window(packer, query, region.reshape(s * s, -1)))
        frames.append(torch.stack(tokens))
    return torch.stack(frames)


def temporal_packer_loop(packer: nn.Module, x: Tensor, size: int, mode: str) -> Tensor:
    """x (T, P, D) -> (size, P, D): every position, every block of T/size frames, one at a time."""
    t, positions, _ = x.shape
    w = t // size
    x = x.float()
    blocks = []
    for block in range(size):
        tokens = []
        for pos in range(positions):
            region = x[block * w:(block + 1) * w, pos]  # (w, D)
            tokens.append(packer_one_window(packer, pooled_query(region, mode), region))
        blocks.append(torch.stack(tokens))
    return torch.stack(blocks)


def stp_loop(stp: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """The whole STP with loops, using ``stp``'s weights: x (N, g*g, D) -> (F_s, F_t)."""
    mode = stp.query_pool
    f_hat = spatial_packer_loop(stp.step1, x, stp.grid, stp.k1, mode)
    f_s = spatial_packer_loop(stp.spatial, f_hat, stp.k1, stp.k2, mode)
    f_t = temporal_packer_loop(stp.temporal, f_hat, stp.sigma, mode)
    return f_s, f_t
