"""A sweep's search space: its parameters, the points of its discrete part, and the constraints that remove
points before any trial starts.

Parameters (`PARAMETERS`): the coordinate vocabularies M_t/M_h/M_w, the packer's k1, k2 and sigma (model
config overrides), the learning rate (`train.lr`) and the LoRA rank (`lora.r`). Each is given as a list of
`values`, or (lr only) a `uniform`/`loguniform` range. The discrete part is the cartesian product of every
`values` list; each of its points is checked against the model's shapes at the job's settings:

    W1 % k1 == 0, k1 % k2 == 0, N % sigma == 0, M_* >= 2   (the packer's windows and the bins' math)
    visual tokens per video k2^2 N + k1^2 sigma <= max_visual_tokens
    estimated activation memory per worker <= max_activation_gib

A removed point is reported with its reason; a space with no valid point is an error naming the constraints.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llavast.config.sweep import CONTINUOUS, MODEL_PARAMETERS, PARAMETERS
from llavast.errors import ConfigError

PAPER_VISUAL_TOKENS = 2520  # k2^2 N + k1^2 sigma at the paper's N=100, k1=9, k2=3, sigma=20


@dataclass(frozen=True)
class Shapes:
    """What the constraints need of the model and the job: the fixed shapes and the parameters' defaults."""

    grid_size: int  # W1: patches per side of a frame
    num_frames: int  # N
    hidden_size: int  # D of the LLM
    num_layers: int  # LLM layers
    num_heads: int  # LLM attention heads
    text_tokens: int  # the job's token budget beside the video (data.max_length), capped for the estimate
    micro_batch_size: int
    gradient_checkpointing: bool
    defaults: Mapping[str, int]  # m_t, m_h, m_w, k1, k2, sigma of the base model


def visual_tokens(k1: int, k2: int, sigma: int, num_frames: int) -> int:
    """Tokens of one video after the packer: N_s + N_t = k2^2 N + k1^2 sigma."""
    return k2 * k2 * num_frames + k1 * k1 * sigma


def activation_gib(tokens: int, shapes: Shapes) -> float:
    """Activation memory of the LLM for one micro-batch of `tokens`-long sequences at 16-bit precision, after
    Korthikanti et al. (2022), eq. 2: s*b*h*(34 + 5*a*s/h) bytes per layer; with gradient checkpointing only
    each layer's input (2*s*b*h bytes) is kept, plus one layer recomputed. An estimate, to rank and bound
    points: it leaves out the vision tower, the packer and the logits."""
    s, b, h, a = tokens, shapes.micro_batch_size, shapes.hidden_size, shapes.num_heads
    layer = s * b * h * (34 + 5 * a * s / h)
    total = (2 * s * b * h * shapes.num_layers + layer) if shapes.gradient_checkpointing else layer * shapes.num_layers
    return total / 2**30


@dataclass(frozen=True)
class Point:
    """One point of the discrete space: its parameter values (only the swept ones), and what it costs."""

    values: dict[str, Any]  # integers, and the learning rate when it is given as values
    tokens: int  # visual tokens per video
    activation_gib: float

    @property
    def key(self) -> str:
        """A stable text key ("k1=3,sigma=2"): how searchers see the point (Optuna's choices must be scalars)."""
        return ",".join(f"{k}={v}" for k, v in sorted(self.values.items()))

    @property
    def relative_tokens(self) -> float:
        return self.tokens / PAPER_VISUAL_TOKENS


@dataclass(frozen=True)
class Space:
    """The valid points, the removed ones with their reasons, and the continuous ranges."""

    valid: list[Point]
    removed: list[tuple[dict[str, int], str]]
    ranges: dict[str, tuple[str, float, float]]  # name -> (uniform | loguniform, low, high)

    def removed_by_reason(self) -> dict[str, int]:
        return dict(Counter(reason for _, reason in self.removed))

    def point(self, key: str) -> Point:
        for p in self.valid:
            if p.key == key:
                return p
        raise KeyError(f"{key!r} is not a valid point of this sweep's space")


def point_problem(values: Mapping[str, int], shapes: Shapes, max_tokens: int | None,
                  max_gib: float | None) -> tuple[str | None, int, float]:
    """(why the point is invalid or None, its visual tokens, its activation estimate)."""
    v = {**shapes.defaults, **values}
    tokens = visual_tokens(v["k1"], v["k2"], v["sigma"], shapes.num_frames)
    gib = activation_gib(tokens + shapes.text_tokens, shapes)
    for name in ("m_t", "m_h", "m_w"):
        if v[name] < 2:
            return f"{name} >= 2", tokens, gib
    if shapes.grid_size % v["k1"]:
        return f"W1 % k1 == 0 (W1={shapes.grid_size})", tokens, gib
    if v["k1"] % v["k2"]:
        return "k1 % k2 == 0", tokens, gib
    if shapes.num_frames % v["sigma"]:
        return f"N % sigma == 0 (N={shapes.num_frames})", tokens, gib
    if max_tokens is not None and tokens > max_tokens:
        return f"visual tokens <= {max_tokens}", tokens, gib
    if max_gib is not None and gib > max_gib:
        return f"activation memory <= {max_gib:g} GiB", tokens, gib
    return None, tokens, gib


