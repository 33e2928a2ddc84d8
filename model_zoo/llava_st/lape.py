"""LAPE: Language-Aligned Positional Embedding, with Neighbouring Token Propagation (REFERENCE.md 1.2).

Per axis a in {temporal, height, width} there is an input table E_in^a (embeds coordinate tokens and
placeholders in the text stream) and an output table E_out^a (extra rows of the LM head). The same
tables, averaged, are the positional embedding rho^a added to the visual features, so a position in a
frame and the token that names it share one vector: that is what "language-aligned" means.

NTP: every use of a table W goes through W + R W - stopgrad(R W), R[i, j] = 2^-|i-j|. The forward
value is W; the gradient reaching row i becomes g_i + sum_j 2^-|i-j| g_j, so a coordinate seen in
training also teaches its neighbours.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import LlavaSTConfig

AXES = ("temporal", "height", "width")


def ntp_matrix(m: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """R[i, j] = 2^-|i - j| (m x m). Built on use, not stored: a buffer would be one more thing for
    meta-device loading and ZeRO-3 partitioning to get wrong, and it costs microseconds."""
    index = torch.arange(m, device=device)
    return (2.0 ** -(index[:, None] - index[None, :]).abs().float()).to(dtype)


def ntp(weight: Tensor, reparam: Tensor | None = None) -> Tensor:
    """W + R W - stopgrad(R W): value W, gradient (I + R^T) g."""
    if reparam is None:
        reparam = ntp_matrix(weight.shape[0], weight.device, weight.dtype)
    rw = reparam.to(weight.dtype) @ weight
    return weight + (rw - rw.detach())  # exactly W in value (the bracket is exactly 0)


def resample(table: Tensor, size: int) -> Tensor:
    """Linearly resample an (M, D) table to (size, D) rows (align_corners=False, as released)."""
    if table.shape[0] == size:
        return table
    return F.interpolate(table.t()[None], size=size, mode="linear", align_corners=False)[0].t()


def sincos_table(m: int, d: int, block: int, std: float, device: torch.device | str | None = None) -> Tensor:
    """(m, d) smooth table of one axis: row i (position p = i / (m - 1)) holds sin and cos of 2 pi f_k p for
    K = (d // 3) // 2 frequencies f_k geometric from 1/4 to (m - 1) / 4 cycles, in dimensions
    [block * (d // 3), (block + 1) * (d // 3)); the other dimensions are 0, so the temporal, height and width
    tables (blocks 0, 1, 2) stay apart when rho^t + rho^h + rho^w are summed. Neighbouring rows are close and
    a shift of p is a rotation in each (sin, cos) pair (a linear map), so reading "a little left of the patch
    attended to" is linear. Scaled so a row's norm is that of an N(0, std) row of d dimensions.
    """
    width = d // 3
    pairs = width // 2
    if pairs < 1:
        raise ValueError(f"lape_init 'sincos' needs a hidden size of at least 6, got {d}")
    p = torch.linspace(0, 1, m, dtype=torch.float64, device=device)[:, None]
    freqs = torch.logspace(math.log10(0.25), math.log10(max(0.25, (m - 1) / 4)), pairs, dtype=torch.float64,
                           device=device)
    angles = 2 * math.pi * p * freqs[None, :]
    table = torch.zeros(m, d, dtype=torch.float64, device=device)
    start = block * width
    table[:, start:start + 2 * pairs:2] = torch.sin(angles)
    table[:, start + 1:start + 2 * pairs:2] = torch.cos(angles)
    return (table * std * math.sqrt(d / pairs)).float()  # each row's squared norm: pairs * scale^2 = d std^2


class LAPETables:
    """The NTP-reparameterised tables of one forward pass, computed once and shared by all their uses."""

    def __init__(self, inputs: dict[str, Tensor], outputs: dict[str, Tensor]) -> None:
        self.inputs, self.outputs = inputs, outputs

    @property
    def input_all(self) -> Tensor:
        """(M_t + M_h + M_w, D): the input tables in coordinate-id order."""
        return torch.cat([self.inputs[a] for a in AXES])

    @property
    def output_all(self) -> Tensor:
        return torch.cat([self.outputs[a] for a in AXES])

    def rho(self, axis: str) -> Tensor:
        """rho^a = (E_in^a + E_out^a) / 2, paper eq. (5)."""
        return (self.inputs[axis] + self.outputs[axis]) / 2


class LAPE(nn.Module):
    """Holds the six tables; `tables()` applies NTP, `inject()` adds rho to visual features."""

    def __init__(self, config: LlavaSTConfig) -> None:
        super().__init__()
        sizes = {"temporal": config.m_t, "height": config.m_h, "width": config.m_w}
        self.init_std = config.text_config.initializer_range
        self.init = config.lape_init
        for axis, m in sizes.items():
            self.register_parameter(f"{axis}_input", nn.Parameter(torch.empty(m, config.hidden_size)))
            self.register_parameter(f"{axis}_output", nn.Parameter(torch.empty(m, config.hidden_size)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """config.lape_init: "small" N(0, initializer_range); "release" N(0, 1) inputs (nn.Embedding's
        default) and U(+-1/sqrt(D)) outputs (nn.Linear's default for a (M, D) weight, fan_in D); "sincos"
        `sincos_table` for both tables of an axis, each axis in its own third of the D dimensions."""
        for index, axis in enumerate(AXES):
            inputs, outputs = getattr(self, f"{axis}_input"), getattr(self, f"{axis}_output")
            if self.init == "sincos":
                table = sincos_table(inputs.shape[0], inputs.shape[1], index, self.init_std, inputs.device)
                with torch.no_grad():
                    inputs.copy_(table)
                    outputs.copy_(table)
            elif self.init == "release":
                nn.init.normal_(inputs, std=1.0)
                bound = 1 / math.sqrt(outputs.shape[1])
                nn.init.uniform_(outputs, -bound, bound)
            else:
                nn.init.normal_(inputs, std=self.init_std)
                nn.init.normal_(outputs, std=self.init_std)

    def forward(self) -> LAPETables:
        """The tables of this pass, after NTP (a module call, so ZeRO-3 gathers the tables for it)."""
        inputs, outputs = {}, {}
        for axis in AXES:
            inputs[axis] = ntp(getattr(self, f"{axis}_input"))
            outputs[axis] = ntp(getattr(self, f"{axis}_output"))
        return LAPETables(inputs, outputs)

    @staticmethod
    def inject(features: Tensor, tables: LAPETables, grid: int, is_video: bool) -> Tensor:
        """v_hat[t, y, x] = v[t, y, x] + rho^t[t] + rho^h[y] + rho^w[x].

        features: (T, grid*grid, D) projected patch features of T frames (T = 1 for an image).
        Each table is resampled onto the feature grid; for a video the temporal table is resampled to T
        frames (the release cannot: it requires N == M_t); an image uses rho^t[0] for every patch.
        """
        t = features.shape[0]
        rho_t = resample(tables.rho("temporal"), t) if is_video else tables.rho("temporal")[:1]
        rho_h = resample(tables.rho("height"), grid)
        rho_w = resample(tables.rho("width"), grid)
        position = rho_t[:, None, None, :] + rho_h[None, :, None, :] + rho_w[None, None, :, :]  # (T, H, W, D)
        return features + position.reshape(t, grid * grid, -1).to(features.dtype)
