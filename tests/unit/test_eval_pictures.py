"""The eval pictures' geometry, read back through matplotlib's object API (not their appearance)."""

from io import BytesIO

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from llavast.evaluate.pictures import (
    DPI,
    MAX_WIDTH_IN,
    PREDICTION_COLOUR,
    TRUTH_COLOUR,
    rec_figure,
    st_figure,
    strip_positions,
    tvg_figure,
)


def frames(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def image_axes(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.images]


def frame_axes(fig: Figure) -> dict[int, object]:
    """Image axes by the frame number their label names ("frame 20")."""
    return {int(ax.get_label().split()[1]): ax for ax in image_axes(fig)}


def timeline(fig: Figure):
    (ax,) = [ax for ax in fig.axes if ax.get_label() == "timeline"]
    return ax


def rectangles(ax, gid: str) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle) and p.get_gid() == gid]


def geometry(rectangle: Rectangle) -> tuple[float, float, float, float]:
    x, y = rectangle.get_xy()
    return (x, y, rectangle.get_width(), rectangle.get_height())


def bars(fig: Figure, gid: str) -> list[tuple[float, float]]:
    """(start, end) of each span bar with that gid on the timeline."""
    return [(r.get_x(), r.get_x() + r.get_width()) for r in rectangles(timeline(fig), gid)]


def st(truth_boxes=None, predicted_boxes=None, truth_span=(0.2, 0.5), predicted_span=(0.6, 0.9), *, n=4,
       size=50, video_size=(200, 100), numbers=None, max_frames=8) -> Figure:
    numbers = list(range(0, 10 * n, 10)) if numbers is None else numbers
    return st_figure(frames(n, size), numbers, video_size, truth_boxes or {}, predicted_boxes or {}, truth_span,
                     predicted_span, "STVG: the person who opens the door", max_frames=max_frames)


# ---- ST strip: boxes scaled from the original video's pixels to the decoded frames ----

def test_st_boxes_are_scaled_from_video_pixels_to_the_frames():
    fig = st({10: (20, 10, 120, 60)}, {10: (0, 0, 100, 50)})
    axes = frame_axes(fig)
    assert sorted(axes) == [0, 10, 20, 30]
    assert [geometry(r) for r in rectangles(axes[10], "truth")] == [(5, 5, 25, 25)]
    assert [geometry(r) for r in rectangles(axes[10], "prediction")] == [(0, 0, 25, 25)]
    assert to_rgba(TRUTH_COLOUR) != to_rgba(PREDICTION_COLOUR)
    assert to_rgba(rectangles(axes[10], "truth")[0].get_edgecolor()) == to_rgba(TRUTH_COLOUR)
    assert to_rgba(rectangles(axes[10], "prediction")[0].get_edgecolor()) == to_rgba(PREDICTION_COLOUR)
    for number in (0, 20, 30):
        assert len(axes[number].patches) == 0


def test_st_scales_each_axis_by_its_own_ratio():
    # a 100 x 200 (W x H) video on 50 x 50 frames: x * 0.5, y * 0.25
    fig = st({0: (10, 20, 30, 60)}, video_size=(100, 200))
    assert [geometry(r) for r in rectangles(frame_axes(fig)[0], "truth")] == [(5, 5, 10, 10)]


def test_st_frames_keep_their_pixel_grid():
    ax = frame_axes(st())[0]
    assert ax.images[0].get_extent() == [0, 50, 50, 0]
    assert ax.get_xlim() == (0, 50) and ax.get_ylim() == (50, 0)


def test_st_boxes_are_clipped_and_outside_boxes_are_not_drawn():
    fig = st({0: (-40, -20, 100, 60), 20: (120, 60, 20, 10)},
             {0: (300, 0, 400, 50), 10: (float("nan"), 0, 10, 10), 20: (150, 50, 400, 400)})
    axes = frame_axes(fig)
    assert [geometry(r) for r in rectangles(axes[0], "truth")] == [(0, 0, 25, 30)]
    assert rectangles(axes[0], "prediction") == []
    assert "pred. outside" in axes[0].get_title()
    assert len(axes[10].patches) == 0 and "pred. outside" in axes[10].get_title()
    assert [geometry(r) for r in rectangles(axes[20], "truth")] == [(5, 5, 25, 25)]  # inverted: corners sorted
    assert [geometry(r) for r in rectangles(axes[20], "prediction")] == [(37.5, 25, 12.5, 25)]


def test_st_strip_shows_at_most_max_frames_boxed_ones_first():
    numbers = list(range(0, 160, 10))
    fig = st({50: (0, 0, 10, 10)}, {70: (0, 0, 10, 10), 75: (0, 0, 10, 10)}, n=16, numbers=numbers, max_frames=4)
    assert len(image_axes(fig)) == 4
    assert sorted(frame_axes(fig)) == [0, 50, 70, 150]
    assert "4 of 16 frames shown; boxes on frames not shown: 0 true, 1 predicted" in timeline(fig).get_xlabel()
    assert len(image_axes(st(n=16, numbers=numbers))) == 8


