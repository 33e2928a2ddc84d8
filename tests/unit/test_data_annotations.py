"""Annotation reading: JSON/JSONL parsing, mixture YAMLs, sampling strategies, task detection, benchmark."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from llavast.data.annotations import SamplingStrategy, load_mixture, parse_annotations, sample_indices
from llavast.data.benchmark import parse_benchmark_record, to_training_record
from llavast.data.records import Task
from llavast.data.tasks import detect_task
from llavast.data.validate import validate_record
from llavast.errors import ConfigError, DataError
from llavast.storage import StorageOptions

OPTS = StorageOptions()


@pytest.mark.parametrize(("text", "n", "expected"), [
    ("all", 10, list(range(10))),
    ("first:3", 10, [0, 1, 2]),
    ("end:3", 10, [7, 8, 9]),
    ("first:25%", 10, [0, 1, 2]),  # ceil(2.5) = 3, as the release rounds percentages up
    ("end:10%", 10, [9]),
    ("first:50", 10, list(range(10))),
])
def test_deterministic_strategies(text: str, n: int, expected: list[int]) -> None:
    assert sample_indices(n, SamplingStrategy.parse(text), seed=0, key="s") == expected


def test_random_strategy_is_seeded_and_without_replacement() -> None:
    strategy = SamplingStrategy.parse("random:30")
    a = sample_indices(100, strategy, seed=1, key="src")
    assert a == sample_indices(100, strategy, seed=1, key="src")
    assert a != sample_indices(100, strategy, seed=2, key="src")
    assert a != sample_indices(100, strategy, seed=1, key="other")
    assert len(set(a)) == 30 and a == sorted(a) and all(0 <= i < 100 for i in a)
    pct = sample_indices(7, SamplingStrategy.parse("random:50%"), seed=0, key="k")
    assert len(pct) == math.ceil(3.5)


@pytest.mark.parametrize("bad", ["some", "first:", "random:x", "first:150%", "last:3"])
def test_bad_strategy(bad: str) -> None:
    with pytest.raises(ValueError):
        SamplingStrategy.parse(bad)


def test_parse_json_list_and_jsonl() -> None:
    assert parse_annotations('[{"id": 1}, {"id": 2}]', "a.json") == [{"id": 1}, {"id": 2}]
    lines = parse_annotations('{"id": 1}\nnot json\n\n{"id": 3}\n', "a.jsonl")
    assert lines[0] == {"id": 1} and lines[2] == {"id": 3} and "line 2" in lines[1].detail
    with pytest.raises(DataError, match="not valid JSON"):
        parse_annotations('[{"id": 1},', "broken.json")


def test_load_mixture_resolves_relative_paths(tmp_path: Path) -> None:
    mix = tmp_path / "mixtures" / "stage2.yaml"
    mix.parent.mkdir()
    mix.write_text(
        "datasets:\n"
        "  - {json_path: ../ann/tvg.json, sampling_strategy: 'random:50%', source: tvg, data_folder: ..}\n"
        "  - {json_path: ../ann/rec.jsonl, task: REG}\n")
    mixture = load_mixture(str(mix), OPTS)
    a, b = mixture.entries
    assert a.json_path == f"file://{tmp_path}/ann/tvg.json" and a.data_folder == f"file://{tmp_path}"
    assert str(a.strategy) == "random:50%"
    assert b.source == "rec" and b.task == Task.RC and b.data_folder == f"file://{tmp_path}/mixtures"


@pytest.mark.parametrize(("yaml_text", "match"), [
    ("datasets: []\n", "non-empty"),
    ("datasets:\n  - {sampling_strategy: all}\n", "json_path"),
    ("datasets:\n  - {json_path: a.json, sampling_strategy: 'most'}\n", r"datasets\[0\]"),
    ("datasets:\n  - {json_path: a.json, source: s}\n  - {json_path: b.json, source: s}\n", "unique"),
    ("datasets:\n  - {json_path: a.json, colour: red}\n", r"datasets\[0\]"),
])
def test_bad_mixture(tmp_path: Path, yaml_text: str, match: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=match):
        load_mixture(str(path), OPTS)


def _rec(human: str, gpt: str | list[str], media: str | None = "video", **extra) -> dict:
    answers = [gpt] if isinstance(gpt, str) else gpt
    turns = []
    for i, answer in enumerate(answers):
        turns += [{"from": "human", "value": human if i == 0 else "and?"}, {"from": "gpt", "value": answer}]
    record = {"conversations": turns, **extra}
    if media:
        record[media] = "x"
    return record


BOX_OUT = "[<WIDTH-OUTPUT>,<HEIGHT-OUTPUT>,<WIDTH-OUTPUT>,<HEIGHT-OUTPUT>]"
BOX_IN = "[<WIDTH-INPUT>,<HEIGHT-INPUT>,<WIDTH-INPUT>,<HEIGHT-INPUT>]"
TASK_CASES = [
    (_rec("<video> find the dog", f"During the span of {{<TEMP-OUTPUT>,<TEMP-OUTPUT>}}. <TEMP-OUTPUT>:{BOX_OUT}"),
     Task.STVG),
    (_rec(f"<video> starts at <TEMP-INPUT> {BOX_IN}", f"Ends in <TEMP-OUTPUT>, x. <TEMP-OUTPUT>:{BOX_OUT}"), Task.ELC),
    (_rec("<video> during {<TEMP-INPUT>,<TEMP-INPUT>} track it", f"<TEMP-OUTPUT>:{BOX_OUT}"), Task.SVG),
    (_rec("<video> when?", "{<TEMP-OUTPUT>,<TEMP-OUTPUT>}"), Task.TVG),
    (_rec("<video> events?", "{<TEMP-OUTPUT>,<TEMP-OUTPUT>} a. {<TEMP-OUTPUT>,<TEMP-OUTPUT>} b."), Task.DVC),
    (_rec("<video> what in {<TEMP-INPUT>,<TEMP-INPUT>}?", "a dog runs"), Task.TR),
    (_rec("<image> where is the dog?", BOX_OUT, media="image"), Task.REC),
    (_rec(f"<image> what is in {BOX_IN}?", "a dog", media="image"), Task.RC),
    (_rec("<image> describe with boxes", f"a dog {BOX_OUT} and a cat {BOX_OUT}", media="image"), Task.DGC),
    (_rec("<video> Describe the video.", "a dog runs"), Task.CAPTION),
    (_rec("<video> What colour is the dog?", "brown"), Task.QA),
    (_rec("<video> hi", ["a", "b"]), Task.CONVERSATION),
    (_rec("<video> Classify the action in the video.", "running"), Task.CLASSIFICATION),
    (_rec("<video> anything", "a", task="dvc"), Task.DVC),
]


@pytest.mark.parametrize(("record", "task"), TASK_CASES)
def test_detect_task(record: dict, task: Task) -> None:
    assert detect_task(record) == task


def test_declared_task_wins() -> None:
    assert detect_task(TASK_CASES[0][0], declared=Task.QA) == Task.QA


def test_benchmark_to_training_record() -> None:
    raw = {
        "video_path": "v/1.mp4",
        "meta": {"width": 200, "height": 100, "split": [10, 30],
                 "spatial_token": {"<bboxes>": {"20": [20, 10, 40, 50], "10": [0, 0, 100, 100]},
                                   "<bbox>": [50, 25, 100, 50]},
                 "time_token": {"<s>": 15, "<e>": 25}},
        "conversations": [{"from": "human", "value": "<video>\nIt starts at <s> in <bbox>. Where does it end?"},
                          {"from": "gpt", "value": "Ends in <e>. Object bounding box: <bboxes>"}],
    }
    sample = parse_benchmark_record(raw, 0, "b.json")
    record = to_training_record(sample, Task.ELC)
    assert validate_record(record) is None
    assert detect_task(record) == Task.ELC
    v = record["variables"]
    assert v["temporal_input_locations"] == [0.25]
    assert v["spatial_width_input_locations"] == [0.25, 0.75]
    assert v["spatial_height_input_locations"] == [0.25, 0.75]
    assert v["temporal_output_locations"] == [0.75, 0.0, 0.5]  # <e>, then frames 10 and 20 in order
    assert v["spatial_width_output_locations"] == [0.0, 0.5, 0.1, 0.3]
    assert v["spatial_height_output_locations"] == [0.0, 1.0, 0.1, 0.6]
    assert record["conversations"][1]["value"].startswith("Ends in <TEMP-OUTPUT>. Object bounding box: <TEMP-OUTPUT>:[")
    with pytest.raises(DataError, match="record 3"):
        parse_benchmark_record({"video_path": "x"}, 3, "b.json")
    json.dumps(record)
