"""The ST-Align benchmark format (STVG / ELC / SVG; REFERENCE.md 3.3) and its training-format view.

Benchmark records keep pixel boxes (x, y, w, h) and absolute frame numbers, with `<s>`, `<e>`, `<bbox>`
and `<bboxes>` templates in the text. `to_training_record` renders them as coordinate placeholders with
normalised values (times (f - s) / (e - s) in the split window, x by width, y by height), the form the
tokeniser and the model consume; templates in human turns become INPUT placeholders, in gpt turns OUTPUT.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from llavast import storage
from llavast.data.records import GPT, Task
from llavast.errors import DataError
from llavast.storage import StorageOptions

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class BenchmarkSample:
    """One benchmark question with its ground truth in pixels and absolute frames."""

    index: int
    video_path: str
    width: int
    height: int
    split: tuple[int, int]
    conversations: list[dict[str, str]]
    boxes: dict[int, Box] = field(default_factory=dict)  # frame -> (x, y, w, h), the `<bboxes>` tube
    box: Box | None = None  # the `<bbox>`
    start: int | None = None  # `<s>` frame
    end: int | None = None  # `<e>` frame

    def time(self, frame: int) -> float:
        """A frame's normalised time in the split window, clipped to [0, 1]."""
        s, e = self.split
        return _clip((frame - s) / (e - s)) if e > s else 0.0

    def norm_box(self, box: Box) -> list[float]:
        """(x, y, w, h) pixels -> [x1, y1, x2, y2] normalised and clipped."""
        x, y, w, h = box
        return [_clip(x / self.width), _clip(y / self.height), _clip((x + w) / self.width),
                _clip((y + h) / self.height)]


def _clip(v: float) -> float:
    return min(1.0, max(0.0, float(v)))


def parse_benchmark_record(raw: Any, index: int, uri: str) -> BenchmarkSample:
    where = f"{uri} record {index}"
    try:
        meta = raw["meta"]
        spatial = meta.get("spatial_token") or {}
        times = meta.get("time_token") or {}
        s, e = (int(v) for v in meta["split"])
        sample = BenchmarkSample(
            index=index, video_path=str(raw["video_path"]), width=int(meta["width"]), height=int(meta["height"]),
            split=(s, e), conversations=list(raw["conversations"]),
            boxes={int(k): tuple(map(float, v)) for k, v in (spatial.get("<bboxes>") or {}).items()},
            box=tuple(map(float, spatial["<bbox>"])) if spatial.get("<bbox>") is not None else None,
            start=int(times["<s>"]) if times.get("<s>") is not None else None,
            end=int(times["<e>"]) if times.get("<e>") is not None else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(
            f"{where}: not in the benchmark format ({type(exc).__name__}: {exc}); expected video_path, "
            "meta.{width,height,split,spatial_token,time_token}, conversations") from exc
    if sample.width <= 0 or sample.height <= 0 or not 0 <= s <= e:
        raise DataError(f"{where}: width/height must be positive and 0 <= split start <= end")
    return sample


def read_benchmark(uri: str, options: StorageOptions) -> list[BenchmarkSample]:
    """All samples of a benchmark JSON file (a list of records)."""
    try:
        raw = json.loads(storage.read_text(uri, options))
    except json.JSONDecodeError as exc:
        raise DataError(f"{uri}: not valid JSON: {exc}") from exc
    if not isinstance(raw, list):
        raise DataError(f"{uri}: a benchmark file holds a JSON list of records")
    return [parse_benchmark_record(r, i, uri) for i, r in enumerate(raw)]


def to_training_record(sample: BenchmarkSample, task: Task, source: str = "benchmark") -> dict[str, Any]:
    """The sample as a training-format record (placeholders + `variables`) for the tokeniser and metrics."""
    variables: dict[str, list[float]] = {}

    def put(axis: str, kind: str, value: float) -> str:
        key = {"TEMP": "temporal", "HEIGHT": "spatial_height", "WIDTH": "spatial_width"}[axis]
        variables.setdefault(f"{key}_{kind.lower()}_locations", []).append(value)
        return f"<{axis}-{kind}>"

    def box_text(box: list[float], kind: str) -> str:
        x1, y1, x2, y2 = box
        return (f"[{put('WIDTH', kind, x1)},{put('HEIGHT', kind, y1)},"
                f"{put('WIDTH', kind, x2)},{put('HEIGHT', kind, y2)}]")

    def render(text: str, kind: str) -> str:
        out, i = [], 0
        while i < len(text):
            for template in ("<bboxes>", "<bbox>", "<s>", "<e>"):
                if text.startswith(template, i):
                    out.append(_render_template(template, sample, kind, put, box_text))
                    i += len(template)
                    break
            else:
                out.append(text[i])
                i += 1
        return "".join(out)

    turns = [{"from": t["from"], "value": render(t["value"], "OUTPUT" if t["from"] == GPT else "INPUT")}
             for t in sample.conversations]
    return {"id": f"{source}-{sample.index}", "video": sample.video_path, "conversations": turns,
            "variables": variables, "meta": {"split": list(sample.split)}, "task": task.value}


def _render_template(template: str, sample: BenchmarkSample, kind: str, put: Any, box_text: Any) -> str:
    if template in ("<s>", "<e>"):
        frame = sample.start if template == "<s>" else sample.end
        if frame is None:
            raise DataError(f"benchmark record {sample.index} uses {template} but meta.time_token has none")
        return put("TEMP", kind, sample.time(frame))
    if template == "<bbox>":
        if sample.box is None:
            raise DataError(f"benchmark record {sample.index} uses <bbox> but meta.spatial_token has none")
        return box_text(sample.norm_box(sample.box), kind)
    parts = [f"{put('TEMP', kind, sample.time(f))}:{box_text(sample.norm_box(b), kind)}"
             for f, b in sorted(sample.boxes.items())]
    return ", ".join(parts)
