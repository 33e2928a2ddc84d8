"""Benchmark readers and eval prompts: hand-written expected prompts, ground truth, ids, quarantine, synth split."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

from llavast import storage
from llavast.data.prompts import REC_PROMPTS, SPAN_PHRASES
from llavast.data.records import VARIABLE_KEYS
from llavast.data.synth import SynthSpec, synthesize
from llavast.data.synth_media import COLOURS, SHAPES
from llavast.data.tokenize import ConversationTokenizer
from llavast.data.validate import validate_record
from llavast.errors import DataError
from llavast.evaluate.benchmarks import (
    RECSample,
    STSample,
    TVGSample,
    read_benchmark,
    read_charades,
    read_refcoco,
    read_st_align,
)
from llavast.evaluate.metrics import frame_to_time
from llavast.evaluate.prompts import build_prompt, sample_rng
from llavast.storage import StorageOptions
from model_zoo.contract import PLACEHOLDER_VARIABLES, MediaKind
from model_zoo.llava_st import build_tiny_tokenizer, tiny_config
from model_zoo.llava_st.vocab import add_coordinate_tokens

OPTS = StorageOptions()
STVG_INSTRUCTION = ("Please firstly give the timestamps, and then give the spatial bounding box corresponding to "
                    "each timestamp in the time period.")
SVG_INSTRUCTION = "Please give the spatial bounding box corresponding to each timestamp in the time period."
ELC_INSTRUCTION = ("Please firstly give the end timestamp, then give the event associated with the object/subject, "
                   "finally give the spatial bounding box corresponding to each timestamp in the time period.")


def _write(tmp_path: Path, name: str, data: Any) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def _st(question: str, answer: str, *, split: tuple[int, int] = (10, 40), start: int | None = 17,
        end: int | None = 31, box: list[float] | None = None, **extra: Any) -> dict[str, Any]:
    spatial: dict[str, Any] = {"<bboxes>": {"17": [20, 10, 40, 30], "31": [60, 20, 20, 50]}}
    if box is not None:
        spatial["<bbox>"] = box
    times = {k: v for k, v in (("<s>", start), ("<e>", end)) if v is not None}
    return {"video_path": "vidstg/1.mp4", "meta": {"width": 200, "height": 100, "split": list(split),
                                                   "spatial_token": spatial, "time_token": times},
            "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}], **extra}


def _only(variables: dict[str, list[float]]) -> dict[str, list[float]]:
    assert set(variables) == set(VARIABLE_KEYS)
    return {k: v for k, v in variables.items() if v}


# ---- ST-Align: hand-written expected prompts ----

def test_stvg_prompt(tmp_path: Path) -> None:
    record = _st("<video>\nAt which time interval in the video can we see a child holds a bat occurring? Please "
                 "describe the location of the corresponding subject/object in this video.",
                 "During the span of {<s>,<e>}. Object bounding box: <bboxes>")
    read = read_st_align(_write(tmp_path, "stvg.json", [record]), "stvg", OPTS)
    prompt = build_prompt(read.samples[0], seed=0)
    assert prompt.text == (
        "<video>\nAt which time interval in the video can we see a child holds a bat occurring? Please describe "
        "the location of the corresponding subject/object in this video.Please firstly give the timestamps, and "
        "then give the spatial bounding box corresponding to each timestamp in the time period.")
    assert _only(prompt.variables) == {}
    assert prompt.conversations == [{"from": "human", "value": prompt.text}]
    assert (prompt.id, prompt.task, prompt.media_kind, prompt.media, prompt.choice) == (
        "0", "stvg", MediaKind.VIDEO, "vidstg/1.mp4", None)
    truth = prompt.sample.truth
    assert truth.split == (10, 40) and (truth.start, truth.end) == (17, 31)
    assert truth.span() == (0.233, 0.7)  # (17 - 10) / 30, (31 - 10) / 30, 3 decimals
    assert dict(truth.boxes) == {17: (20.0, 10.0, 40.0, 30.0), 31: (60.0, 20.0, 20.0, 50.0)}


def test_elc_prompt_box_clipped_start_rounded(tmp_path: Path) -> None:
    record = _st("<video>\nStarts in <s>, what happened about the subject/object within the specified region "
                 "<bbox>? Where is the corresponding subject/object located?",
                 "Ends in <e>, the child swings the bat. Object bounding box: <bboxes>",
                 box=[150, 80, 70, 40], id="elc-7")
    read = read_st_align(_write(tmp_path, "elc.json", [record]), "elc", OPTS)
    prompt = build_prompt(read.samples[0], seed=0)
    assert prompt.text == (
        "<video>\n Starts in <TEMP-INPUT> , what happened about the subject/object within the specified region  "
        "[<WIDTH-INPUT><HEIGHT-INPUT><WIDTH-INPUT><HEIGHT-INPUT>]? Where is the corresponding subject/object "
        "located?Please firstly give the end timestamp, then give the event associated with the object/subject, "
        "finally give the spatial bounding box corresponding to each timestamp in the time period.")
    # x1 = 150/200, y1 = 80/100, x2 = 220/200 -> 1, y2 = 120/100 -> 1; start (17 - 10) / 30 = 0.2333 -> 0.233
    assert _only(prompt.variables) == {"temporal_input_locations": [0.233],
                                       "spatial_width_input_locations": [0.75, 1.0],
                                       "spatial_height_input_locations": [0.8, 1.0]}
    assert prompt.id == "elc-7" and prompt.sample.id == "elc-7"
    assert prompt.sample.answer.startswith("Ends in <e>, the child swings the bat.")


def test_svg_prompt_phrase_from_seed(tmp_path: Path) -> None:
    record = _st("<video>\nFrom <s> to <e>, who does the adult in white clothes watch?", "<bboxes>",
                 split=(100, 199), start=133, end=160)
    read = read_st_align(_write(tmp_path, "svg.json", [record]), "svg", OPTS)
    prompt = build_prompt(read.samples[0], seed=0)
    assert prompt.choice == "During the period"  # sample_rng(0, "0").choice(SPAN_PHRASES)
    assert prompt.text == ("<video>\nDuring the period  {<TEMP-INPUT><TEMP-INPUT>} , who does the adult in white "
                           "clothes watch?Please give the spatial bounding box corresponding to each timestamp in "
                           "the time period.")
    assert _only(prompt.variables) == {"temporal_input_locations": [0.333, 0.606]}  # 33/99, 60/99
    other = build_prompt(read.samples[0], seed=1)
    assert other.choice == "Between"
    assert other.text.startswith("<video>\nBetween  {<TEMP-INPUT><TEMP-INPUT>} , who")


def test_other_templates_and_marker_moved_to_front(tmp_path: Path) -> None:
    """A span written `{<s>,<e>}` is rewritten like "From <s> to <e>"'s; a bare `<s>` stays a plain number (as
    the release leaves it); a marker not at the front moves there."""
    record = _st("During {<s>, <e>} the dog runs; it is seen at <s>. Where is it?<video>", "<bboxes>")
    prompt = build_prompt(read_st_align(_write(tmp_path, "svg.json", [record]), "svg", OPTS).samples[0])
    assert prompt.choice is None
    assert prompt.text == ("<video>\nDuring  {<TEMP-INPUT><TEMP-INPUT>}  the dog runs; it is seen at 0.233. "
                           "Where is it?" + SVG_INSTRUCTION)
    assert _only(prompt.variables) == {"temporal_input_locations": [0.233, 0.7]}


def test_phrase_choice_is_deterministic_and_covers_the_list() -> None:
    picks = {str(i): sample_rng(5, str(i)).choice(SPAN_PHRASES) for i in range(200)}
    assert set(picks.values()) == set(SPAN_PHRASES)
    assert picks == {str(i): sample_rng(5, str(i)).choice(SPAN_PHRASES) for i in range(200)}
    assert picks != {str(i): sample_rng(6, str(i)).choice(SPAN_PHRASES) for i in range(200)}


def test_prompt_tokenises_as_training(tmp_path: Path) -> None:
    """The ConversationTokenizer puts each variable on its placeholder, in order, as for training records."""
    record = _st("<video>\nStarts in <s>, what is in <bbox>? From <s> to <e>, where?", "x <bboxes>",
                 box=[20, 10, 40, 30])
    prompt = build_prompt(read_st_align(_write(tmp_path, "elc.json", [record]), "elc", OPTS).samples[0])
    config = tiny_config()
    tokenizer = build_tiny_tokenizer()
    add_coordinate_tokens(tokenizer, config)
    sample = ConversationTokenizer(tokenizer, config, max_length=4096)(prompt.conversations, prompt.variables,
                                                                       prompt.media_kind)
    ids = sample.input_ids.tolist()
    for placeholder, key in PLACEHOLDER_VARIABLES.items():
        token = tokenizer.convert_tokens_to_ids(placeholder)
        values = [sample.coord_values[i] for i, t in enumerate(ids) if t == token]
        assert values == prompt.variables[key], placeholder
    assert prompt.variables["temporal_input_locations"] == [0.233, 0.233, 0.7]
    assert np.count_nonzero(sample.labels != -100) == 0
    assert validate_record({"video": prompt.media, "variables": prompt.variables,
                            "conversations": prompt.conversations + [{"from": "gpt", "value": "-"}]}) is None


# ---- Charades-STA and RefCOCO ----

def test_charades_prompt_and_truth(tmp_path: Path) -> None:
    records = [{"image_id": "3MSZA.mp4", "caption": "Person opens a door .", "timestamp": [0.1, 0.45]},
               {"image_id": "AB12C.mp4", "caption": "A person SITS down.", "timestamp": [0, 1], "id": 42}]
    read = read_benchmark("tvg", _write(tmp_path, "charades.json", records), OPTS)
    assert [s.id for s in read.samples] == ["0", "42"] and not read.quarantined
    sample = read.samples[0]
    assert isinstance(sample, TVGSample) and sample.span == (0.1, 0.45) and sample.video == "3MSZA.mp4"
    prompt = build_prompt(sample, seed=0)
    assert prompt.text == ("<video>\nGive you a textual query: 'person opens a door'. When does the described "
                           "content occur in the video? Please return the start and end timestamps.")
    assert _only(prompt.variables) == {} and prompt.media_kind == MediaKind.VIDEO
    assert "'a person sits down'" in build_prompt(read.samples[1]).text


def test_refcoco_prompt_and_truth(tmp_path: Path) -> None:
    data = {"images": [{"id": 11, "file_name": "COCO_1.jpg", "width": 640, "height": 480,
                        "caption": "the man on the left"},
                       {"id": 12, "file_name": "COCO_2.jpg", "width": 100, "height": 100, "caption": "Red Cup"}],
            "annotations": [{"id": 11, "bbox": [64, 48, 320, 240]}, {"id": 12, "bbox": [90, 95, 20, 10]}]}
    read = read_benchmark("rec", _write(tmp_path, "refcoco.json", data), OPTS)
    assert [s.id for s in read.samples] == ["11", "12"] and not read.quarantined
    sample = read.samples[0]
    assert isinstance(sample, RECSample) and sample.truth == (0.1, 0.1, 0.6, 0.6)
    assert read.samples[1].truth == (0.9, 0.95, 1.0, 1.0)  # clipped to the image
    prompt = build_prompt(sample, seed=0)
    assert prompt.choice == "Where does {expression} appear in this image?"  # sample_rng(0, "11")
    assert prompt.text == "<image>\nWhere does the man on the left appear in this image?"
    assert prompt.media_kind == MediaKind.IMAGE and prompt.media == "COCO_1.jpg" and _only(prompt.variables) == {}
    assert build_prompt(read.samples[1], seed=3).text.split("\n", 1)[1] in {
        t.format(expression="Red Cup") for t in REC_PROMPTS}


# ---- quarantine ----

def _good_st() -> dict[str, Any]:
    return _st("<video>\nFrom <s> to <e>, where is it?", "<bboxes>")


def _bad_st(change: str) -> Any:
    record = _good_st()
    if change == "not_an_object":
        return [record]
    if change == "format":
        del record["meta"]["width"]
    elif change == "split":
        record["meta"]["split"] = [40, 10]
    elif change == "value_range":
        record["meta"]["time_token"]["<e>"] = 41
    elif change == "roles":
        record["conversations"] = record["conversations"][:1]
    elif change == "media_path":
        record["video_path"] = "/abs/1.mp4"
    elif change == "media_marker":
        record["conversations"][0]["value"] = "From <s> to <e>, where is it?"
    elif change == "template":
        record["conversations"][0]["value"] += " Near <bbox>?"
    elif change == "ground_truth":
        record["meta"]["spatial_token"]["<bboxes>"] = {}
    return record


ST_REASONS = ["not_an_object", "format", "split", "value_range", "roles", "media_path", "media_marker", "template",
              "ground_truth"]


@pytest.mark.parametrize("reason", ST_REASONS)
def test_st_align_quarantine(tmp_path: Path, reason: str) -> None:
    read = read_st_align(_write(tmp_path, "b.json", [_good_st(), _bad_st(reason), _good_st()]), "svg", OPTS)
    assert [s.index for s in read.samples] == [0, 2]
    assert [(q.index, q.reason) for q in read.quarantined] == [(1, reason)]
    assert read.quarantined_by_reason == {reason: 1}


def test_st_align_more_quarantine(tmp_path: Path) -> None:
    no_start = _good_st()
    del no_start["meta"]["time_token"]["<s>"]
    no_start["conversations"][0]["value"] = "<video>\nWhere is it?"
    tube_in_question = _good_st()
    tube_in_question["conversations"][0]["value"] += " <bboxes>"
    negative_box = _st("<video>\nStarts in <s>, <bbox>?", "Ends in <e>, x. Object bounding box: <bboxes>",
                       box=[1, 2, -3, 4])
    records = [dict(_good_st(), id="a"), dict(_good_st(), id="a"), no_start, tube_in_question, negative_box]
    uri = _write(tmp_path, "b.json", records)
    read = read_st_align(uri, "stvg", OPTS)
    assert [(q.index, q.id, q.reason) for q in read.quarantined] == [
        (1, "a", "duplicate_id"), (2, None, "ground_truth"), (3, None, "template"), (4, None, "value_range")]
    assert [s.id for s in read.samples] == ["a"]
    assert len(read_st_align(uri, "svg", OPTS).samples) == 2  # SVG needs no <s>/<e> unless it asks with them


@pytest.mark.parametrize(("record", "reason"), [
    ("x", "not_an_object"),
    ({"image_id": "a.mp4", "caption": "c"}, "format"),
    ({"image_id": "a.mp4", "caption": " . ", "timestamp": [0.1, 0.2]}, "format"),
    ({"image_id": "a.mp4", "caption": "c", "timestamp": [0.1, "0.2"]}, "format"),
    ({"image_id": "../a.mp4", "caption": "c", "timestamp": [0.1, 0.2]}, "media_path"),
    ({"image_id": "a.mp4", "caption": "c", "timestamp": [0.1, 1.5]}, "value_range"),
    ({"image_id": "a.mp4", "caption": "c", "timestamp": [0.6, 0.2]}, "value_range"),
    ({"image_id": "a.mp4", "caption": "c", "timestamp": [0.1, 0.2], "id": "ok"}, "duplicate_id"),
])
def test_charades_quarantine(tmp_path: Path, record: Any, reason: str) -> None:
    good = {"image_id": "a.mp4", "caption": "c", "timestamp": [0.1, 0.2], "id": "ok"}
    read = read_charades(_write(tmp_path, "c.json", [good, record]), OPTS)
    assert [s.id for s in read.samples] == ["ok"]
    assert [(q.index, q.reason) for q in read.quarantined] == [(1, reason)]


@pytest.mark.parametrize(("image", "ann", "reason"), [
    ("x", {"id": 2, "bbox": [0, 0, 1, 1]}, "not_an_object"),
    ({"id": 2, "file_name": "b.jpg", "width": 10, "caption": "c"}, {"id": 2, "bbox": [0, 0, 1, 1]}, "format"),
    ({"id": 2, "file_name": "b.jpg", "width": 10, "height": 10, "caption": "c"}, {"id": 2, "bbox": [0, 0, 1]},
     "format"),
    ({"id": 2, "file_name": "b.jpg", "width": 10, "height": 10, "caption": "c"}, {"id": 3, "bbox": [0, 0, 1, 1]},
     "id_mismatch"),
    ({"id": 2, "file_name": "s3://x/b.jpg", "width": 10, "height": 10, "caption": "c"},
     {"id": 2, "bbox": [0, 0, 1, 1]}, "media_path"),
    ({"id": 2, "file_name": "b.jpg", "width": 0, "height": 10, "caption": "c"}, {"id": 2, "bbox": [0, 0, 1, 1]},
     "value_range"),
    ({"id": 2, "file_name": "b.jpg", "width": 10, "height": 10, "caption": "c"}, {"id": 2, "bbox": [0, 0, -1, 1]},
     "value_range"),
    ({"id": 1, "file_name": "b.jpg", "width": 10, "height": 10, "caption": "c"}, {"id": 1, "bbox": [0, 0, 1, 1]},
     "duplicate_id"),
])
def test_refcoco_quarantine(tmp_path: Path, image: Any, ann: Any, reason: str) -> None:
    good = ({"id": 1, "file_name": "a.jpg", "width": 10, "height": 10, "caption": "c"}, {"id": 1, "bbox": [1, 1, 2, 2]})
    data = {"images": [good[0], image], "annotations": [good[1], ann]}
    read = read_refcoco(_write(tmp_path, "r.json", data), OPTS)
    assert [s.id for s in read.samples] == ["1"]
    assert [(q.index, q.reason) for q in read.quarantined] == [(1, reason)]


def test_refcoco_unpaired_tail(tmp_path: Path) -> None:
    image = {"id": 1, "file_name": "a.jpg", "width": 10, "height": 10, "caption": "c"}
    data = {"images": [image, dict(image, id=2)], "annotations": [{"id": 1, "bbox": [1, 1, 2, 2]}]}
    read = read_refcoco(_write(tmp_path, "r.json", data), OPTS)
    assert [s.id for s in read.samples] == ["1"]
    assert [(q.index, q.id, q.reason) for q in read.quarantined] == [(1, "2", "unpaired")]


@pytest.mark.parametrize("task", ["stvg", "tvg", "rec"])
def test_unreadable_file_is_data_error(tmp_path: Path, task: str) -> None:
    with pytest.raises(DataError, match="cannot read benchmark file"):
        read_benchmark(task, str(tmp_path / "missing.json"), OPTS)
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    with pytest.raises(DataError, match="not valid JSON"):
        read_benchmark(task, str(bad), OPTS)
    wrong = _write(tmp_path, "wrong.json", [] if task == "rec" else {"images": []})
    with pytest.raises(DataError, match="holds"):
        read_benchmark(task, wrong, OPTS)


def test_reads_file_uris(tmp_path: Path) -> None:
    uri = "file://" + _write(tmp_path, "c.json", [{"image_id": "a.mp4", "caption": "c", "timestamp": [0, 0.5]}])
    assert len(read_benchmark("tvg", uri, OPTS).samples) == 1


# ---- the synthetic benchmark split goes through the same readers ----

def test_synthetic_benchmark_split(tmp_path: Path) -> None:
    result = synthesize(str(tmp_path / "synth"), OPTS, SynthSpec(videos=0, images=0, benchmark_videos=3, seed=1))
    assert set(result.benchmark) == {"stvg", "svg", "elc", "tvg", "rec"}
    for task in ("stvg", "svg", "elc"):
        read = read_benchmark(task, result.benchmark[task], OPTS)
        assert not read.quarantined and [s.id for s in read.samples] == ["0", "1", "2"]
        for sample in read.samples:
            assert isinstance(sample, STSample)
            prompt = build_prompt(sample, seed=0)
            assert prompt.text.startswith("<video>\n") and prompt.text.count("<video>") == 1
            span = sample.truth.span()
            given = prompt.variables["temporal_input_locations"]
            if task == "svg":  # the span the question gives is the one tIoU would use
                assert prompt.choice in SPAN_PHRASES and given == list(span)
            if task == "elc":  # the start the question gives is the start ELC's tIoU uses
                assert given == [span[0]] and len(prompt.variables["spatial_width_input_locations"]) == 2
                assert given[0] == frame_to_time(sample.record.start, sample.record.split)
            if task == "stvg":
                assert _only(prompt.variables) == {}
            assert validate_record({"video": prompt.media, "variables": prompt.variables,
                                    "conversations": prompt.conversations + [{"from": "gpt", "value": "-"}]}) is None


def _near(pixels: np.ndarray, colour: str, tolerance: int = 40) -> np.ndarray:
    """Where `pixels` (..., 3) are within `tolerance` of the synthetic colour on every channel."""
    return (np.abs(pixels.astype(int) - np.array(COLOURS[colour])) <= tolerance).all(axis=-1)


def _named(text: str) -> tuple[str, str]:
    match = re.search(rf"\b({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})\b", text)
    assert match, text
    return match.group(1), match.group(2)


def test_synthetic_tvg_split_spans_are_where_the_named_object_is_drawn(tmp_path: Path) -> None:
    result = synthesize(str(tmp_path / "synth"), OPTS, SynthSpec(videos=0, images=0, benchmark_videos=4, seed=1))
    read = read_benchmark("tvg", result.benchmark["tvg"], OPTS)
    assert not read.quarantined and [s.id for s in read.samples] == ["0", "1", "2", "3"]
    for i, sample in enumerate(read.samples):
        assert isinstance(sample, TVGSample) and sample.video == f"benchmark/videos/bench_{i:05d}.mp4"
        colour, _ = _named(sample.caption)
        start, end = sample.span
        assert 0.0 <= start < end <= 1.0
        with av.open(io.BytesIO(storage.read_bytes(storage.join(result.root, sample.video), OPTS))) as container:
            frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        seen = [f for f, frame in enumerate(frames) if _near(frame, colour).sum() >= 4]
        last = len(frames) - 1
        first_frame, last_frame = round(start * last), round(end * last)
        assert start * last == pytest.approx(first_frame) and end * last == pytest.approx(last_frame)
        # the colour first and last shows at the span's ends (one frame of slack for the codec), never outside
        # them, and in (nearly) every frame between: the other object may pass over it for a frame or two
        assert seen and abs(seen[0] - first_frame) <= 1 and abs(seen[-1] - last_frame) <= 1, (
            sample.id, colour, seen, (first_frame, last_frame))
        assert len(seen) >= 0.8 * (last_frame - first_frame + 1), (sample.id, colour, seen)
        prompt = build_prompt(sample, seed=0)
        assert prompt.text.startswith("<video>\n") and f"'the {colour}" in prompt.text


def test_synthetic_rec_split_boxes_are_the_drawn_objects(tmp_path: Path) -> None:
    result = synthesize(str(tmp_path / "synth"), OPTS,
                        SynthSpec(videos=0, images=0, benchmark_videos=0, benchmark_images=8, seed=1))
    assert set(result.benchmark) == {"rec"}
    read = read_benchmark("rec", result.benchmark["rec"], OPTS)
    assert not read.quarantined and [s.id for s in read.samples] == [str(i) for i in range(8)]
    for i, sample in enumerate(read.samples):
        assert isinstance(sample, RECSample) and sample.image == f"benchmark/images/bench_img_{i:05d}.png"
        colour, _ = _named(sample.expression)
        with Image.open(io.BytesIO(storage.read_bytes(storage.join(result.root, sample.image), OPTS))) as image:
            pixels = np.asarray(image.convert("RGB"))
        assert (sample.width, sample.height) == (pixels.shape[1], pixels.shape[0])
        x, y, w, h = (int(v) for v in sample.bbox)
        assert w > 0 and h > 0 and all(v == int(v) for v in sample.bbox)
        near = _near(pixels, colour, tolerance=2)
        inside = np.zeros(near.shape, dtype=bool)
        inside[y:y + h, x:x + w] = True
        ring = np.zeros(near.shape, dtype=bool)
        ring[max(0, y - 2):y + h + 2, max(0, x - 2):x + w + 2] = True
        ring &= ~inside
        assert near[inside].sum() >= 0.75 * w * h, (sample.id, colour)  # a circle fills pi/4 of its box
        assert not near[ring].any() and not near[~inside].any(), (sample.id, colour)
        # the box touches the object on every side: each edge row/column of the box holds the colour
        assert near[y, x:x + w].any() and near[y + h - 1, x:x + w].any()
        assert near[y:y + h, x].any() and near[y:y + h, x + w - 1].any()
        assert sample.expression in build_prompt(sample, seed=0).text


def test_synthetic_tvg_rec_files_deterministic_and_optional(tmp_path: Path) -> None:
    def synth(name: str, **sizes: int) -> tuple[Any, dict[str, bytes]]:
        result = synthesize(str(tmp_path / name), OPTS, SynthSpec(videos=0, images=0, **sizes))
        root = tmp_path / name
        files = {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "benchmark").rglob("*"))
                 if p.is_file() and (p.name in ("tvg.json", "rec.json") or p.parent.name == "images")}
        return result, files

    a, files_a = synth("a", benchmark_videos=2, benchmark_images=3, seed=4)
    _, files_b = synth("b", benchmark_videos=2, benchmark_images=3, seed=4)
    assert len(files_a) == 2 + 3 and files_a == files_b
    assert storage.read_bytes(a.benchmark["rec"], OPTS) == files_a["benchmark/rec.json"]
    _, files_other = synth("other", benchmark_videos=2, benchmark_images=3, seed=5)
    assert files_other["benchmark/rec.json"] != files_a["benchmark/rec.json"]
    assert files_other["benchmark/tvg.json"] != files_a["benchmark/tvg.json"]
    none, files_none = synth("none", benchmark_videos=2, benchmark_images=0, seed=4)
    assert "rec" not in none.benchmark and set(files_none) == {"benchmark/tvg.json"}
    # the TVG file does not depend on the number of benchmark images
    assert files_none["benchmark/tvg.json"] == files_a["benchmark/tvg.json"]
    novid, files_novid = synth("novid", benchmark_videos=0, benchmark_images=3, seed=4)
    assert set(novid.benchmark) == {"rec"} and files_novid == {k: v for k, v in files_a.items() if "tvg" not in k}
