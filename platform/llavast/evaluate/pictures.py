"""Pictures of a model's predictions next to the ground truth, as matplotlib figures an eval job logs
(`MlflowClient.log_figure`). Pure drawing: no MLflow, no Ray, no I/O, and no pyplot (each function builds a
`matplotlib.figure.Figure` of its own, rendered by the Agg canvas when saved).

    st_figure    STVG / SVG / ELC: a strip of the frames the model saw with the true and predicted boxes, and
                 below it a timeline [0, 1] with the true and predicted spans as horizontal bars
    tvg_figure   TVG: the timeline alone
    rec_figure   REC: the image with the true and predicted boxes

The truth is drawn in `TRUTH_COLOUR` (green), the prediction in `PREDICTION_COLOUR` (red), with a legend.

Coordinates, as the metrics use them (`metrics.py`):
- ST boxes are (x1, y1, x2, y2) in pixels of the ORIGINAL video (W x H = `video_size`): `metrics.truth_frames`
  and `metrics.tube_frames` give them keyed by video frame number. The frames are drawn as decoded, at the
  model's size (S x S), so a box is scaled by (S / W, S / H) on the way.
- REC boxes are normalised xyxy in [0, 1] (`metrics.rec_truth_box`, the parsed answer): scaled by the
  image's width and height.
- Spans are normalised times (start, end) in [0, 1] of the split window (`STTruth.span`, the parsed answer).
- An image is drawn with its pixel edges on integer coordinates (extent 0..S), so a box's continuous
  coordinates land where the metrics put them: box (20, 10, 120, 60) of a 200 x 100 video on 50 x 50 frames
  is the rectangle at (5, 5), 25 wide, 25 high.

For an ST sample an eval job has them as: frame_numbers = `sampled_frames(split, N)` (the decoded frames),
truth_boxes = `truth_frames(truth, N)`, predicted_boxes = `tube_frames(answer.tube, split, W, H)`,
truth_span = `truth.span()`, predicted_span = the span `st_sample_scores` scores (STVG: `answer.span`; ELC:
(the true start, `answer.end`); SVG: None).

What is drawn when the inputs are odd (a picture never raises on an answer's values):
- a box is clipped to the image; one with nothing left inside it, or with a non-finite value, is not drawn
  (the frame's title says "pred. outside" / "truth outside"); an inverted box is drawn with sorted corners;
- a missing span (None) is not drawn and its row says "no span"; a span is drawn from its start to its end
  and clipped to [0, 1] by the axis (a reversed span reads "start > end" on its row);
- a box on a frame that is not in the strip is not drawn: the timeline's caption counts them.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

TRUTH_COLOUR = "tab:green"
PREDICTION_COLOUR = "tab:red"
DPI = 80
MAX_WIDTH_IN = 12.0
FRAME_IN = 1.4  # width (and height) of one frame of the strip, in inches
TIMELINE_IN = 0.9  # height of the timeline, in inches

_TRUTH, _PREDICTION = "truth", "prediction"


def st_figure(frames: np.ndarray, frame_numbers: Sequence[int], video_size: tuple[int, int],
              truth_boxes: Mapping[int, Sequence[float]], predicted_boxes: Mapping[int, Sequence[float]],
              truth_span: tuple[float, float] | None, predicted_span: tuple[float, float] | None,
              title: str, max_frames: int = 8) -> Figure:
    """STVG / SVG / ELC: up to `max_frames` of the decoded frames (N, S, S, 3) uint8, each titled with its
    video frame number (`frame_numbers`, one per frame) and carrying the true and predicted boxes of that frame
    (frame number -> xyxy in pixels of the original `video_size` = (W, H)); below, the spans on a timeline.
    Which frames: `strip_positions`. Either span may be None (SVG's prediction has none; "no span")."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (N, S, S, 3), got shape {frames.shape}")
    if len(frame_numbers) != frames.shape[0]:
        raise ValueError(f"{frames.shape[0]} frames but {len(frame_numbers)} frame numbers")
    width, height = video_size
    if width <= 0 or height <= 0:
        raise ValueError(f"video_size must be positive (W, H), got {video_size}")
    numbers = [int(f) for f in frame_numbers]
    truth = {int(f): b for f, b in truth_boxes.items()}
    predicted = {int(f): b for f, b in predicted_boxes.items()}
    positions = strip_positions(numbers, truth.keys() | predicted.keys(), max_frames)

    k = max(len(positions), 1)
    fig_width = min(MAX_WIDTH_IN, max(4.0, FRAME_IN * k))
    frame_in = min(FRAME_IN, fig_width / k)
    fig = _figure(fig_width, frame_in + TIMELINE_IN + 0.9)
    grid = fig.add_gridspec(2, k, height_ratios=[frame_in, TIMELINE_IN])
    scale_y, scale_x = frames.shape[1] / height, frames.shape[2] / width
    size = (frames.shape[2], frames.shape[1])
    for column, position in enumerate(positions):
        number = numbers[position]
        ax = fig.add_subplot(grid[0, column], label=f"frame {number}")
        notes = [f"frame {number}"]
        _show(ax, frames[position])
        for box, colour, gid in ((truth.get(number), TRUTH_COLOUR, _TRUTH),
                                 (predicted.get(number), PREDICTION_COLOUR, _PREDICTION)):
            if box is not None and _draw_box(ax, box, (scale_x, scale_y), size, colour, gid) is None:
                notes.append("truth outside" if gid == _TRUTH else "pred. outside")
        ax.set_title("\n".join(notes), fontsize=7)

    timeline = fig.add_subplot(grid[1, :], label="timeline")
    _timeline(timeline, truth_span, predicted_span)
    shown = {numbers[p] for p in positions}
    missing_truth = len(truth.keys() - shown)
    missing_predicted = len(predicted.keys() - shown)
    caption = f"normalised time of the window; {len(positions)} of {len(numbers)} frames shown"
    if missing_truth or missing_predicted:
        caption += f"; boxes on frames not shown: {missing_truth} true, {missing_predicted} predicted"
    timeline.set_xlabel(caption, fontsize=7)
    _finish(fig, title, fig_width)
    return fig


def tvg_figure(truth_span: tuple[float, float], predicted_span: tuple[float, float] | None, title: str) -> Figure:
    """TVG: the true and predicted spans (normalised times of the video) on a timeline [0, 1]."""
    fig_width = 6.0
    fig = _figure(fig_width, TIMELINE_IN + 0.9)
    ax = fig.add_subplot(label="timeline")
    _timeline(ax, truth_span, predicted_span)
    ax.set_xlabel("normalised time of the video", fontsize=7)
    _finish(fig, title, fig_width)
    return fig


def rec_figure(image: np.ndarray, truth_box: Sequence[float], predicted_box: Sequence[float] | None,
               title: str) -> Figure:
    """REC: the image (H, W, 3) uint8 as the model saw it, with the true and predicted boxes (normalised
    xyxy, scaled by the image's W and H); no predicted box: only the truth is drawn."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be (H, W, 3), got shape {image.shape}")
    fig_width = 4.0
    fig = _figure(fig_width, fig_width + 0.6)
    ax = fig.add_subplot(label="image")
    _show(ax, image)
    notes = []
    for box, colour, gid in ((truth_box, TRUTH_COLOUR, _TRUTH), (predicted_box, PREDICTION_COLOUR, _PREDICTION)):
        if box is None:
            notes.append(f"no {gid}")
        elif _draw_box(ax, box, (image.shape[1], image.shape[0]), (image.shape[1], image.shape[0]), colour,
                       gid) is None:
            notes.append(f"{gid} outside the image")
    if notes:
        ax.set_title(", ".join(notes), fontsize=7)
    _finish(fig, title, fig_width)
    return fig


def strip_positions(frame_numbers: Sequence[int], boxed: Iterable[int], max_frames: int) -> list[int]:
    """The positions (into `frame_numbers`, ascending) of the frames a strip shows: all of them when there are
    at most `max_frames`; else the frames with a box (a frame number in `boxed`) first, `max_frames` of them
    evenly spread if there are more, and the rest of the places filled with frames without a box, evenly
    spread over those."""
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    if len(frame_numbers) <= max_frames:
        return list(range(len(frame_numbers)))
    boxed = set(boxed)
    with_box = [i for i, f in enumerate(frame_numbers) if f in boxed]
    without = [i for i, f in enumerate(frame_numbers) if f not in boxed]
    if len(with_box) >= max_frames:
        return _evenly(with_box, max_frames)
    return sorted(with_box + _evenly(without, max_frames - len(with_box)))


# ---- helpers ----

def _evenly(items: Sequence[int], k: int) -> list[int]:
    """k of the items, evenly spread, first and last included (k <= len(items)); k = 1: the middle one."""
    if k <= 0:
        return []
    if k == 1:
        return [items[len(items) // 2]]
    return [items[round(j * (len(items) - 1) / (k - 1))] for j in range(k)]


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _finish(fig: Figure, title: str, width: float) -> None:
    """Title (shortened to two lines at most) and the legend of the two colours."""
    chars = max(20, int(width * 14))
    fig.suptitle(textwrap.fill(textwrap.shorten(title, 2 * chars, placeholder=" ..."), chars), fontsize=9)
    handles = [Patch(facecolor="none", edgecolor=TRUTH_COLOUR, linewidth=2, label=_TRUTH),
               Patch(facecolor="none", edgecolor=PREDICTION_COLOUR, linewidth=2, label=_PREDICTION)]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=7, frameon=False)


def _show(ax: Axes, image: np.ndarray) -> None:
    """The image with pixel (row, col) covering [col, col + 1) x [row, row + 1): continuous box coordinates."""
    rows, cols = image.shape[:2]
    ax.imshow(image, extent=(0, cols, rows, 0), interpolation="nearest")
    ax.set_xlim(0, cols)
    ax.set_ylim(rows, 0)
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_box(ax: Axes, box: Sequence[float], scale: tuple[float, float], size: tuple[int, int], colour: str,
              gid: str) -> Rectangle | None:
    """Add the box (x1, y1, x2, y2), times `scale` = (x, y) and clipped to the image's `size` = (W, H), as an
    unfilled Rectangle with `gid`; None (nothing drawn) when no part of it is inside or a value is not finite."""
    values = [float(v) for v in box]
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        return None
    (scale_x, scale_y), (cols, rows) = scale, size
    x1, x2 = sorted((values[0] * scale_x, values[2] * scale_x))
    y1, y2 = sorted((values[1] * scale_y, values[3] * scale_y))
    x1, x2 = min(max(x1, 0.0), cols), min(max(x2, 0.0), cols)
    y1, y2 = min(max(y1, 0.0), rows), min(max(y2, 0.0), rows)
    if x2 <= x1 or y2 <= y1:
        return None
    rectangle = Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=2, gid=gid)
    ax.add_patch(rectangle)
    return rectangle


def _timeline(ax: Axes, truth_span: tuple[float, float] | None, predicted_span: tuple[float, float] | None) -> None:
    """Two rows on a [0, 1] time axis: the true span (top) and the predicted one, each a bar with `gid`
    "truth" / "prediction" from its start to its end, or the words "no span"."""
    labels = []
    for row, span, colour, gid in ((1, truth_span, TRUTH_COLOUR, _TRUTH),
                                   (0, predicted_span, PREDICTION_COLOUR, _PREDICTION)):
        if span is None:
            labels.append(f"{gid}: no span")
            ax.text(0.5, row, "no span", ha="center", va="center", fontsize=7, color=colour)
            continue
        start, end = float(span[0]), float(span[1])
        label = f"{gid} [{start:.3f}, {end:.3f}]"
        if not (math.isfinite(start) and math.isfinite(end)):
            labels.append(f"{gid}: not finite")
            continue
        if start > end:
            label += " start > end"
        bars = ax.barh([row], [end - start], left=[start], height=0.6, color=colour, alpha=0.7)
        for bar in bars:
            bar.set_gid(gid)
        labels.append(label)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(-0.6, 1.6)
    ax.set_yticks([1, 0], labels, fontsize=7)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", alpha=0.3)
