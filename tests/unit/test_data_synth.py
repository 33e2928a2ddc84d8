"""Synthetic ST-Align: deterministic, valid in the released formats, and true to the drawn pixels."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest

from llavast import storage
from llavast.data.annotations import load_mixture, read_annotations
from llavast.data.benchmark import to_training_record
from llavast.data.records import Task
from llavast.data.synth import SOURCES, SynthSpec, synthesize
from llavast.data.synth_media import BACKGROUND
from llavast.data.tasks import detect_task
from llavast.data.validate import validate_record
from llavast.evaluate.benchmarks import RECSample, TVGSample, read_benchmark, read_st_align
from llavast.storage import StorageOptions

OPTS = StorageOptions()
SPEC = SynthSpec(videos=6, images=4, benchmark_videos=2, seed=3)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    return synthesize(str(tmp_path_factory.mktemp("synth")), OPTS, SPEC).root


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_under_seed(synth_root: str, tmp_path: Path) -> None:
    again = synthesize(str(tmp_path / "again"), OPTS, SPEC)
    first = _files(Path(storage.parse(synth_root).path))
    assert first == _files(tmp_path / "again")
    other = synthesize(str(tmp_path / "other"), OPTS, SynthSpec(videos=6, images=4, benchmark_videos=2, seed=4))
    assert _files(tmp_path / "other") != first
    assert again.total == 6 * 10 + 4 * 4 and other.media_bytes > 0


def test_records_valid_and_tasks_detected(synth_root: str) -> None:
    seen = set()
    for stage in (1, 2, 3):
        mixture = load_mixture(storage.join(synth_root, "mixtures", f"stage{stage}.yaml"), OPTS)
        tasks = set()
        for entry in mixture.entries:
            for record in read_annotations(entry.json_path, OPTS):
                assert validate_record(record) is None, record
                media = record.get("video") or record.get("image")
                assert storage.exists(storage.join(entry.data_folder, media), OPTS)
                task = detect_task(record)
                assert task == SOURCES[entry.source], (entry.source, record)
                tasks.add(task)
        seen |= tasks
        if stage == 1:
            assert tasks == {Task.CAPTION}
        if stage == 2:
            assert tasks == {Task.TVG, Task.DVC, Task.TR, Task.REC, Task.DGC, Task.RC}
    assert seen == set(Task)


def test_benchmark_converts_to_valid_records(synth_root: str) -> None:
    for name, task in (("stvg", Task.STVG), ("elc", Task.ELC), ("svg", Task.SVG)):
        read = read_st_align(storage.join(synth_root, "benchmark", f"{name}.json"), name, OPTS)
        assert len(read.samples) == SPEC.benchmark_videos and not read.quarantined
        for sample in read.samples:
            record = to_training_record(sample.record, task)
            assert validate_record(record) is None
            record.pop("task")
            assert detect_task(record) == task


def test_benchmark_tvg_and_rec_counts(synth_root: str) -> None:
    """One Charades-STA query per held-out video and one RefCOCO pair per held-out image, all media present."""
    tvg = read_benchmark("tvg", storage.join(synth_root, "benchmark", "tvg.json"), OPTS)
    rec = read_benchmark("rec", storage.join(synth_root, "benchmark", "rec.json"), OPTS)
    assert not tvg.quarantined and not rec.quarantined
    assert len(tvg.samples) == SPEC.benchmark_videos and len(rec.samples) == SPEC.benchmark_images == 6
    assert all(isinstance(s, TVGSample) for s in tvg.samples) and all(isinstance(s, RECSample) for s in rec.samples)
    assert [s.video for s in tvg.samples] == [f"benchmark/videos/bench_{i:05d}.mp4"
                                              for i in range(SPEC.benchmark_videos)]
    images = sorted(p.name for p in (Path(storage.parse(synth_root).path) / "benchmark" / "images").iterdir())
    assert images == [f"bench_img_{i:05d}.png" for i in range(SPEC.benchmark_images)]
    for sample in rec.samples:
        assert isinstance(sample, RECSample) and storage.exists(storage.join(synth_root, sample.image), OPTS)


def test_tubes_point_at_drawn_objects(synth_root: str) -> None:
    """Every STVG tube box centre, mapped back to its frame and pixels, lands on a drawn object."""
    for record in read_annotations(storage.join(synth_root, "annotations", "stvg.jsonl"), OPTS):
        data = storage.read_bytes(storage.join(synth_root, record["video"]), OPTS)
        with av.open(io.BytesIO(data)) as container:
            frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        t, height, width = frames.shape[:3]
        s, e = record.get("meta", {}).get("split", [0, t - 1])
        v = record["variables"]
        times = v["temporal_output_locations"][2:]  # the span comes first, then one time per box
        xs, ys = v["spatial_width_output_locations"], v["spatial_height_output_locations"]
        for k, time in enumerate(times):
            frame = round(s + time * (e - s))
            cx = (xs[2 * k] + xs[2 * k + 1]) / 2 * width
            cy = (ys[2 * k] + ys[2 * k + 1]) / 2 * height
            pixel = frames[frame, int(cy), int(cx)].astype(int)
            assert np.abs(pixel - np.array(BACKGROUND)).sum() > 60, (record["id"], frame, pixel)


def test_training_questions_of_benchmark_tasks_use_the_benchmark_prompt_forms(synth_root: str) -> None:
    """A small model answers only the phrasings it trained on: TVG, REC and STVG training questions are asked in
    the forms the eval prompts use (evaluate/prompts.py), about the object their answer locates."""
    from llavast.evaluate.prompts import INSTRUCTIONS, REC_PROMPTS, TVG_PROMPT

    root = storage.parse(synth_root).path
    tvg_head, tvg_tail = TVG_PROMPT.split("{caption}")
    for record in read_annotations(f"{root}/annotations/tvg.jsonl", OPTS):
        question = record["conversations"][0]["value"].removeprefix("<video>\n")
        assert question.startswith(tvg_head) and question.endswith(tvg_tail)
        caption = question[len(tvg_head):-len(tvg_tail)]
        assert caption.startswith("the ") and " moves " in caption and caption == caption.lower()
    rec_forms = [p.split("{expression}") for p in REC_PROMPTS]
    used = set()
    for record in read_annotations(f"{root}/annotations/rec.jsonl", OPTS):
        question = record["conversations"][0]["value"].removeprefix("<image>\n")
        form = [i for i, (head, tail) in enumerate(rec_forms) if question.startswith(head) and question.endswith(tail)]
        assert len(form) == 1, question
        used.add(form[0])
    assert len(used) > 1  # drawn, not one fixed template
    for record in read_annotations(f"{root}/annotations/stvg.jsonl", OPTS):
        assert record["conversations"][0]["value"].endswith(INSTRUCTIONS["stvg"])
