"""The ST-Align benchmark format (STVG / ELC / SVG; REFERENCE.md 3.3) and its training-format view.

Benchmark records keep pixel boxes (x, y, w, h) and absolute frame numbers, with `<s>`, `<e>`, `<bbox>`
and `<bboxes>` templates in the text. `to_training_record` renders them as coordinate placeholders with
normalised values (times (f - s) / (e - s) in the split window, x by width, y by height), the form the
tokeniser and the model consume; templates in human turns become INPUT placeholders, in gpt turns OUTPUT.

`parse_benchmark_record` is the one parser of this format: the eval readers (`llavast.evaluate.benchmarks`)
call it per record and quarantine what it rejects under its `reason`; the eval prompts are built by
`llavast.evaluate.prompts`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from llavast.data.records import GPT, Task
from llavast.errors import DataError

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
    record_id: str | None = None  # the record's own `id`, when it has one

    @property
    def sample_id(self) -> str:
        """The id outside predictions name this sample by: the record's `id`, else its 0-based position."""
        return self.record_id if self.record_id is not None else str(self.index)

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


def round_3(v: float) -> float:
    """A benchmark value as the release writes it: 3 decimals (Python's round), clipped to [0, 1]."""
    return _clip(round(float(v), 3))


class BenchmarkRecordError(DataError):
    """A benchmark record that cannot be used; `reason` is a stable code (the eval readers count them)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _box(value: Any, name: str) -> Box:
    box = tuple(float(v) for v in value)
    if len(box) != 4:
        raise ValueError(f"{name} must be [x, y, w, h], got {value!r}")
    return box  # type: ignore[return-value]


def parse_benchmark_record(raw: Any, index: int, uri: str) -> BenchmarkSample:
    """One record of a benchmark file; `BenchmarkRecordError` (a `DataError`) with a reason when unusable:
    `not_an_object`, `format` (a field missing or of the wrong type), `split` (not 0 <= s <= e),
    `value_range` (width/height not positive, a box not finite or with negative size, `<s>`/`<e>` outside
    the split or `<s>` after `<e>`)."""
    where = f"{uri} record {index}"
    if not isinstance(raw, dict):
        raise BenchmarkRecordError("not_an_object", f"{where}: a {type(raw).__name__}, expected a JSON object")
    try:
        meta = raw["meta"]
        spatial = meta.get("spatial_token") or {}
        times = meta.get("time_token") or {}
        s, e = (int(v) for v in meta["split"])
        conversations = raw["conversations"]
        if not isinstance(conversations, list):
            raise TypeError("conversations must be a list of turns")
        sample = BenchmarkSample(
            index=index, video_path=str(raw["video_path"]), width=int(meta["width"]), height=int(meta["height"]),
            split=(s, e), conversations=list(conversations),
            boxes={int(k): _box(v, f"<bboxes>[{k}]") for k, v in (spatial.get("<bboxes>") or {}).items()},
            box=_box(spatial["<bbox>"], "<bbox>") if spatial.get("<bbox>") is not None else None,
            start=int(times["<s>"]) if times.get("<s>") is not None else None,
            end=int(times["<e>"]) if times.get("<e>") is not None else None,
            record_id=None if raw.get("id") is None else str(raw["id"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BenchmarkRecordError(
            "format", f"{where}: not in the benchmark format ({type(exc).__name__}: {exc}); expected video_path, "
            "meta.{width,height,split,spatial_token,time_token}, conversations") from exc
    if not 0 <= s <= e:
        raise BenchmarkRecordError("split", f"{where}: meta.split {[s, e]} must satisfy 0 <= start <= end")
    if sample.width <= 0 or sample.height <= 0:
        raise BenchmarkRecordError("value_range", f"{where}: meta.width/height must be positive, got "
                                                  f"{sample.width}x{sample.height}")
    named = [("<bbox>", sample.box)] + [(f"<bboxes>[{f}]", b) for f, b in sample.boxes.items()]
    for name, box in named:
        if box is not None and (not all(math.isfinite(v) for v in box) or box[2] < 0 or box[3] < 0):
            raise BenchmarkRecordError("value_range", f"{where}: {name} = {list(box)} is not a finite box with "
                                                      "non-negative width and height")
    for name, frame in (("<s>", sample.start), ("<e>", sample.end)):
        if frame is not None and not s <= frame <= e:
            raise BenchmarkRecordError("value_range", f"{where}: time_token {name} = {frame} is outside the "
                                                      f"split [{s}, {e}]")
    if sample.start is not None and sample.end is not None and sample.start > sample.end:
        raise BenchmarkRecordError("value_range", f"{where}: time_token <s> = {sample.start} is after "
                                                  f"<e> = {sample.end}")
    return sample


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