def test_st_figure_checks_its_inputs():
    with pytest.raises(ValueError, match="frame numbers"):
        st_figure(frames(3, 8), [0, 1], (8, 8), {}, {}, None, None, "t")
    with pytest.raises(ValueError, match=r"\(N, S, S, 3\)"):
        st_figure(frames(3, 8)[..., 0], [0, 1, 2], (8, 8), {}, {}, None, None, "t")


@pytest.mark.parametrize(("n", "boxed", "max_frames", "expected"), [
    (5, set(), 8, [0, 1, 2, 3, 4]),
    (16, set(), 8, [0, 2, 4, 6, 9, 11, 13, 15]),
    (16, {5, 7}, 4, [0, 5, 7, 15]),
    (16, {1, 3, 5, 7, 9}, 3, [1, 5, 9]),
    (16, set(), 1, [8]),
])
def test_strip_positions(n, boxed, max_frames, expected):
    assert strip_positions(list(range(n)), boxed, max_frames) == expected


def test_strip_positions_needs_a_frame():
    with pytest.raises(ValueError, match="max_frames"):
        strip_positions([0, 1], set(), 0)


# ---- timelines ----

def test_st_timeline_has_both_spans_as_bars():
    fig = st()
    assert bars(fig, "truth") == [(0.2, 0.5)]
    assert bars(fig, "prediction") == [pytest.approx((0.6, 0.9))]
    truth_bar, = rectangles(timeline(fig), "truth")
    predicted_bar, = rectangles(timeline(fig), "prediction")
    assert truth_bar.get_y() > predicted_bar.get_y()  # truth on the top row
    assert timeline(fig).get_xlim() == (0.0, 1.0)


def test_a_missing_prediction_draws_only_the_truth():
    fig = st({0: (0, 0, 10, 10)}, {}, predicted_span=None)
    assert bars(fig, "truth") == [(0.2, 0.5)]
    assert bars(fig, "prediction") == []
    assert all(rectangles(ax, "prediction") == [] for ax in image_axes(fig))
    assert "no span" in [t.get_text() for t in timeline(fig).texts]

    fig = tvg_figure((0.1, 0.4), None, "TVG: a person sits down")
    assert image_axes(fig) == []
    assert bars(fig, "truth") == [pytest.approx((0.1, 0.4))]
    assert bars(fig, "prediction") == []
    assert "no span" in [t.get_text() for t in timeline(fig).texts]


def test_tvg_figure_bars_and_odd_spans():
    fig = tvg_figure((0.1, 0.4), (0.3, 1.0), "TVG")
    assert bars(fig, "prediction") == [pytest.approx((0.3, 1.0))]
    fig = tvg_figure((0.1, 0.4), (0.8, 0.5), "TVG")  # reversed: drawn from start to end, and said
    assert bars(fig, "prediction") == [pytest.approx((0.8, 0.5))]
    assert any("start > end" in label.get_text() for label in timeline(fig).get_yticklabels())


# ---- REC ----

def test_rec_boxes_are_scaled_from_normalised_units():
    fig = rec_figure(frames(1, 50)[0], (0.1, 0.2, 0.5, 0.6), (0.5, 0.5, 1.5, 1.2), "REC: the left dog")
    (ax,) = image_axes(fig)
    assert [geometry(r) for r in rectangles(ax, "truth")] == [pytest.approx((5, 10, 20, 20))]
    assert [geometry(r) for r in rectangles(ax, "prediction")] == [(25, 25, 25, 25)]  # clipped to the image


def test_rec_without_prediction_draws_only_the_truth():
    (ax,) = image_axes(rec_figure(frames(1, 40)[0], (0.0, 0.0, 0.5, 0.25), None, "REC"))
    assert [geometry(r) for r in rectangles(ax, "truth")] == [(0, 0, 20, 10)]
    assert rectangles(ax, "prediction") == []
    assert "no prediction" in ax.get_title()


# ---- the PNG an eval job logs ----

def test_pictures_save_as_small_pngs_without_pyplot():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    numbers = list(range(8))
    figures = [
        st_figure(frames(8, 64), numbers, (640, 360), {f: (100, 50, 400, 300) for f in numbers},
                  {f: (120, 40, 380, 320) for f in numbers}, (0.1, 0.6), (0.2, 0.7), "STVG " * 60),
        tvg_figure((0.1, 0.4), (0.3, 0.9), "TVG"),
        rec_figure(frames(1, 64)[0], (0.1, 0.1, 0.5, 0.5), (0.2, 0.2, 0.6, 0.6), "REC"),
    ]
    assert plt.get_fignums() == before  # nothing registered with pyplot's global state
    for fig in figures:
        buffer = BytesIO()
        fig.savefig(buffer, format="png")
        data = buffer.getvalue()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(data) < 200_000
        with Image.open(BytesIO(data)) as png:
            assert png.size[0] <= MAX_WIDTH_IN * DPI
