"""The synthetic data's media: what a dataset's size is (`SynthSpec`), the shapes a video or image holds, and a
video drawn so that every object is on the frames the model samples (`make_video`), written as H.264."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from llavast import storage
from llavast.data.media import frame_indices
from llavast.data.synth_media import COLOURS, SHAPES, MovingObject, encode_mp4, random_object, render_frame
from llavast.errors import ConfigError
from llavast.storage import StorageOptions

SINGLE_VIDEO_RADIUS = (8, 16)  # half-size px of the video warm-up's moving shape (two-shape videos: 5-8)


@dataclass(frozen=True)
class SynthSpec:
    """Size of the synthetic dataset; the defaults give ~500 samples in a few seconds.

    `num_frames`: the N frames per video of the model the data is for (the tiny model's 4 by default); the
    STVG/ELC/SVG tubes have boxes on the frames it samples (module docstring).
    """

    videos: int = 40
    images: int = 20
    benchmark_videos: int = 6
    benchmark_images: int = 6
    width: int = 96
    height: int = 64
    min_frames: int = 16
    max_frames: int = 48
    fps: int = 8
    seed: int = 0
    num_frames: int = 4
    single_images: int = 0
    single_max_radius: int = 20
    single_videos: int = 0

    def __post_init__(self) -> None:
        if not 5 <= self.single_max_radius < min(self.width, self.height) / 2 - 1:
            raise ConfigError(f"synth single_max_radius must be in [5, {min(self.width, self.height) / 2 - 1:g}) for "
                              f"{self.width} x {self.height} frames (a shape of that half-size must fit), got "
                              f"{self.single_max_radius}")
        if self.num_frames < 1:
            raise ConfigError(f"synth num_frames must be >= 1 (the frames per video of the model the data is for; "
                              f"the tiny model samples 4), got {self.num_frames}")


@dataclass
class Video:
    path: str
    frames: int
    width: int
    height: int
    objects: list[MovingObject]
    window: tuple[int, int]
    num_frames: int  # N of the model the records are for

    def time(self, frame: float) -> float:
        s, e = self.window
        return (frame - s) / (e - s)

    def norm_box(self, obj: MovingObject, frame: int) -> tuple[float, float, float, float]:
        return obj.norm_box(frame, self.width, self.height)

    def sampled(self) -> list[int]:
        """The frames the data path decodes for this video's records (`frame_indices` over the window), once each."""
        return sorted(set(frame_indices(self.frames, self.num_frames, self.window)))

    def tube_frames(self, obj: MovingObject) -> list[int]:
        """Where a tube of `obj` has boxes: the sampled frames on which it is visible (never empty, see
        `_make_video`)."""
        return [f for f in self.sampled() if obj.visible(f)]


def single_object(rng: np.random.Generator, spec: SynthSpec) -> MovingObject:
    """One still shape of half-size 5 to `single_max_radius` px anywhere in the frame, of any colour and shape."""
    r = float(rng.integers(5, spec.single_max_radius + 1))
    centre = (float(rng.uniform(r + 1, spec.width - r - 1)), float(rng.uniform(r + 1, spec.height - r - 1)))
    return MovingObject(str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES)), r, 0, 0, centre, centre)


def shape_pair(rng: np.random.Generator, frames: int, spec: SynthSpec, still: bool = False) -> list[MovingObject]:
    colours = rng.choice(list(COLOURS), size=2, replace=False)
    shapes = list(SHAPES) if rng.random() < 0.5 else list(reversed(SHAPES))
    objects = [random_object(rng, str(c), s, frames, spec.width, spec.height, min_span=min(4, frames))
               for c, s in zip(colours, shapes, strict=True)]
    if still:
        objects = [MovingObject(o.colour, o.shape, o.r, 0, 0, o.start, o.start) for o in objects]
    return objects


_MAX_DRAWS = 10_000


def moving_single(rng: np.random.Generator, frames: int, spec: SynthSpec) -> list[MovingObject]:
    """The video warm-up's one shape: half-size `SINGLE_VIDEO_RADIUS`, any colour and shape, moving over a span."""
    colour, shape = str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES))
    return [random_object(rng, colour, shape, frames, spec.width, spec.height, min_span=min(4, frames),
                          radius=SINGLE_VIDEO_RADIUS)]


def make_video(rng: np.random.Generator, spec: SynthSpec, path: str, out: str, options: StorageOptions,
                draw: Callable[[np.random.Generator, int, SynthSpec], list[MovingObject]] = shape_pair,
                ) -> tuple[Video, int]:
    """A video of the objects `draw` makes (a shape pair by default), each visible on at least one of the N
    frames the data path samples of its window: objects and window are redrawn (from `rng`, so deterministically)
    until they are. A record about an object on none of the model's frames could not be learned, and a benchmark
    tube there has nothing to score."""
    frames = int(rng.integers(spec.min_frames, spec.max_frames + 1))
    for _ in range(_MAX_DRAWS):
        objects = draw(rng, frames, spec)
        window = (0, frames - 1)
        if rng.random() < 0.4:  # a split window around both objects' spans, shorter than the clip
            lo = min(o.first for o in objects)
            hi = max(o.last for o in objects)
            window = (int(rng.integers(0, lo + 1)), int(rng.integers(hi, frames)))
            if window[1] <= window[0]:
                window = (0, frames - 1)
        video = Video(path, frames, spec.width, spec.height, objects, window, spec.num_frames)
        if all(video.tube_frames(o) for o in objects):
            break
    else:  # not seen: even N = 2 on 48 frames succeeds about one draw in ten
        raise RuntimeError(f"no video of {frames} frames with every object on its {spec.num_frames} sampled frames "
                           f"in {_MAX_DRAWS} draws")
    pixels = np.stack([render_frame(objects, f, spec.width, spec.height) for f in range(frames)])
    data = encode_mp4(pixels, spec.fps)
    storage.write_bytes(storage.join(out, path), data, options)
    return video, len(data)
