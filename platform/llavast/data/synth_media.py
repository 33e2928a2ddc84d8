"""Synthetic media with known ground truth: coloured shapes moving on straight lines, as H.264 mp4 or PNG/JPEG.

Every object has a visible span [first, last] and a linear trajectory inside it, so time spans, boxes and
tubes in the synthetic annotations are exact functions of what is drawn: a model can learn them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np
from PIL import Image

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 230), "yellow": (240, 220, 40),
    "white": (245, 245, 245), "purple": (160, 60, 200), "orange": (250, 140, 20), "cyan": (40, 220, 220),
}
SHAPES = ("square", "circle")
BACKGROUND = (30, 30, 36)


@dataclass(frozen=True)
class MovingObject:
    """A shape of half-size `r` px whose centre moves linearly from `start` to `end` over frames [first, last]."""

    colour: str
    shape: str
    r: float
    first: int
    last: int
    start: tuple[float, float]
    end: tuple[float, float]

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def direction(self) -> str:
        """The dominant direction of motion in image coordinates (y grows downwards)."""
        dx, dy = self.end[0] - self.start[0], self.end[1] - self.start[1]
        if abs(dx) >= abs(dy):
            return "right" if dx >= 0 else "left"
        return "down" if dy >= 0 else "up"

    def visible(self, frame: int) -> bool:
        return self.first <= frame <= self.last

    def centre(self, frame: int) -> tuple[float, float]:
        a = 0.0 if self.last == self.first else (frame - self.first) / (self.last - self.first)
        return (self.start[0] + a * (self.end[0] - self.start[0]), self.start[1] + a * (self.end[1] - self.start[1]))

    def box(self, frame: int, width: int, height: int) -> tuple[float, float, float, float]:
        """Pixel box (x1, y1, x2, y2) of the drawn pixels at `frame`, clipped to the frame."""
        cx, cy = self.centre(frame)
        x1, y1 = max(0, round(cx - self.r)), max(0, round(cy - self.r))
        x2, y2 = min(width, round(cx + self.r)), min(height, round(cy + self.r))
        return float(x1), float(y1), float(x2), float(y2)

    def norm_box(self, frame: int, width: int, height: int) -> tuple[float, float, float, float]:
        """`box` in the answers' units: x1/W, y1/H, x2/W, y2/H."""
        x1, y1, x2, y2 = self.box(frame, width, height)
        return x1 / width, y1 / height, x2 / width, y2 / height


def random_object(rng: np.random.Generator, colour: str, shape: str, frames: int, width: int, height: int,
                  min_span: int = 4, radius: tuple[int, int] = (5, 8)) -> MovingObject:
    """An object of half-size `radius[0]` to `radius[1]` px visible for a random span of at least `min_span`
    frames, moving across most of the frame."""
    r = float(rng.integers(radius[0], radius[1] + 1))
    span = int(rng.integers(min_span, frames + 1))
    first = int(rng.integers(0, frames - span + 1))
    margin = r + 1

    def point() -> tuple[float, float]:
        return float(rng.uniform(margin, width - margin)), float(rng.uniform(margin, height - margin))

    start, end = point(), point()
    while abs(end[0] - start[0]) + abs(end[1] - start[1]) < min(width, height) / 3:
        end = point()
    return MovingObject(colour, shape, r, first, first + span - 1, start, end)


def render_frame(objects: list[MovingObject], frame: int, width: int, height: int) -> np.ndarray:
    """One RGB frame (height, width, 3) uint8 with the objects visible at `frame`, drawn in list order."""
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    ys, xs = np.mgrid[0:height, 0:width]
    for obj in objects:
        if not obj.visible(frame):
            continue
        x1, y1, x2, y2 = (int(v) for v in obj.box(frame, width, height))
        if obj.shape == "square":
            mask = (xs >= x1) & (xs < x2) & (ys >= y1) & (ys < y2)
        else:
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            mask = ((xs + 0.5 - cx) ** 2 + (ys + 0.5 - cy) ** 2) <= obj.r**2
        image[mask] = COLOURS[obj.colour]
    return image


def encode_mp4(frames: np.ndarray, fps: int = 8) -> bytes:
    """H.264 mp4 bytes of (T, H, W, 3) uint8 frames (PyAV, single-threaded so the bytes are reproducible)."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.thread_count = 1
        stream.options = {"preset": "ultrafast", "crf": "18"}
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def encode_image(array: np.ndarray, fmt: str) -> bytes:
    """PNG or JPEG bytes of one (H, W, 3) uint8 image."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt.upper(), **({"quality": 95} if fmt.lower() == "jpeg" else {}))
    return buffer.getvalue()
