"""The Spatial-Temporal Packer (STP): 100 frames x 729 patch features -> 2,520 video tokens.

LLaVA-ST cannot feed 72,900 patch features per video to the LLM, so it packs them with three
point-to-region attention blocks (REFERENCE.md 1.3). Each block pools the input to a coarse query
grid and lets every query attend ONLY to the tokens of its own non-overlapping window of the input:

    step1     (spatial)  per frame  g x g  -> k1 x k1, window (g/k1)^2  -> F_hat (N, k1*k1, D)
    spatial   ("fast")   per frame k1 x k1 -> k2 x k2, window (k1/k2)^2 -> F_s   (N, k2*k2, D)
    temporal  ("slow")   per position  N   -> sigma,   window N/sigma   -> F_t   (sigma, k1*k1, D)

Both F_s and F_t are returned (the release computes F_s and then drops it: its bug 1).

Query pooling: the release uses ``F.interpolate`` (bilinear over space, linear over time,
align_corners=False), which for integer factors picks the CENTRE of each window (27->9: rows 3i+1;
100->20: frames 5i+2) and averages the two middle elements for even factors. That is the default,
``"interpolate"``, needed to reproduce the released weights; ``"mean"`` is the paper's "average
pooling". Pooling runs in fp32 and is cast back to the input dtype, as released.

Submodule names match the release (``to_q.0.weight``, ``attn.in_proj_weight``, ``to_out.weight``...) so
released weights load by prefix after ``convert.convert_release_state_dict``. Everything is vectorised:
windows become the batch of ONE scaled-dot-product attention per block, using the weights of the
block's ``nn.MultiheadAttention``; there is no Python loop over frames or windows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.init import trunc_normal_

from .config import LlavaSTConfig
from .settings import QUERY_POOLS


def pool_space(x: Tensor, grid: int, size: int, mode: str) -> Tensor:
    """Pool every frame's row-major ``grid x grid`` tokens to ``size x size`` queries.

    x: (T, grid*grid, C) -> (T, size*size, C), computed in fp32, returned in x's dtype.
    """
    t, _, c = x.shape
    planes = x.float().reshape(t, grid, grid, c).permute(0, 3, 1, 2)  # (T, C, grid, grid)
    if mode == "interpolate":
        pooled = F.interpolate(planes, size=(size, size), mode="bilinear", align_corners=False)
    elif mode == "mean":
        pooled = F.avg_pool2d(planes, kernel_size=grid // size)
    else:
        raise ValueError(f"unknown STP query pooling {mode!r}; expected one of {QUERY_POOLS}")
    return pooled.permute(0, 2, 3, 1).reshape(t, size * size, c).to(x.dtype)


def pool_time(x: Tensor, size: int, mode: str) -> Tensor:
    """Pool the frame axis of every spatial position from T to ``size`` queries.

    x: (T, P, C) -> (size, P, C), computed in fp32, returned in x's dtype.
    """
    t = x.shape[0]
    series = x.float().permute(1, 2, 0)  # (P, C, T)
    if mode == "interpolate":
        pooled = F.interpolate(series, size=size, mode="linear", align_corners=False)
    elif mode == "mean":
        pooled = F.avg_pool1d(series, kernel_size=t // size)
    else:
        raise ValueError(f"unknown STP query pooling {mode!r}; expected one of {QUERY_POOLS}")
    return pooled.permute(2, 0, 1).to(x.dtype)


@dataclass(frozen=True)
class SpatialWindows:
    """Per frame, the ``grid x grid`` key grid split into ``size x size`` blocks of (grid/size)^2 tokens.

    Window w = (frame, block row, block col); its query is the pooled token at (frame, row, col).
    """

    grid: int
    size: int

    def regions(self, x: Tensor) -> Tensor:
        """(T, grid*grid, C) -> (T*size*size, s*s, C), windows frame-major then row-major."""
        t, _, c = x.shape
        s = self.grid // self.size
        blocks = x.reshape(t, self.size, s, self.size, s, c).permute(0, 1, 3, 2, 4, 5)
        return blocks.reshape(t * self.size * self.size, s * s, c)

    def queries(self, q: Tensor) -> Tensor:
        """(T, size*size, C) -> (T*size*size, C), same window order as ``regions``."""
        return q.reshape(-1, q.shape[-1])

    def restore(self, out: Tensor, frames: int) -> Tensor:
        """(T*size*size, C) -> (T, size*size, C)."""
        return out.reshape(frames, self.size * self.size, out.shape[-1])


@dataclass(frozen=True)
class TemporalWindows:
    """Per spatial position, the ``frames`` axis split into ``size`` blocks of frames/size consecutive frames.

    Window w = (block, position); its query is the pooled token at (block, position).
    """

    frames: int
    size: int

    def regions(self, x: Tensor) -> Tensor:
        """(frames, P, C) -> (size*P, frames/size, C), windows block-major then position."""
        _, p, c = x.shape
        w = self.frames // self.size
        return x.reshape(self.size, w, p, c).permute(0, 2, 1, 3).reshape(self.size * p, w, c)

    def queries(self, q: Tensor) -> Tensor:
        """(size, P, C) -> (size*P, C), same window order as ``regions``."""
        return q.reshape(-1, q.shape[-1])

    def restore(self, out: Tensor, frames: int) -> Tensor:
        """(size*P, C) -> (size, P, C); ``frames`` is the query count, i.e. ``size``."""
        return out.reshape(frames, -1, out.shape[-1])


Windows = SpatialWindows | TemporalWindows


def _mlp(dim: int, width: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, width), nn.GELU(), nn.Linear(width, width))


class PointToRegionPacker(nn.Module):
    """One point-to-region block: each pooled query attends to its own window, plus a residual.

    result = xq + to_out(MHA(ln_q(to_q(xq)), ln_k(to_k(x_window)), ln_v(to_v(x_window))))
    """

    def __init__(self, dim: int, width: int, heads: int) -> None:
        super().__init__()
        self.to_q = _mlp(dim, width)
        self.to_k = _mlp(dim, width)
        self.to_v = _mlp(dim, width)
        self.ln_q = nn.LayerNorm(width)
        self.ln_k = nn.LayerNorm(width)
        self.ln_v = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads)
        self.to_out = nn.Linear(width, dim, bias=False)

    def forward(self, xq: Tensor, x: Tensor, windows: Windows) -> Tensor:
        """xq: pooled queries (T', P', D); x: the un-pooled input (T, P, D) -> (T', P', D)."""
        q = windows.queries(self.ln_q(self.to_q(xq)))  # (W, E)
        k = windows.regions(self.ln_k(self.to_k(x)))  # (W, R, E)
        v = windows.regions(self.ln_v(self.to_v(x)))  # (W, R, E)
        out = windows.restore(self._attend(q, k, v), xq.shape[0])  # (T', P', E)
        return xq + self.to_out(out)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """torch's MultiheadAttention math (same weights), batched over windows: (W,E),(W,R,E) -> (W,E)."""
        attn = self.attn
        heads, width = attn.num_heads, attn.embed_dim
        w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
        b_q, b_k, b_v = attn.in_proj_bias.chunk(3)
        n_win, region = k.shape[0], k.shape[1]
        qh = F.linear(q, w_q, b_q).reshape(n_win, 1, heads, -1).transpose(1, 2)  # (W, h, 1, hd)
        kh = F.linear(k, w_k, b_k).reshape(n_win, region, heads, -1).transpose(1, 2)  # (W, h, R, hd)
        vh = F.linear(v, w_v, b_v).reshape(n_win, region, heads, -1).transpose(1, 2)
        dropout = attn.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(qh, kh, vh, dropout_p=dropout)  # (W, h, 1, hd)
        return attn.out_proj(out.reshape(n_win, width))


