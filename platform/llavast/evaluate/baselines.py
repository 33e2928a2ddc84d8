"""Baselines: answers that do not look at the media, in the release's shapes, scored like any model's.

A model that learned to ground beats these on held-out samples; one that learned only the dataset's habits
does not. Both kinds write one answer per benchmark sample (`render.render_answer`), to be scored with
`llavast eval score` exactly as a model's answers are:

- **constant**: the training set's mean answer for the task (`Priors`, from the training annotations' OUTPUT
  values): TVG its mean span; REC its mean box; STVG, ELC and SVG the mean span (ELC: the mean end; SVG: the span
  the question gives) and a tube holding the mean tube box on every sampled frame inside that span.
- **random**: a span with two uniform ends (sorted), a box with uniform corners (sorted per axis), the same
  tube rule; seeded per sample, so a file is the same every time.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llavast.evaluate.benchmarks import EvalSample, RECSample, STSample, TVGSample
from llavast.evaluate.prompts import sample_rng
from llavast.evaluate.render import render_answer

Box = tuple[float, float, float, float]
_T, _W, _H = "temporal_output_locations", "spatial_width_output_locations", "spatial_height_output_locations"


@dataclass(frozen=True)
class Priors:
    """Mean span and mean box of a task's training answers, normalised units."""

    span: tuple[float, float] = (0.0, 1.0)
    box: Box = (0.25, 0.25, 0.75, 0.75)
    count: int = 0  # training answers averaged


def priors_from_records(records: Iterable[Mapping[str, Any]], task: str) -> Priors:
    """The mean training answer of `task` from training-format records (their `variables`):

    tvg: the first two temporal OUTPUT values are the span; rec: the first box (width values x1, x2 and height
    values y1, y2); stvg/elc/svg: the temporal values start with the span (stvg) or the end (elc), then one time
    per tube box; every box of the tube counts. A task without records keeps the default (the whole clip, the
    centre half of the frame).
    """
    spans: list[tuple[float, float]] = []
    boxes: list[Box] = []
    for record in records:
        v = record.get("variables") or {}
        times, xs, ys = v.get(_T) or [], v.get(_W) or [], v.get(_H) or []
        record_boxes = [(xs[i], ys[i], xs[i + 1], ys[i + 1]) for i in range(0, min(len(xs), len(ys)) - 1, 2)]
        if task == "tvg" and len(times) >= 2:
            spans.append((times[0], times[1]))
        elif task == "rec" and record_boxes:
            boxes.append(record_boxes[0])
        elif task in ("stvg", "svg", "elc"):
            if task == "stvg" and len(times) >= 2:
                spans.append((times[0], times[1]))
            if task == "elc" and times:
                spans.append((0.0, times[0]))
            boxes.extend(record_boxes)
    default = Priors()
    span = (_mean(s for s, _ in spans), _mean(e for _, e in spans)) if spans else default.span
    box = tuple(_mean(b[i] for b in boxes) for i in range(4)) if boxes else default.box
    return Priors(span, box, max(len(spans), len(boxes)))  # type: ignore[arg-type]


def constant_answer(sample: EvalSample, priors: Priors, num_frames: int) -> str:
    """The task's mean training answer for `sample` (module docstring)."""
    if isinstance(sample, TVGSample):
        return render_answer("tvg", span=priors.span)
    if isinstance(sample, RECSample):
        return render_answer("rec", box=priors.box)
    return _st_answer(sample, priors.span, priors.box, num_frames)


def random_answer(sample: EvalSample, num_frames: int, seed: int = 0) -> str:
    """Uniformly random values of the right shape for `sample`, seeded by (seed, sample id)."""
    rng = sample_rng(seed, f"random-baseline|{sample.task}|{sample.id}")
    span = tuple(sorted((rng.random(), rng.random())))
    box = _random_box(rng)
    if isinstance(sample, TVGSample):
        return render_answer("tvg", span=span)
    if isinstance(sample, RECSample):
        return render_answer("rec", box=box)
    return _st_answer(sample, span, box, num_frames)  # type: ignore[arg-type]


def _st_answer(sample: STSample, span: Sequence[float], box: Box, num_frames: int) -> str:
    truth = sample.truth
    if sample.task == "svg":  # the question gives the span
        span = truth.span()
    if sample.task == "elc":  # the question gives the start; the answer says when it ends
        span = (truth.span()[0], max(truth.span()[0], span[1]))
    times = [i / (num_frames - 1) for i in range(num_frames)] if num_frames > 1 else [0.5]
    inside = [t for t in times if span[0] <= t <= span[1]] or [min(times, key=lambda t: abs(t - sum(span) / 2))]
    tube = dict.fromkeys(inside, box)
    return render_answer(sample.task, span=span, end=span[1], tube=tube, caption="it moves")


def _random_box(rng: random.Random) -> Box:
    x1, x2 = sorted((rng.random(), rng.random()))
    y1, y2 = sorted((rng.random(), rng.random()))
    return (x1, y1, x2, y2)


def _mean(values: Iterable[float]) -> float:
    items = list(values)
    return sum(items) / len(items)
