"""The coordinate vocabulary: LAPE tokens, placeholders, value quantisation and answer decoding.

Layout of ids (REFERENCE.md 1.1): [0, V) text, then M_t `<TEMP-xxx>`, M_h `<HEIGHT-xxx>`, M_w `<WIDTH-xxx>`
tokens (V = the LLM's embedding rows, so coordinate ids line up with the logit columns the model appends),
then the six placeholders. A value v in [0, 1] sits at table position p = v (M - 1).
"""

from __future__ import annotations

import re
from typing import Any

import torch

from ..contract import PLACEHOLDER_VARIABLES
from .config import LlavaSTConfig

AXES = ("TEMP", "HEIGHT", "WIDTH")
PLACEHOLDERS = tuple(PLACEHOLDER_VARIABLES)
_RESERVED = "<|reserved_{}|>"
_TOKEN_RE = re.compile(r"<(TEMP|HEIGHT|WIDTH)-(\d{3})>")
_PLACEHOLDER_RE = re.compile(r"<(TEMP|HEIGHT|WIDTH)-(INPUT|OUTPUT)>")


def coordinate_token(axis: str, index: int) -> str:
    return f"<{axis}-{index:03d}>"


def axis_sizes(config: LlavaSTConfig) -> dict[str, int]:
    return {"TEMP": config.m_t, "HEIGHT": config.m_h, "WIDTH": config.m_w}


def coordinate_tokens(config: LlavaSTConfig) -> list[str]:
    """All discrete coordinate tokens in id order: TEMP, then HEIGHT, then WIDTH."""
    return [coordinate_token(axis, k) for axis, m in axis_sizes(config).items() for k in range(m)]


def _round_3_half_up(values: torch.Tensor) -> torch.Tensor:
    return (torch.floor(values.double() * 1000 + 0.5) / 1000).clamp(0, 1)


