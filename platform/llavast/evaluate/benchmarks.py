"""Reading the paper's benchmark files into typed eval samples, quarantining the records that cannot be used.

Three formats (docs/evaluation.md, "Benchmarks and prompts"):
    stvg, svg, elc   the ST-Align benchmark: a JSON list of {video_path, meta, conversations}
                     (parsed by `llavast.data.benchmark.parse_benchmark_record`, the format's one parser)
    tvg              Charades-STA: a JSON list of {image_id (the video), caption, timestamp: [s, e] in [0, 1]}
    rec              RefCOCO/+/g: {images: [{id, file_name, width, height, caption}], annotations: [{id, bbox}]},
                     paired by position, bbox [x, y, w, h] in pixels

A sample's `id` is the record's `id` (as a string) when it has one, else its 0-based position in the file:
outside predictions name samples by it. A record that cannot be used is quarantined with a stable reason
and counted, as training data is (`llavast.data.validate`), and the rest of the file is read; a file that
cannot be read or is not of its format's shape raises `DataError`. Files are read through `llavast.storage`
(local paths, file:// and s3:// alike). Media paths stay relative to the benchmark's data folder.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from llavast import storage
from llavast.data.benchmark import BenchmarkRecordError, BenchmarkSample, parse_benchmark_record, to_training_record
from llavast.data.records import Task
from llavast.data.validate import check_media_path, check_roles, validate_record
from llavast.errors import DataError, LlavastError
from llavast.evaluate.answers import Box, check_task
from llavast.evaluate.metrics import STTruth, rec_truth_box
from llavast.storage import StorageOptions

ST_TASKS = {"stvg": Task.STVG, "svg": Task.SVG, "elc": Task.ELC}
_TEMPLATE_RE = re.compile(r"<bboxes>|<bbox>|<s>|<e>")


@dataclass(frozen=True)
class STSample:
    """An ST-Align benchmark question (STVG, SVG or ELC) with its ground truth in pixels and frames."""

    id: str
    task: str  # "stvg", "svg" or "elc"
    record: BenchmarkSample

    @property
    def index(self) -> int:
        return self.record.index

    @property
    def video(self) -> str:
        return self.record.video_path

    @property
    def question(self) -> str:
        """The first human turn, with its `<s>`/`<e>`/`<bbox>` templates (the prompt is built from it)."""
        return self.record.conversations[0]["value"]

    @property
    def answer(self) -> str:
        """The first gpt turn, with its templates (ELC's reference caption is read from it)."""
        return self.record.conversations[1]["value"]

    @property
    def truth(self) -> STTruth:
        return STTruth.from_sample(self.record)


@dataclass(frozen=True)
class TVGSample:
    """A Charades-STA query: the video (the record's `image_id`), the caption as written, the true span."""

    id: str
    index: int
    video: str
    caption: str
    span: tuple[float, float]  # normalised to [0, 1], as the file gives it
    task: str = "tvg"


@dataclass(frozen=True)
class RECSample:
    """A RefCOCO/+/g referring expression: the image, the expression, its box (x, y, w, h pixels)."""

    id: str
    index: int
    image: str
    expression: str
    width: int
    height: int
    bbox: tuple[float, float, float, float]
    task: str = "rec"

    @property
    def truth(self) -> Box:
        """The ground truth in the answer's units: x1/W, y1/H, x2/W, y2/H, 3 decimals, clipped to [0, 1]."""
        return rec_truth_box(self.bbox, self.width, self.height)


EvalSample = STSample | TVGSample | RECSample


@dataclass(frozen=True)
class Quarantined:
    """A record that was not read: its position, its `id` when it had one, a reason code and what is wrong."""

    index: int
    id: str | None
    reason: str
    detail: str


@dataclass(frozen=True)
class BenchmarkFile:
    """What a reader returns: the usable samples in file order and the quarantined records."""

    task: str
    uri: str
    samples: list[EvalSample]
    quarantined: list[Quarantined]

    @property
    def quarantined_by_reason(self) -> dict[str, int]:
        return dict(sorted(Counter(q.reason for q in self.quarantined).items()))


class _Reader:
    """Collects samples and quarantine lines, and refuses a second sample with an id already read."""

    def __init__(self, task: str, uri: str) -> None:
        self.task, self.uri = task, uri
        self.samples: list[EvalSample] = []
        self.quarantined: list[Quarantined] = []
        self.ids: set[str] = set()

    def reject(self, index: int, raw: Any, reason: str, detail: str) -> None:
        record_id = raw.get("id") if isinstance(raw, dict) else None
        self.quarantined.append(Quarantined(index, None if record_id is None else str(record_id), reason, detail))

    def accept(self, sample: EvalSample, raw: Any) -> None:
        if sample.id in self.ids:
            self.reject(sample.index, raw, "duplicate_id",
                        f"{self.uri} record {sample.index}: id {sample.id!r} was already used by an earlier record")
            return
        self.ids.add(sample.id)
        self.samples.append(sample)

    def result(self) -> BenchmarkFile:
        return BenchmarkFile(self.task, self.uri, self.samples, self.quarantined)


def _load_json(uri: str, options: StorageOptions) -> Any:
    try:
        text = storage.read_text(uri, options)
    except LlavastError as exc:
        raise DataError(f"cannot read benchmark file {uri}: {exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{uri}: not valid JSON ({exc})") from exc


def _json_list(uri: str, options: StorageOptions, what: str) -> list[Any]:
    raw = _load_json(uri, options)
    if not isinstance(raw, list):
        raise DataError(f"{uri}: a {what} file holds a JSON list of records, found a {type(raw).__name__}")
    return raw


def _st_issue(sample: BenchmarkSample, task: str) -> tuple[str, str] | None:
    """Why an ST-Align sample cannot be evaluated on `task`, as (reason, detail), or None."""
    where = f"record {sample.index}"
    issue = check_roles({"conversations": sample.conversations})
    if issue is not None:
        return issue.reason, f"{where}: {issue.detail}"
    have = {"<s>": sample.start, "<e>": sample.end, "<bbox>": sample.box, "<bboxes>": sample.boxes}
    used = sorted({m for t in sample.conversations for m in _TEMPLATE_RE.findall(t["value"])})
    missing = [m for m in used if have[m] is None]
    if missing:
        return "template", f"{where}: the conversation uses {missing} but meta gives no value for them"
    if "<bboxes>" in sample.conversations[0]["value"]:
        return "template", f"{where}: the question holds the ground-truth tube <bboxes>"
    issue = validate_record(to_training_record(sample, ST_TASKS[task]))
    if issue is not None:
        return issue.reason, f"{where}: {issue.detail}"
    needed = ("<bboxes>",) if task == "svg" else ("<s>", "<e>", "<bboxes>")
    absent = [m for m in needed if have[m] is None or (m == "<bboxes>" and not sample.boxes)]
    if absent:
        return "ground_truth", f"{where}: {task} is scored against {', '.join(absent)}, which meta does not give"
    return None


def read_st_align(uri: str, task: str, options: StorageOptions) -> BenchmarkFile:
    """An ST-Align benchmark file (STVG, SVG or ELC) as `STSample`s.

    Quarantine reasons: those of `parse_benchmark_record` (`not_an_object`, `format`, `split`, `value_range`);
    those of the training rules on its training-format view (`roles`, `media_path`, `media_marker`, ...);
    `template` (a `<s>`/`<e>`/`<bbox>` the conversation uses without its value in meta, or `<bboxes>` in the
    question); `ground_truth` (STVG and ELC need `<s>`, `<e>` and a non-empty `<bboxes>`, SVG the tube);
    `duplicate_id`.
    """
    task = check_task(task)
    if task not in ST_TASKS:
        raise ValueError(f"read_st_align reads stvg, svg or elc, not {task}")
    reader = _Reader(task, uri)
    for index, raw in enumerate(_json_list(uri, options, "benchmark")):
        try:
            record = parse_benchmark_record(raw, index, uri)
        except BenchmarkRecordError as exc:
            reader.reject(index, raw, exc.reason, str(exc))
            continue
        issue = _st_issue(record, task)
        if issue is not None:
            reader.reject(index, raw, *issue)
            continue
        reader.accept(STSample(record.sample_id, task, record), raw)
    return reader.result()


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{value!r} is not a number")
    return float(value)


def read_charades(uri: str, options: StorageOptions) -> BenchmarkFile:
    """A Charades-STA file (TVG) as `TVGSample`s.

    Quarantine reasons: `not_an_object`; `format` (`image_id` or `caption` not a non-empty string, `timestamp`
    not two numbers); `media_path` (`image_id` absolute or escaping the data folder); `value_range` (a time
    outside [0, 1] or not finite, or start after end); `duplicate_id`.
    """
    reader = _Reader("tvg", uri)
    for index, raw in enumerate(_json_list(uri, options, "Charades-STA")):
        where = f"{uri} record {index}"
        if not isinstance(raw, dict):
            reader.reject(index, raw, "not_an_object", f"{where}: a {type(raw).__name__}, expected a JSON object")
            continue
        try:
            video, caption, stamp = raw["image_id"], raw["caption"], raw["timestamp"]
            if not isinstance(video, str) or not isinstance(caption, str) or not caption.strip(" ."):
                raise TypeError("image_id and caption must be non-empty strings")
            if not isinstance(stamp, list) or len(stamp) != 2:
                raise TypeError(f"timestamp must be [start, end], got {stamp!r}")
            start, end = _number(stamp[0]), _number(stamp[1])
        except (KeyError, TypeError) as exc:
            reader.reject(index, raw, "format", f"{where}: not in the Charades-STA format ({type(exc).__name__}: "
                                                f"{exc}); expected image_id, caption, timestamp: [start, end]")
            continue
        issue = check_media_path({"video": video})
        if issue is not None:
            reader.reject(index, raw, issue.reason, f"{where}: {issue.detail}")
            continue
        if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in (start, end)) or start > end:
            reader.reject(index, raw, "value_range", f"{where}: timestamp {stamp!r} must be 0 <= start <= end <= 1 "
                                                     "(normalised to the video's length)")
            continue
        sample_id = str(raw["id"]) if raw.get("id") is not None else str(index)
        reader.accept(TVGSample(sample_id, index, video, caption, (start, end)), raw)
    return reader.result()