def build_space(space: Mapping[str, Any], shapes: Shapes, max_tokens: int | None = None,
                max_gib: float | None = None) -> Space:
    """The discrete product filtered by the constraints; a ConfigError when no point survives."""
    discrete = {name: [float(v) if name in CONTINUOUS else int(v) for v in spec.values]
                for name, spec in space.items() if spec.values is not None}
    ranges = {name: (spec.kind, spec.low, spec.high) for name, spec in space.items() if spec.values is None}
    names = sorted(discrete)
    valid, removed = [], []
    for combo in itertools.product(*(discrete[n] for n in names)):
        values = dict(zip(names, combo, strict=True))
        problem, tokens, gib = point_problem(values, shapes, max_tokens, max_gib)
        if problem is None:
            valid.append(Point(values, tokens, gib))
        else:
            removed.append((values, problem))
    if not valid:
        reasons = Counter(reason for _, reason in removed)
        raise ConfigError("the sweep's space has no valid point: every one of its "
                          f"{len(removed)} points breaks a constraint ("
                          + "; ".join(f"{reason}: {n}" for reason, n in reasons.most_common()) + ")")
    return Space(valid, removed, ranges)


def space_rows(points: Sequence[Point], shapes: Shapes) -> list[dict[str, Any]]:
    """One table row per point: every model parameter (swept or default), tokens, tokens vs the paper, memory."""
    rows = []
    for p in points:
        values = {**shapes.defaults, **{k: v for k, v in p.values.items() if k in MODEL_PARAMETERS}}
        rows.append({**{k: values[k] for k in MODEL_PARAMETERS},
                     **{k: p.values[k] for k in p.values if k not in MODEL_PARAMETERS},
                     "visual_tokens": p.tokens, "vs_paper": round(p.relative_tokens, 3),
                     "activation_gib": round(p.activation_gib, 3)})
    return rows


def shapes_of(config: Any, max_length: int, micro_batch_size: int, gradient_checkpointing: bool) -> Shapes:
    """The Shapes of a LLaVA-ST-like model config at a job's settings. The text beside the video is counted
    as min(max_length - video tokens, 512) for the estimate: a whole 32k budget is rarely used."""
    text = config.text_config
    return Shapes(grid_size=config.grid_size, num_frames=config.num_frames, hidden_size=text.hidden_size,
                  num_layers=text.num_hidden_layers, num_heads=text.num_attention_heads,
                  text_tokens=max(0, min(max_length - config.video_seq_len, 512)),
                  micro_batch_size=micro_batch_size, gradient_checkpointing=gradient_checkpointing,
                  defaults={k: int(getattr(config, k)) for k in MODEL_PARAMETERS})


def assignments(point: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's parameter values as job fields: `model.overrides.<m|k|sigma>`, `train.lr`, `lora.r`."""
    fields: dict[str, Any] = {}
    for name, value in point.items():
        if name in MODEL_PARAMETERS:
            fields[f"model.overrides.{name}"] = int(value)
        elif name == "lr":
            fields["train.lr"] = float(value)
        elif name == "lora_r":
            fields["lora.r"] = int(value)
        else:
            raise ConfigError(f"unknown sweep parameter {name!r}; expected one of {', '.join(PARAMETERS)}")
    return fields


def paper_table(k1s: Sequence[int], k2s: Sequence[int], sigmas: Sequence[int], num_frames: int = 100
                ) -> list[dict[str, Any]]:
    """Visual tokens per video over packer settings at N frames (docs/tuning.md's table)."""
    rows = []
    for k1, k2, sigma in itertools.product(k1s, k2s, sigmas):
        if k1 % k2 or num_frames % sigma:
            continue
        tokens = visual_tokens(k1, k2, sigma, num_frames)
        rows.append({"k1": k1, "k2": k2, "sigma": sigma, "N_s = k2^2 N": k2 * k2 * num_frames,
                     "N_t = k1^2 sigma": k1 * k1 * sigma, "visual tokens": tokens,
                     "vs paper": round(tokens / PAPER_VISUAL_TOKENS, 3)})
    return rows
