"""Scoring whole benchmarks: the ground truth rendered as answers scores perfectly, known shifts score the
analytic values, predictions files are checked, and `llavast eval score` writes exactly the paper's keys."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from llavast.cli import app
from llavast.data.synth import SynthSpec, synthesize
from llavast.errors import DataError
from llavast.evaluate.answers import parse_answer
from llavast.evaluate.benchmarks import BenchmarkFile, read_benchmark
from llavast.evaluate.metrics import frame_to_time, temporal_iou, truth_frames
from llavast.evaluate.render import render_answer, truth_answer
from llavast.evaluate.score import MISSING, check_prediction_ids, read_predictions, score
from llavast.storage import StorageOptions

OPTS = StorageOptions()
N = 8  # frames the (imagined) model sampled
KEYS = {
    "stvg": ["m_tIoU", "tIoU@0.3", "tIoU@0.5", "tIoU@0.7", "m_sIoU", "sIoU@0.3", "sIoU@0.5", "sIoU@0.7",
             "m_vIoU", "vIoU@0.3", "vIoU@0.5", "vIoU@0.7"],
    "tvg": ["mIoU", "R@0.3", "R@0.5", "R@0.7"],
    "rec": ["mIoU", "Acc@0.5"],
}
KEYS["svg"] = [k for k in KEYS["stvg"] if "tIoU" not in k]
KEYS["elc"] = KEYS["stvg"] + ["BLEU_4", "METEOR", "ROUGE_L", "CIDEr"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BenchmarkFile]:
    root = tmp_path_factory.mktemp("synth")
    result = synthesize(str(root), OPTS, SynthSpec(videos=0, images=0, benchmark_videos=4, seed=3))
    return {task: read_benchmark(task, uri, OPTS) for task, uri in result.benchmark.items()}


@pytest.fixture(scope="module")
def java() -> None:
    assert shutil.which("java"), "ELC caption metrics need Java (METEOR, PTB tokenizer): not on PATH"


def _charades(tmp_path: Path, spans: list[list[float]]) -> BenchmarkFile:
    path = tmp_path / "charades.json"
    path.write_text(json.dumps([{"image_id": f"v{i}.mp4", "caption": "a person opens a door.", "timestamp": s}
                                for i, s in enumerate(spans)]))
    return read_benchmark("tvg", str(path), OPTS)


def _refcoco(tmp_path: Path, boxes: list[list[float]]) -> BenchmarkFile:
    path = tmp_path / "refcoco.json"
    path.write_text(json.dumps({
        "images": [{"id": i, "file_name": f"i{i}.jpg", "width": 200, "height": 100, "caption": "the dog"}
                   for i in range(len(boxes))],
        "annotations": [{"id": i, "bbox": b} for i, b in enumerate(boxes)]}))
    return read_benchmark("rec", str(path), OPTS)


# ---- round trip: the truth as an answer scores perfectly ----

@pytest.mark.parametrize("task", ["stvg", "svg", "elc"])
def test_ground_truth_rendered_and_parsed_back_scores_perfectly(synthetic, task, java):
    file = synthetic[task]
    outputs = {s.id: truth_answer(s, N) for s in file.samples}
    table = score(task, file.samples, outputs, num_frames=N).summary
    assert list(table) == KEYS[task] + ["parse_rate", "count"]
    assert table["count"] == 4 and table["parse_rate"] == 100.0
    for key in KEYS[task]:
        if key in ("BLEU_4", "METEOR", "ROUGE_L", "CIDEr"):
            assert table[key] > 99.0, key  # identical captions (CIDEr-D scales to 10, i.e. 1000 here)
        else:
            assert table[key] == pytest.approx(100.0), key


def test_truth_in_coordinate_tokens_parses_fully_and_scores_within_the_bin_width(synthetic):
    file = synthetic["stvg"]
    outputs = {s.id: truth_answer(s, N, bins=100) for s in file.samples}
    assert all("<TEMP-" in o and "<WIDTH-" in o and "<HEIGHT-" in o for o in outputs.values())
    table = score("stvg", file.samples, outputs, bins=100, num_frames=N).summary
    assert table["parse_rate"] == 100.0
    assert table["m_sIoU"] > 90.0 and table["m_tIoU"] > 95.0  # one bin is 1/99 of the frame / the window


def test_tvg_and_rec_truth_round_trip(tmp_path):
    tvg = _charades(tmp_path, [[0.1, 0.5], [0.25, 0.75]])
    rec = _refcoco(tmp_path, [[20, 10, 100, 50], [0, 0, 200, 100]])
    for task, file in (("tvg", tvg), ("rec", rec)):
        table = score(task, file.samples, {s.id: truth_answer(s, N) for s in file.samples}).summary
        assert list(table) == KEYS[task] + ["parse_rate", "count"]
        assert all(table[k] == pytest.approx(100.0) for k in KEYS[task]) and table["parse_rate"] == 100.0


# ---- known shifts score the analytic values ----

def test_tvg_span_shifted_by_d_scores_l_minus_d_over_l_plus_d(tmp_path):
    spans = [[0.1, 0.5], [0.2, 0.8], [0.0, 0.3]]
    file = _charades(tmp_path, spans)
    d = 0.1
    outputs = {s.id: render_answer("tvg", span=(s.span[0] + d, s.span[1] + d)) for s in file.samples}
    ious = [((e - s) - d) / ((e - s) + d) for s, e in spans]  # 0.6, 0.714.., 0.5
    table = score("tvg", file.samples, outputs).summary
    assert table["mIoU"] == pytest.approx(100 * sum(ious) / 3)
    assert table["R@0.5"] == pytest.approx(100 * 2 / 3)  # 0.5 is not > 0.5
    assert table["R@0.7"] == pytest.approx(100 / 3)


def test_rec_box_shifted_right_by_dx_scores_w_minus_dx_over_w_plus_dx(tmp_path):
    file = _refcoco(tmp_path, [[20, 10, 100, 50], [40, 0, 40, 100]])  # widths 100 and 40 of an image 200 wide
    dx = 20 / 200
    outputs = {s.id: render_answer("rec", box=(s.truth[0] + dx, s.truth[1], s.truth[2] + dx, s.truth[3]))
               for s in file.samples}
    table = score("rec", file.samples, outputs).summary
    ious = [(100 - 20) / (100 + 20), (40 - 20) / (40 + 20)]
    assert table["mIoU"] == pytest.approx(100 * sum(ious) / 2)
    assert table["Acc@0.5"] == 50.0


def test_stvg_tube_shifted_by_whole_pixels_and_span_shifted(synthetic):
    file = synthetic["stvg"]
    dx, d = 4, 0.05  # pixels right; normalised time later
    outputs, expected_s, expected_t = {}, [], []
    for s in file.samples:
        truth = s.truth
        frames = truth_frames(truth, N)
        w, h = truth.width, truth.height
        tube = {frame_to_time(f, truth.split): ((b[0] + dx) / w, b[1] / h, (b[2] + dx) / w, b[3] / h)
                for f, b in sorted(frames.items())}
        span = truth.span()
        outputs[s.id] = render_answer("stvg", span=(span[0] + d, span[1] + d), tube=tube)
        expected_s.append(sum((b[2] - b[0] - dx) / (b[2] - b[0] + dx) for b in frames.values()) / len(frames))
        expected_t.append(temporal_iou((span[0] + d, span[1] + d), span))
    table = score("stvg", file.samples, outputs, num_frames=N).summary
    assert table["m_sIoU"] == pytest.approx(100 * sum(expected_s) / len(expected_s))
    assert table["m_vIoU"] == pytest.approx(table["m_sIoU"])  # same frames in both tubes: I = U
    assert table["m_tIoU"] == pytest.approx(100 * sum(expected_t) / len(expected_t))
    assert 0 < table["m_sIoU"] < 100


# ---- misses and the predictions file ----

def test_missing_and_failed_samples_are_misses_counted_in_the_table(synthetic):
    file = synthetic["svg"]
    first, second, *_ = file.samples
    outputs = {first.id: truth_answer(first, N)}
    scored = score("svg", file.samples, outputs, num_frames=N, statuses={second.id: "decode_error"})
    statuses = [r["parse_status"] for r in scored.rows]
    assert statuses == ["ok", "decode_error", MISSING, MISSING]
    assert scored.summary["count"] == 4 and scored.summary["parse_rate"] == 25.0
    assert scored.summary["m_vIoU"] == pytest.approx(25.0)
    assert [set(r) for r in scored.rows] == [{"id", "output", "parse_status", "siou", "viou"}] * 4


def test_read_predictions_checks_every_line():
    assert read_predictions('{"id": 3, "output": "{0.1,0.2}"}\n\n{"id": "a", "output": ""}\n', "p.jsonl") == {
        "3": "{0.1,0.2}", "a": ""}
    with pytest.raises(DataError, match=r"p.jsonl:2: not JSON"):
        read_predictions('{"id": 1, "output": ""}\n{oops\n', "p.jsonl")
    with pytest.raises(DataError, match=r"p.jsonl:1: expected"):
        read_predictions('{"id": 1, "answer": "x"}\n', "p.jsonl")
    with pytest.raises(DataError, match=r"p.jsonl:2: id '1' is given twice"):
        read_predictions('{"id": 1, "output": ""}\n{"id": "1", "output": ""}\n', "p.jsonl")


def test_prediction_ids_must_belong_to_the_benchmark(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps([{"image_id": "v.mp4", "caption": "x", "timestamp": [0.1, 0.2]},
                                {"image_id": "w.mp4", "caption": "y", "timestamp": [0.5, 0.2]}]))  # 1: quarantined
    file = read_benchmark("tvg", str(path), OPTS)
    assert [s.id for s in file.samples] == ["0"] and [q.index for q in file.quarantined] == [1]
    check_prediction_ids({"0": "", "1": ""}, file, "p.jsonl")  # a quarantined record's answer is not scored
    with pytest.raises(DataError, match=r"not samples of the benchmark, e.g. '7'"):
        check_prediction_ids({"0": "", "7": ""}, file, "p.jsonl")


def test_render_answer_shapes_parse_back():
    tube = {0.25: (0.1, 0.2, 0.3, 0.4), 0.5: (0.2, 0.2, 0.4, 0.4)}
    stvg = parse_answer(render_answer("stvg", span=(0.25, 0.5), tube=tube, bins=100), 100)
    assert stvg.status("stvg") == "ok" and len(stvg.tube) == 2
    elc = parse_answer(render_answer("elc", end=0.75, tube=tube, caption="the red circle moves left."))
    assert elc.end == 0.75 and elc.tube == tube
    assert render_answer("elc", end=0.75, tube=tube, caption="it moves.").startswith("Ends in 0.75, it moves. Object")
    assert render_answer("tvg", span=(0.0, 1.0), bins={"TEMP": 11, "HEIGHT": 5, "WIDTH": 5}) == \
        "{<TEMP-000>,<TEMP-010>}"
    with pytest.raises(ValueError, match="a stvg answer needs its span"):
        render_answer("stvg", tube=tube)


# ---- the command ----

def test_eval_score_command_writes_the_paper_keys(synthetic, tmp_path, java):
    file = synthetic["elc"]
    predictions = tmp_path / "pred.jsonl"
    lines = [{"id": s.id, "output": truth_answer(s, N, bins=100)} for s in file.samples[:3]]
    predictions.write_text("\n".join(json.dumps(x) for x in lines))
    out = tmp_path / "scored"
    result = CliRunner().invoke(app, ["eval", "score", "--task", "ELC", "--benchmark", file.uri,
                                      "--predictions", str(predictions), "--out", str(out),
                                      "--num-coordinate-bins", "100", "--num-frames", str(N)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == ["elc"] and list(summary["elc"]) == KEYS["elc"] + ["parse_rate", "count"]
    assert summary["elc"]["count"] == 4 and summary["elc"]["parse_rate"] == 75.0  # one sample has no prediction
    rows = pq.read_table(out / "results.parquet").to_pylist()
    assert [r["parse_status"] for r in rows] == ["ok", "ok", "ok", MISSING]
    assert "m_vIoU" in result.output and "1 sample(s) have no prediction" in result.output


def test_eval_score_command_rejects_an_unknown_task_and_stray_ids(synthetic, tmp_path):
    predictions = tmp_path / "pred.jsonl"
    predictions.write_text('{"id": "99", "output": ""}\n')
    args = ["eval", "score", "--benchmark", synthetic["svg"].uri, "--predictions", str(predictions), "--out",
            str(tmp_path / "o")]
    bad_task = CliRunner().invoke(app, ["eval", "score", "--task", "vqa", *args[2:]])
    assert bad_task.exit_code != 0 and "unknown evaluation task 'vqa'" in bad_task.output
    stray = CliRunner().invoke(app, [*args[:2], "--task", "svg", *args[2:]])
    assert stray.exit_code == 1 and "not samples of the benchmark" in stray.output
    assert not (tmp_path / "o").exists()


def test_eval_score_command_refuses_what_it_cannot_score(synthetic, tmp_path):
    """A benchmark file of another task (no sample of this one), an empty predictions file, and bins or frames
    out of range: refused with a usage error naming the option, nothing written (they used to score zeros or
    print a traceback)."""
    predictions = tmp_path / "pred.jsonl"
    predictions.write_text('{"id": "0", "output": ""}\n')
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    tvg_file = synthetic["tvg"].uri
    cases = {
        "--benchmark": ["--task", "stvg", "--benchmark", tvg_file, "--predictions", str(predictions)],
        "--predictions": ["--task", "svg", "--benchmark", synthetic["svg"].uri, "--predictions", str(empty)],
        "--num-coordinate-bins": ["--task", "svg", "--benchmark", synthetic["svg"].uri, "--predictions",
                                  str(predictions), "--num-coordinate-bins", "0"],
        "--num-frames": ["--task", "svg", "--benchmark", synthetic["svg"].uri, "--predictions", str(predictions),
                         "--num-frames", "-3"],
    }
    for option, args in cases.items():
        result = CliRunner().invoke(app, ["eval", "score", *args, "--out", str(tmp_path / "o")])
        assert result.exit_code == 2 and option in result.output and "Traceback" not in result.output, \
            (option, result.output)
    assert not (tmp_path / "o").exists()
