"""Synthetic ST-Align: real mp4 videos and images with known trajectories, annotated in the released formats.

Layout written under `out` (any storage URI):
    videos/vid_00000.mp4 ...         H.264, `width` x `height`, 16-48 frames
    images/img_00000.png|jpg ...     two shapes each
    images/single_00000.png ...      one shape each (`single_images`: the spatial warm-up's REC and DGC)
    videos/single_00000.mp4 ...      one larger moving shape each (`single_videos`: the video warm-up's SVG, STVG)
    annotations/<source>.json|jsonl  training format (REFERENCE.md 3.1), one file per source (task)
    mixtures/stage{1,2,3}.yaml       stage mixtures (3.2) with paths relative to themselves
    mixtures/warmup.yaml             the spatial warm-up's mixture, one-shape REC (only with `single_images`)
    mixtures/warmup_video.yaml       the video warm-up's mixture, one-shape SVG and STVG (only with `single_videos`)
    benchmark/videos/bench_00000.mp4 ...       held-out videos
    benchmark/{stvg,elc,svg}.json    benchmark format (3.3) on the held-out videos
    benchmark/tvg.json               Charades-STA format (TVG) on the same held-out videos: one object's caption
                                     and its visible span over the whole video, normalised to [0, 1]
    benchmark/images/bench_img_00000.png ...   held-out images (`benchmark_images`; 0 writes no rec.json)
    benchmark/rec.json               RefCOCO format (REC) on them: one object's expression and pixel box each
    benchmark/rec_others.json        the OTHER object's pixel box [x, y, w, h] per rec.json image id: whether a
                                     model picks the named shape or just a shape (benchmarks/learning.py)
Media paths in the files are relative to `out`. Every time span, box and tube is computed from the drawn
trajectories. The training questions of the benchmark's tasks are asked in the benchmark's prompt forms
(`evaluate/prompts.py`): TVG in the Charades-STA template with an object's motion as the caption, REC in one of
the RefCOCO templates, STVG with the release's instruction appended, so a small model learns the questions it is
evaluated with (it cannot carry an answer over to an unseen phrasing). Same seed, same bytes. The TVG and REC
benchmark choices come from their own generators (seeded `[seed, 1]` and `[seed, 2]`), the training questions'
forms from a third (`[seed, 3]`): the other files' bytes do not depend on them, nor tvg.json on
`benchmark_images`.

Tubes on the model's frames: the data is made for a model that samples N frames per video (`SynthSpec.num_frames`,
4 by default: the tiny model's). An STVG/ELC/SVG training tube has a box on exactly the frames the data path
samples (`media.frame_indices(frames, N, window)`, over the record's split window when it has one) on which the
object is visible, each at that frame's time in the window (`Video.time`, as every other time in the files).
Those are the frames the benchmark scores a tube on (`evaluate.metrics.truth_frames`), so a model that answers as
it was trained can score m_vIoU 100. Every video is drawn so that both its objects are visible on at least one
sampled frame (its objects and window are redrawn from `rng` until they are): no record asks about an object the
model cannot see, and every benchmark tube has frames to score. Same seed and N, same bytes; another N draws
other videos (and so other files).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import yaml

from llavast import storage
from llavast.data.media import frame_indices
from llavast.data.records import Task
from llavast.data.synth_media import (
    COLOURS,
    SHAPES,
    MovingObject,
    encode_image,
    encode_mp4,
    random_object,
    render_frame,
)
from llavast.errors import ConfigError
from llavast.evaluate.prompts import INSTRUCTIONS, REC_PROMPTS, TVG_PROMPT, tvg_caption
from llavast.storage import StorageOptions

log = logging.getLogger(__name__)

SOURCES: dict[str, Task] = {
    "video_caption": Task.CAPTION, "tvg": Task.TVG, "dvc": Task.DVC, "tr": Task.TR, "stvg": Task.STVG,
    "elc": Task.ELC, "svg": Task.SVG, "qa": Task.QA, "classification": Task.CLASSIFICATION,
    "conversation": Task.CONVERSATION, "image_caption": Task.CAPTION, "rec": Task.REC, "rc": Task.RC,
    "dgc": Task.DGC, "rec_single": Task.REC, "svg_single": Task.SVG,
    "stvg_single": Task.STVG,
}
# The warm-ups' mixtures, each written when its media are: one-shape REC alone (mixtures/warmup.yaml, with
# `single_images`), one moving shape's tubes alone (mixtures/warmup_video.yaml, with `single_videos`).
WARMUPS: dict[str, dict[str, str]] = {"warmup": {"rec_single": "all"},
                                      "warmup_video": {"svg_single": "all", "stvg_single": "all"}}
SINGLE_SOURCES = {"rec_single", "svg_single", "stvg_single"}  # written only with single media
SINGLE_VIDEO_RADIUS = (8, 16)  # half-size px of the video warm-up's moving shape (two-shape videos: 5-8)
JSONL_SOURCES = {"video_caption", "tvg", "stvg", "rec", "qa", "dgc", "rec_single", "stvg_single"}
STAGES: dict[int, dict[str, str]] = {  # source -> sampling strategy
    1: {"video_caption": "all"},
    2: {"tvg": "all", "dvc": "all", "tr": "first:90%", "rec": "all", "dgc": "random:80%", "rc": "all",
        "rec_single": "random:25%"},
    3: {"video_caption": "random:50%", "tvg": "all", "dvc": "all", "tr": "all", "stvg": "all", "elc": "all",
        "svg": "all", "qa": "end:30", "classification": "all", "conversation": "all", "image_caption": "all",
        "rec": "all", "rc": "all", "dgc": "all", "rec_single": "random:25%", "svg_single": "random:25%",
        "stvg_single": "random:25%"},
}


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
class SynthResult:
    root: str
    samples: dict[str, int]
    mixtures: dict[int | str, str]  # stage number (or "warmup") -> its mixture's URI
    benchmark: dict[str, str]
    media_bytes: int = 0

    @property
    def total(self) -> int:
        return sum(self.samples.values())


class Coords:
    """Writes coordinate placeholders into text and records their values in order of appearance."""

    def __init__(self) -> None:
        self.variables: dict[str, list[float]] = defaultdict(list)

    def _put(self, axis: str, kind: str, value: float) -> str:
        key = {"TEMP": "temporal", "HEIGHT": "spatial_height", "WIDTH": "spatial_width"}[axis]
        self.variables[f"{key}_{kind.lower()}_locations"].append(round(min(1.0, max(0.0, value)), 4))
        return f"<{axis}-{kind}>"

    def t(self, value: float, kind: str) -> str:
        return self._put("TEMP", kind, value)

    def span(self, start: float, end: float, kind: str) -> str:
        return "{" + self.t(start, kind) + "," + self.t(end, kind) + "}"

    def box(self, box: tuple[float, float, float, float], kind: str) -> str:
        x1, y1, x2, y2 = box
        return (f"[{self._put('WIDTH', kind, x1)},{self._put('HEIGHT', kind, y1)},"
                f"{self._put('WIDTH', kind, x2)},{self._put('HEIGHT', kind, y2)}]")


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


@dataclass
class _Builder:
    records: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))

    def add(self, source: str, media: tuple[str, str], turns: list[str], coords: Coords,
            window: tuple[int, int] | None = None) -> None:
        kind, path = media
        marker = "<video>" if kind == "video" else "<image>"
        conversations = []
        for i, text in enumerate(turns):
            role = "human" if i % 2 == 0 else "gpt"
            conversations.append({"from": role, "value": f"{marker}\n{text}" if i == 0 else text})
        record: dict[str, Any] = {"id": f"{source}-{len(self.records[source]):05d}", kind: path,
                                  "conversations": conversations}
        if coords.variables:
            record["variables"] = dict(coords.variables)
        if window is not None:
            record["meta"] = {"split": list(window)}
        self.records[source].append(record)


def _video_records(b: _Builder, v: Video, rng: np.random.Generator, prompts: np.random.Generator) -> None:
    media = ("video", v.path)
    o1, o2 = v.objects
    first, second = sorted(v.objects, key=lambda o: o.first)
    win = v.window if v.window != (0, v.frames - 1) else None

    c = Coords()
    b.add("video_caption", media, ["Describe the video in detail.",
                                   f"A {o1.name} moves {o1.direction} and a {o2.name} moves {o2.direction}."], c)
    c = Coords()
    asked = v.objects[int(prompts.integers(0, 2))]
    question = TVG_PROMPT.format(caption=tvg_caption(f"The {asked.name} moves {asked.direction}."))
    b.add("tvg", media, [question, c.span(v.time(asked.first), v.time(asked.last), "OUTPUT")], c, win)
    c = Coords()
    events = " ".join(f"{c.span(v.time(o.first), v.time(o.last), 'OUTPUT')} the {o.name} moves {o.direction}."
                      for o in (first, second))
    b.add("dvc", media, ["Describe the events of the video with their time spans.", events], c, win)
    c = Coords()
    b.add("tr", media, [f"What happens during {c.span(v.time(o2.first), v.time(o2.last), 'INPUT')}?",
                        f"The {o2.name} moves {o2.direction}."], c, win)

    def tube(obj: MovingObject, coords: Coords) -> str:
        return ", ".join(f"{coords.t(v.time(f), 'OUTPUT')}:{coords.box(v.norm_box(obj, f), 'OUTPUT')}"
                         for f in v.tube_frames(obj))

    target = v.objects[int(rng.integers(0, 2))]
    c = Coords()
    answer = f"During the span of {c.span(v.time(target.first), v.time(target.last), 'OUTPUT')}. "
    question = f"Find the {target.name} that moves {target.direction}: when is it visible and where?"
    b.add("stvg", media, [question + INSTRUCTIONS["stvg"], answer + f"Object bounding box: {tube(target, c)}"], c,
          win)
    c = Coords()
    question = (f"The {target.name} at {c.box(v.norm_box(target, target.first), 'INPUT')} appears at "
                f"{c.t(v.time(target.first), 'INPUT')}. When does the event end? Describe it.")
    answer = (f"Ends in {c.t(v.time(target.last), 'OUTPUT')}, the {target.name} moves {target.direction}. "
              f"Object bounding box: {tube(target, c)}")
    b.add("elc", media, [question, answer], c, win)
    c = Coords()
    question = f"During {c.span(v.time(target.first), v.time(target.last), 'INPUT')}, where is the {target.name}?"
    b.add("svg", media, [question, tube(target, c)], c, win)
    b.add("qa", media, [f"What colour is the {o1.shape}?", f"{o1.colour.capitalize()}."], Coords())
    b.add("classification", media, [f"Classify the motion of the {o2.name}: left, right, up or down?",
                                    o2.direction], Coords())
    b.add("conversation", media, ["What shapes are in the video?", f"A {o1.shape} and a {o2.shape}.",
                                  f"What colour is the {o2.shape}?", f"{o2.colour.capitalize()}."], Coords())


def _image_records(b: _Builder, path: str, objects: list[MovingObject], width: int, height: int,
                   prompts: np.random.Generator) -> None:
    media = ("image", path)
    o1, o2 = objects

    def box(o: MovingObject) -> tuple[float, float, float, float]:
        return o.norm_box(0, width, height)

    b.add("image_caption", media, ["Describe the image.", f"A {o1.name} and a {o2.name} on a dark background."],
          Coords())
    c = Coords()
    question = REC_PROMPTS[int(prompts.integers(0, len(REC_PROMPTS)))].format(expression=f"the {o2.name}")
    b.add("rec", media, [question, c.box(box(o2), "OUTPUT")], c)
    c = Coords()
    b.add("rc", media, [f"What is in the region {c.box(box(o1), 'INPUT')}?", f"A {o1.name}."], c)
    c = Coords()
    b.add("dgc", media, ["Describe the image and give a box for each object.",
                         f"A {o1.name} {c.box(box(o1), 'OUTPUT')} and a {o2.name} {c.box(box(o2), 'OUTPUT')}."], c)


def _single_image_records(b: _Builder, path: str, obj: MovingObject, width: int, height: int,
                          prompts: np.random.Generator) -> None:
    """The spatial warm-up's record about an image of one shape: REC in a RefCOCO prompt form."""
    media = ("image", path)
    box = obj.norm_box(0, width, height)
    c = Coords()
    question = REC_PROMPTS[int(prompts.integers(0, len(REC_PROMPTS)))].format(expression=f"the {obj.name}")
    b.add("rec_single", media, [question, c.box(box, "OUTPUT")], c)


