"""Writing answers in the release's answer shapes: what a model is trained to say, from known values.

The inverse of `answers.parse_answer`, for answers that do not come from a model: a ground truth rendered
as an answer (it must score perfectly), and baselines (a constant span or box, random answers) scored by the
same `llavast eval score` as any model. Values are normalised [0, 1] units; with `bins` they are written as
coordinate tokens (`<TEMP-k>`, k = round(v (M - 1)) clipped to [0, M - 1]), else as plain numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from llavast.evaluate.answers import CoordinateBins, check_task, elc_reference_caption
from llavast.evaluate.benchmarks import EvalSample, RECSample, STSample, TVGSample
from llavast.evaluate.metrics import frame_to_time, truth_frames


def render_answer(task: str, *, span: Sequence[float] | None = None, end: float | None = None,
                  tube: Mapping[float, Sequence[float]] | None = None, box: Sequence[float] | None = None,
                  caption: str = "", bins: int | CoordinateBins | Mapping[str, int] | None = None) -> str:
    """One answer of `task` in its shape (docs/evaluation.md, "Answers"):

        tvg   {s,e}                       rec   [x1,y1,x2,y2]
        stvg  During the span of {s,e}. Object bounding box: t:[x1,y1,x2,y2], ...
        elc   Ends in e, <caption>. Object bounding box: t:[x1,y1,x2,y2], ...
        svg   t:[x1,y1,x2,y2], ...

    `tube` maps a normalised time to a normalised box (its order is kept).
    """
    task = check_task(task)
    grid = CoordinateBins.of(bins) if bins is not None else None

    def value(axis: str, v: float) -> str:
        if grid is None:
            return repr(float(v))
        m = grid.size(axis)
        return f"<{axis}-{min(max(round(v * (m - 1)), 0), m - 1):03d}>"

    def box_text(b: Sequence[float]) -> str:
        axes = ("WIDTH", "HEIGHT", "WIDTH", "HEIGHT")
        return "[" + ",".join(value(a, v) for a, v in zip(axes, b, strict=True)) + "]"

    def span_text(s: Sequence[float]) -> str:
        return "{" + value("TEMP", s[0]) + "," + value("TEMP", s[1]) + "}"

    tube_text = ", ".join(f"{value('TEMP', t)}:{box_text(b)}" for t, b in (tube or {}).items())
    if task == "tvg":
        return span_text(_needs(span, "span", task))
    if task == "rec":
        return box_text(_needs(box, "box", task))
    if task == "svg":
        return tube_text
    if task == "stvg":
        return f"During the span of {span_text(_needs(span, 'span', task))}. Object bounding box: {tube_text}"
    return (f"Ends in {value('TEMP', _needs(end, 'end', task))}, {caption.rstrip('. ')}. "
            f"Object bounding box: {tube_text}")


def truth_answer(sample: EvalSample, num_frames: int,
                 bins: int | CoordinateBins | Mapping[str, int] | None = None) -> str:
    """The sample's ground truth as an answer: ST-Align's tube on the N sampled frames (each frame's time
    `frame_to_time`, its box divided by the frame size), its span and ELC's end and caption; TVG's span;
    REC's box."""
    if isinstance(sample, TVGSample):
        return render_answer("tvg", span=sample.span, bins=bins)
    if isinstance(sample, RECSample):
        return render_answer("rec", box=sample.truth, bins=bins)
    if not isinstance(sample, STSample):
        raise TypeError(f"not an eval sample: {type(sample).__name__}")
    truth = sample.truth
    w, h = truth.width, truth.height
    tube = {frame_to_time(f, truth.split): (b[0] / w, b[1] / h, b[2] / w, b[3] / h)
            for f, b in sorted(truth_frames(truth, num_frames).items())}
    span = truth.span() if truth.start is not None and truth.end is not None else None
    caption = elc_reference_caption(sample.answer) if sample.task == "elc" else ""
    return render_answer(sample.task, span=span, end=span[1] if span else None, tube=tube, caption=caption,
                         bins=bins)


def _needs(value: object, what: str, task: str) -> object:
    if value is None:
        raise ValueError(f"a {task} answer needs its {what}")
    return value