class SpatialTemporalPacker(nn.Module):
    """Packs one video's (N, g*g, D) features into F_s (N, k2*k2, D) and F_t (sigma, k1*k1, D)."""

    def __init__(self, config: LlavaSTConfig) -> None:
        super().__init__()
        config.validate()
        self.frames = config.num_frames
        self.grid = config.grid_size
        self.k1, self.k2, self.sigma = config.k1, config.k2, config.sigma
        self.query_pool = config.stp_query_pool
        dim, width, heads = config.text_config.hidden_size, config.stp_width, config.stp_heads
        self.step1 = PointToRegionPacker(dim, width, heads)
        self.spatial = PointToRegionPacker(dim, width, heads)
        self.temporal = PointToRegionPacker(dim, width, heads)
        self.apply(_init_weights)

    @staticmethod
    def num_tokens(config: LlavaSTConfig) -> int:
        """Video tokens the LLM sees: k2^2 N (F_s) + k1^2 sigma (F_t); 2,520 at the defaults."""
        return config.k2**2 * config.num_frames + config.k1**2 * config.sigma

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (N, g*g, D) -> (f_s (N, k2*k2, D), f_t (sigma, k1*k1, D)), both frame-major then row-major."""
        expected = (self.frames, self.grid * self.grid)
        if x.dim() != 3 or tuple(x.shape[:2]) != expected:
            raise ValueError(f"STP expects video features of shape (N, g*g, D) = {expected + ('D',)}, "
                             f"got {tuple(x.shape)}")
        mode = self.query_pool
        f_hat = self.step1(pool_space(x, self.grid, self.k1, mode), x, SpatialWindows(self.grid, self.k1))
        f_s = self.spatial(pool_space(f_hat, self.k1, self.k2, mode), f_hat, SpatialWindows(self.k1, self.k2))
        f_t = self.temporal(pool_time(f_hat, self.sigma, mode), f_hat, TemporalWindows(self.frames, self.sigma))
        return f_s, f_t

    def participation(self, frame: Tensor) -> Tensor:
        """A zero that depends on every packer parameter: all three packers run on one frame (1, g*g, D).

        Data-parallel ranks must produce gradients for the same parameters, because DeepSpeed reduces them
        in buckets across ranks: a rank whose batch holds no video would otherwise leave STP out of its
        graph and the collectives would mismatch. The release adds such a term for the same reason.
        """
        mode = self.query_pool
        f_hat = self.step1(pool_space(frame, self.grid, self.k1, mode), frame, SpatialWindows(self.grid, self.k1))
        f_s = self.spatial(pool_space(f_hat, self.k1, self.k2, mode), f_hat, SpatialWindows(self.k1, self.k2))
        f_t = self.temporal(pool_time(f_hat, 1, mode), f_hat, TemporalWindows(1, 1))
        return (f_s.sum() + f_t.sum()) * 0.0


def _init_weights(module: nn.Module) -> None:
    """The release's init: Linear trunc-normal(0.02) with zero bias, LayerNorm 1/0.

    ``attn.in_proj_weight`` is not a Linear and keeps MultiheadAttention's own xavier-uniform init, as
    released; ``attn.out_proj`` is a Linear and gets trunc-normal like the rest.
    """
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
