"""Baselines: the training set's mean answers and random answers, in the answer shapes, scored like a model's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llavast.data.synth import SynthSpec, synthesize
from llavast.evaluate.answers import parse_answer
from llavast.evaluate.baselines import Priors, constant_answer, priors_from_records, random_answer
from llavast.evaluate.benchmarks import read_benchmark
from llavast.evaluate.metrics import temporal_iou
from llavast.evaluate.score import score
from llavast.storage import StorageOptions

OPTS = StorageOptions()
T, W, H = "temporal_output_locations", "spatial_width_output_locations", "spatial_height_output_locations"


def test_priors_are_the_mean_training_answers():
    tvg = [{"variables": {T: [0.1, 0.5]}}, {"variables": {T: [0.3, 0.9]}}, {"variables": {}}]
    assert priors_from_records(tvg, "tvg") == Priors((0.2, 0.7), Priors().box, 2)
    rec = [{"variables": {W: [0.1, 0.3], H: [0.2, 0.6]}}, {"variables": {W: [0.3, 0.5], H: [0.0, 0.2]}}]
    assert priors_from_records(rec, "rec").box == pytest.approx((0.2, 0.1, 0.4, 0.4))
    stvg = [{"variables": {T: [0.2, 0.6, 0.2, 0.6], W: [0.0, 0.2, 0.4, 0.6], H: [0.0, 0.2, 0.4, 0.6]}}]
    priors = priors_from_records(stvg, "stvg")
    assert priors.span == (0.2, 0.6) and priors.box == pytest.approx((0.2, 0.2, 0.4, 0.4))  # both tube boxes
    assert priors_from_records([], "rec") == Priors()


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    result = synthesize(str(root), OPTS, SynthSpec(videos=0, images=0, benchmark_videos=3, seed=2))
    return {task: read_benchmark(task, uri, OPTS) for task, uri in result.benchmark.items()}


def test_constant_answers_parse_and_score_as_computed(bench, tmp_path: Path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps([{"image_id": "v.mp4", "caption": "x", "timestamp": s}
                                for s in ([0.1, 0.5], [0.4, 0.8])]))
    tvg = read_benchmark("tvg", str(path), OPTS).samples
    priors = Priors((0.2, 0.6))
    outputs = {s.id: constant_answer(s, priors, 4) for s in tvg}
    expected = [temporal_iou((0.2, 0.6), s.span) for s in tvg]  # 0.6, 0.333
    assert score("tvg", tvg, outputs).summary["mIoU"] == pytest.approx(100 * sum(expected) / 2)
    for task in ("stvg", "svg", "elc"):
        samples = bench[task].samples
        answers = [parse_answer(constant_answer(s, priors, 4)) for s in samples]
        assert all(a.status(task) == "ok" for a in answers), task
        for sample, answer in zip(samples, answers, strict=True):
            assert set(answer.tube.values()) == {priors.box}
            span = sample.truth.span() if task == "svg" else (sample.truth.span()[0], 0.6) if task == "elc" \
                else priors.span
            assert all(span[0] <= t <= span[1] for t in answer.tube) or len(answer.tube) == 1


def test_random_answers_are_seeded_and_of_the_right_shape(bench):
    samples = bench["stvg"].samples
    first = [random_answer(s, 4, seed=1) for s in samples]
    assert first == [random_answer(s, 4, seed=1) for s in samples]
    assert first != [random_answer(s, 4, seed=2) for s in samples]
    for text in first:
        answer = parse_answer(text)
        assert answer.status("stvg") == "ok" and answer.span[0] <= answer.span[1]
        x1, y1, x2, y2 = next(iter(answer.tube.values()))
        assert 0 <= x1 <= x2 <= 1 and 0 <= y1 <= y2 <= 1