def quantize_values(values: torch.Tensor, sizes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """THE quantiser, used by the vocabulary, the data path and the model alike: values -> (floor, ceil, ratio)
    on tables of `sizes` rows.

    v is rounded to 3 decimals, half up, in float64: v' = floor(1000 v + 0.5) / 1000, then clipped to [0, 1]
    (the release rounds to 3 decimals before quantising); p = v' (m - 1), floor = floor(p), ceil = min(ceil(p),
    m - 1), ratio = p - floor. Ties go up: 0.0125 -> 0.013, 0.0145 -> 0.015. Values should arrive in float64
    (the data path carries them so): a float32 value is widened first, and its own rounding error can move it
    across a tie.
    """
    v = _round_3_half_up(values)
    p = v * (sizes.to(v.device, torch.float64) - 1)
    floor = p.floor().long()
    ceil = torch.minimum(p.ceil().long(), sizes.to(floor.device) - 1)
    return floor, ceil, p - floor


def normalise(value: float) -> float:
    """A value as the quantiser sees it: rounded to 3 decimals (half up) and clipped to [0, 1]."""
    return float(_round_3_half_up(torch.tensor(float(value), dtype=torch.float64)))


def quantize(value: float, m: int) -> tuple[int, int, float]:
    """One value on a table of m rows: `quantize_values` on a scalar."""
    f, c, r = quantize_values(torch.tensor([float(value)], dtype=torch.float64), torch.tensor([m]))
    return int(f), int(c), float(r)


def soft_label(value: float, m: int) -> dict[int, float]:
    """Target distribution over an axis' m tokens: (1 - r) on floor, r on ceil (sums to 1)."""
    f, c, r = quantize(value, m)
    if f == c:
        return {f: 1.0}
    return {f: 1.0 - r, c: r}


def nearest_index(value: float, m: int) -> int:
    """The discrete token nearest to a value (the quantiser's floor or ceil; a ratio of one half goes up)."""
    f, c, r = quantize(value, m)
    return c if r >= 0.5 else f


def index_to_value(index: int, m: int) -> float:
    """A generated token k of an axis decodes to k / (M - 1)."""
    return index / (m - 1)


def add_coordinate_tokens(tokenizer: Any, config: LlavaSTConfig) -> None:
    """Add the coordinate tokens and placeholders so their ids start at V = config.text_vocab_size.

    Real checkpoints pad the LLM's embedding past the tokenizer (Qwen2-7B: 152064 rows for ~151.6k
    tokens); the gap is filled with reserved special tokens so that `<TEMP-000>` gets id V exactly and
    token ids equal logit columns. Idempotent: a tokenizer that already has the tokens is checked only.
    """
    v = config.text_vocab_size
    wanted = coordinate_tokens(config) + list(PLACEHOLDERS)
    if wanted[0] not in tokenizer.get_vocab():
        if len(tokenizer) > v:
            raise ValueError(
                f"tokenizer has {len(tokenizer)} tokens but the LLM embeds only {v}: coordinate ids must start "
                "at the embedding size; resize the LLM's embeddings to the tokenizer first")
        filler = [_RESERVED.format(i) for i in range(v - len(tokenizer))]
        if filler:
            tokenizer.add_tokens(filler, special_tokens=True)
        tokenizer.add_tokens(wanted, special_tokens=True)
    ids = tokenizer.convert_tokens_to_ids(wanted)
    if ids != list(range(v, v + len(wanted))):
        raise ValueError(f"coordinate tokens must occupy ids [{v}, {v + len(wanted)}), found from {ids[0]}")


class CoordinateVocab:
    """Id arithmetic and text <-> value conversion for one config's coordinate vocabulary."""

    def __init__(self, config: LlavaSTConfig) -> None:
        self.sizes = axis_sizes(config)
        self.text_vocab_size = config.text_vocab_size
        self.offsets: dict[str, int] = {}
        start = config.text_vocab_size
        for axis, m in self.sizes.items():
            self.offsets[axis] = start
            start += m
        self.end = start  # first placeholder id
        self.placeholder_ids = {name: self.end + i for i, name in enumerate(PLACEHOLDERS)}

    # ---- ids ----
    def token_id(self, axis: str, index: int) -> int:
        return self.offsets[axis] + index

    def is_placeholder(self, token_id: int) -> bool:
        return self.end <= token_id < self.end + len(PLACEHOLDERS)

    def placeholder_axis(self, token_id: int) -> tuple[str, bool]:
        """(axis, is_output) of a placeholder id."""
        name = PLACEHOLDERS[token_id - self.end]
        axis, kind = _PLACEHOLDER_RE.fullmatch(name).groups()
        return axis, kind == "OUTPUT"

    # ---- text ----
    def render(self, text: str, variables: dict[str, list[float]]) -> str:
        """Replace each placeholder by the nearest discrete token of its value (the text a model answers)."""
        cursor = {name: 0 for name in PLACEHOLDERS}

        def sub(match: re.Match[str]) -> str:
            name = match.group(0)
            values = variables.get(PLACEHOLDER_VARIABLES[name], [])
            if cursor[name] >= len(values):
                raise ValueError(f"{name} occurrence {cursor[name] + 1} has no value in {PLACEHOLDER_VARIABLES[name]}")
            value = values[cursor[name]]
            cursor[name] += 1
            axis = match.group(1)
            return coordinate_token(axis, nearest_index(value, self.sizes[axis]))

        return _PLACEHOLDER_RE.sub(sub, text)

    def templatize(self, text: str, kind: str = "OUTPUT") -> tuple[str, dict[str, list[float]]]:
        """Inverse of `render`: discrete tokens -> placeholders of `kind` plus the `variables` values."""
        variables: dict[str, list[float]] = {}

        def sub(match: re.Match[str]) -> str:
            axis, index = match.group(1), int(match.group(2))
            name = f"<{axis}-{kind}>"
            variables.setdefault(PLACEHOLDER_VARIABLES[name], []).append(index_to_value(index, self.sizes[axis]))
            return name

        return _TOKEN_RE.sub(sub, text), variables

    def values(self, text: str) -> list[tuple[str, float]]:
        """The (axis, value) of every well-formed coordinate token in `text`, in order."""
        out = []
        for axis, digits in _TOKEN_RE.findall(text):
            index = int(digits)
            if index < self.sizes[axis]:
                out.append((axis, index_to_value(index, self.sizes[axis])))
        return out
