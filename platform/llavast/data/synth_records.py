"""The synthetic data's training records: each video's and image's conversations in ST-Align's training format
(REFERENCE.md 3.1), every coordinate written as a placeholder with its value (`Coords`), the questions of the
benchmark's tasks in the benchmark's prompt forms (`data/prompts.py`)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llavast.data.prompts import INSTRUCTIONS, REC_PROMPTS, TVG_PROMPT, tvg_caption
from llavast.data.synth_media import MovingObject
from llavast.data.synth_video import Video


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
class RecordBuilder:
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


def video_records(b: RecordBuilder, v: Video, rng: np.random.Generator, prompts: np.random.Generator) -> None:
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


def image_records(b: RecordBuilder, path: str, objects: list[MovingObject], width: int, height: int,
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


def single_image_records(b: RecordBuilder, path: str, obj: MovingObject, width: int, height: int,
                          prompts: np.random.Generator) -> None:
    """The spatial warm-up's record about an image of one shape: REC in a RefCOCO prompt form."""
    media = ("image", path)
    box = obj.norm_box(0, width, height)
    c = Coords()
    question = REC_PROMPTS[int(prompts.integers(0, len(REC_PROMPTS)))].format(expression=f"the {obj.name}")
    b.add("rec_single", media, [question, c.box(box, "OUTPUT")], c)


def single_video_records(b: RecordBuilder, v: Video, prompts: np.random.Generator) -> None:
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