def _single_video_records(b: _Builder, v: Video, prompts: np.random.Generator) -> None:
    """The video warm-up's records about a video of one moving shape: its tube over a given span (SVG), and its
    span then its tube (STVG, in the benchmark's prompt form)."""
    media = ("video", v.path)
    (obj,) = v.objects
    win = v.window if v.window != (0, v.frames - 1) else None

    def tube(coords: Coords) -> str:
        return ", ".join(f"{coords.t(v.time(f), 'OUTPUT')}:{coords.box(v.norm_box(obj, f), 'OUTPUT')}"
                         for f in v.tube_frames(obj))

    c = Coords()
    question = f"During {c.span(v.time(obj.first), v.time(obj.last), 'INPUT')}, where is the {obj.name}?"
    b.add("svg_single", media, [question, tube(c)], c, win)
    c = Coords()
    question = f"Find the {obj.name} that moves {obj.direction}: when is it visible and where?" + INSTRUCTIONS["stvg"]
    answer = f"During the span of {c.span(v.time(obj.first), v.time(obj.last), 'OUTPUT')}. Object bounding box: "
    b.add("stvg_single", media, [question, answer + tube(c)], c, win)


def _single_object(rng: np.random.Generator, spec: SynthSpec) -> MovingObject:
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


def _make_video(rng: np.random.Generator, spec: SynthSpec, path: str, out: str, options: StorageOptions,
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


def _benchmark_records(v: Video, rng: np.random.Generator) -> dict[str, dict[str, Any]]:
    """One STVG, ELC and SVG record about one object, its questions in the released benchmark's template forms
    ("Starts in <s>", "<bbox>", "From <s> to <e>"), which the eval prompts rewrite as the release does."""
    obj = v.objects[int(rng.integers(0, 2))]

    def xywh(frame: int) -> list[float]:
        x1, y1, x2, y2 = obj.box(frame, v.width, v.height)
        return [x1, y1, x2 - x1, y2 - y1]

    meta = {"width": v.width, "height": v.height, "split": list(v.window),
            "spatial_token": {"<bboxes>": {str(f): xywh(f) for f in range(obj.first, obj.last + 1)},
                              "<bbox>": xywh(obj.first)},
            "time_token": {"<s>": obj.first, "<e>": obj.last}}
    questions = {
        "stvg": (f"Find the {obj.name} that moves {obj.direction}: when is it visible and where?",
                 "During the span of {<s>,<e>}. Object bounding box: <bboxes>"),
        "elc": (f"Starts in <s>, what happens to the {obj.name} within the region <bbox>? Where is it located?",
                f"Ends in <e>, the {obj.name} moves {obj.direction}. Object bounding box: <bboxes>"),
        "svg": (f"From <s> to <e>, where is the {obj.name}?", "<bboxes>"),
    }
    return {task: {"video_path": v.path, "meta": meta,
                   "conversations": [{"from": "human", "value": f"<video>\n{q}"}, {"from": "gpt", "value": a}]}
            for task, (q, a) in questions.items()}


def _tvg_record(v: Video, rng: np.random.Generator) -> dict[str, Any]:
    """A Charades-STA query about one object: its visible span over the whole video (TVG has no split window)."""
    obj = v.objects[int(rng.integers(0, 2))]
    last = max(v.frames - 1, 1)
    return {"image_id": v.path, "caption": f"The {obj.name} moves {obj.direction}.",
            "timestamp": [obj.first / last, obj.last / last]}


def _rec_image(rng: np.random.Generator, spec: SynthSpec, index: int, path: str, root: str,
               options: StorageOptions) -> tuple[dict[str, Any], dict[str, Any], list[float], int]:
    """A held-out image of two still objects and a RefCOCO pair about one of them: (image entry, annotation,
    the other object's box [x, y, w, h], bytes written). The referred object is drawn last, so its box is exactly
    its drawn pixels."""
    objects = shape_pair(rng, 1, spec, still=True)
    pick = int(rng.integers(0, 2))
    target, other = objects[pick], objects[1 - pick]
    data = encode_image(render_frame([other, target], 0, spec.width, spec.height), "png")
    storage.write_bytes(storage.join(root, path), data, options)
    x1, y1, x2, y2 = target.box(0, spec.width, spec.height)
    image = {"id": index, "file_name": path, "width": spec.width, "height": spec.height,
             "caption": f"the {target.name}"}
    ox1, oy1, ox2, oy2 = other.box(0, spec.width, spec.height)
    return image, {"id": index, "bbox": [x1, y1, x2 - x1, y2 - y1]}, [ox1, oy1, ox2 - ox1, oy2 - oy1], len(data)


def _dump(records: list[dict[str, Any]], jsonl: bool) -> str:
    if jsonl:
        return "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    return json.dumps(records, indent=1, sort_keys=True)


def synthesize(out: str, options: StorageOptions, spec: SynthSpec = SynthSpec()) -> SynthResult:
    """Write a synthetic ST-Align tree under `out` (see the module docstring); deterministic under `spec.seed`."""
    rng = np.random.default_rng(spec.seed)
    root = storage.parse(out).uri
    prompts = np.random.default_rng([spec.seed, 3])  # the benchmark prompt forms drawn for training questions
    builder = _Builder()
    media_bytes = 0
    for i in range(spec.videos):
        video, size = _make_video(rng, spec, f"videos/vid_{i:05d}.mp4", root, options)
        media_bytes += size
        _video_records(builder, video, rng, prompts)
    for i in range(spec.images):
        fmt = "png" if i % 2 == 0 else "jpeg"
        path = f"images/img_{i:05d}.{'png' if fmt == 'png' else 'jpg'}"
        objects = shape_pair(rng, 1, spec, still=True)
        data = encode_image(render_frame(objects, 0, spec.width, spec.height), fmt)
        storage.write_bytes(storage.join(root, path), data, options)
        media_bytes += len(data)
        _image_records(builder, path, objects, spec.width, spec.height, prompts)
    single_rng = np.random.default_rng([spec.seed, 4])  # apart from `rng`: the other files keep their bytes
    for i in range(spec.single_images):
        path = f"images/single_{i:05d}.png"
        obj = _single_object(single_rng, spec)
        data = encode_image(render_frame([obj], 0, spec.width, spec.height), "png")
        storage.write_bytes(storage.join(root, path), data, options)
        media_bytes += len(data)
        _single_image_records(builder, path, obj, spec.width, spec.height, single_rng)
    video_rng = np.random.default_rng([spec.seed, 5])  # apart from `rng`: the other files keep their bytes
    for i in range(spec.single_videos):
        video, size = _make_video(video_rng, spec, f"videos/single_{i:05d}.mp4", root, options, moving_single)
        media_bytes += size
        _single_video_records(builder, video, video_rng)
    for source, records in builder.records.items():
        name = f"{source}.jsonl" if source in JSONL_SOURCES else f"{source}.json"
        storage.write_text(storage.join(root, "annotations", name), _dump(records, source in JSONL_SOURCES), options)

    mixtures: dict[int | str, str] = {}
    stages: dict[int | str, dict[str, str]] = {
        **STAGES, **{name: sources for name, sources in WARMUPS.items() if set(sources) <= set(builder.records)}}
    for stage, sources in stages.items():
        datasets = [{"json_path": f"../annotations/{s}.{'jsonl' if s in JSONL_SOURCES else 'json'}",
                     "sampling_strategy": strategy, "source": s, "data_folder": ".."}
                    for s, strategy in sources.items() if s in builder.records or s not in SINGLE_SOURCES]
        uri = storage.join(root, "mixtures", f"stage{stage}.yaml" if isinstance(stage, int) else f"{stage}.yaml")
        storage.write_text(uri, yaml.safe_dump({"datasets": datasets}, sort_keys=False), options)
        mixtures[stage] = uri

    bench: dict[str, list[dict[str, Any]]] = defaultdict(list)
    tvg_rng = np.random.default_rng([spec.seed, 1])  # apart from `rng`: the other files keep their bytes
    for i in range(spec.benchmark_videos):
        video, size = _make_video(rng, spec, f"benchmark/videos/bench_{i:05d}.mp4", root, options)
        media_bytes += size
        for task, record in _benchmark_records(video, rng).items():
            bench[task].append(record)
        bench["tvg"].append(_tvg_record(video, tvg_rng))
    benchmark = {}
    for task, records in bench.items():
        uri = storage.join(root, "benchmark", f"{task}.json")
        storage.write_text(uri, _dump(records, jsonl=False), options)
        benchmark[task] = uri
    if spec.benchmark_images > 0:
        rec_rng = np.random.default_rng([spec.seed, 2])
        refcoco: dict[str, list[dict[str, Any]]] = {"images": [], "annotations": []}
        others: dict[str, list[float]] = {}
        for i in range(spec.benchmark_images):
            image, annotation, other, size = _rec_image(rec_rng, spec, i, f"benchmark/images/bench_img_{i:05d}.png",
                                                        root, options)
            media_bytes += size
            refcoco["images"].append(image)
            refcoco["annotations"].append(annotation)
            others[str(i)] = other
        uri = storage.join(root, "benchmark", "rec.json")
        storage.write_text(uri, json.dumps(refcoco, indent=1, sort_keys=True), options)
        storage.write_text(storage.join(root, "benchmark", "rec_others.json"), json.dumps(others, indent=1), options)
        benchmark["rec"] = uri
    counts = {source: len(records) for source, records in builder.records.items()}
    log.info("synthesized %d samples (%d videos, %d images) under %s", sum(counts.values()), spec.videos,
             spec.images, root)
    return SynthResult(root=root, samples=counts, mixtures=mixtures, benchmark=benchmark, media_bytes=media_bytes)