def read_refcoco(uri: str, options: StorageOptions) -> BenchmarkFile:
    """A RefCOCO/+/g file (REC) as `RECSample`s: `images[i]` pairs with `annotations[i]`.

    The sample's id is the pair's `id` (the image entry's, which must equal the annotation's). Quarantine
    reasons: `not_an_object`; `format` (a field missing or of the wrong type); `id_mismatch` (the pair's ids
    differ: the release stops there); `unpaired` (an entry past the end of the shorter list); `media_path`;
    `value_range` (width/height not positive, bbox not finite or of negative size); `duplicate_id`.
    """
    raw = _load_json(uri, options)
    if not isinstance(raw, dict) or not isinstance(raw.get("images"), list) or not isinstance(
            raw.get("annotations"), list):
        raise DataError(f"{uri}: a RefCOCO file holds {{\"images\": [...], \"annotations\": [...]}}")
    images, annotations = raw["images"], raw["annotations"]
    reader = _Reader("rec", uri)
    for index in range(max(len(images), len(annotations))):
        where = f"{uri} pair {index}"
        if index >= len(images) or index >= len(annotations):
            entry = images[index] if index < len(images) else annotations[index]
            reader.reject(index, entry, "unpaired", f"{where}: {len(images)} images but {len(annotations)} "
                                                    "annotations; they pair by position")
            continue
        image, ann = images[index], annotations[index]
        if not isinstance(image, dict) or not isinstance(ann, dict):
            reader.reject(index, image, "not_an_object", f"{where}: images and annotations entries are objects")
            continue
        try:
            file_name, expression = image["file_name"], image["caption"]
            if not isinstance(file_name, str) or not isinstance(expression, str) or not expression.strip():
                raise TypeError("file_name and caption must be non-empty strings")
            width, height = _number(image["width"]), _number(image["height"])
            bbox = ann["bbox"]
            if not isinstance(bbox, list) or len(bbox) != 4:
                raise TypeError(f"bbox must be [x, y, w, h], got {bbox!r}")
            box = tuple(_number(v) for v in bbox)
            image_id, ann_id = image["id"], ann["id"]
        except (KeyError, TypeError) as exc:
            reader.reject(index, image, "format", f"{where}: not in the RefCOCO format ({type(exc).__name__}: {exc}); "
                                                  "expected images[i].{id,file_name,width,height,caption} and "
                                                  "annotations[i].{id,bbox}")
            continue
        if image_id != ann_id:
            reader.reject(index, image, "id_mismatch", f"{where}: image id {image_id!r} != annotation id {ann_id!r}")
            continue
        issue = check_media_path({"image": file_name})
        if issue is not None:
            reader.reject(index, image, issue.reason, f"{where}: {issue.detail}")
            continue
        if not (width > 0 and height > 0 and all(math.isfinite(v) for v in (width, height, *box))
                and box[2] >= 0 and box[3] >= 0):
            reader.reject(index, image, "value_range", f"{where}: width/height must be positive and bbox {bbox!r} "
                                                       "finite with non-negative w and h")
            continue
        sample_id = str(image_id) if image_id is not None else str(index)
        reader.accept(RECSample(sample_id, index, file_name, expression, int(width), int(height),
                                box), image)  # type: ignore[arg-type]
    return reader.result()


def read_benchmark(task: str, uri: str, options: StorageOptions) -> BenchmarkFile:
    """The benchmark file of `task` (stvg, svg, elc, tvg or rec) read by its format's reader."""
    task = check_task(task)
    if task in ST_TASKS:
        return read_st_align(uri, task, options)
    return read_charades(uri, options) if task == "tvg" else read_refcoco(uri, options)
