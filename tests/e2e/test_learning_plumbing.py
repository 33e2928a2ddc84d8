"""The learning benchmark's plumbing (`python -m benchmarks.learning --quick`): the pipeline trains and evaluates
through the CLI, the baselines are scored by `llavast eval score`, and every row and margin of the table is
there. The learning result itself is the benchmark's (docs/results.md), not this test's."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from benchmarks import learning
from llavast.services import free_port

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(1200)
def test_learning_quick_run_produces_the_table(tmp_path: Path):
    root = tmp_path / "repo"
    jobs = root / "jobs" / "learn"
    jobs.mkdir(parents=True)
    port = free_port()
    for yaml_file in (REPO / "jobs" / "learn").glob("*.yaml"):
        (jobs / yaml_file.name).write_text(yaml_file.read_text().replace("127.0.0.1:5056", f"127.0.0.1:{port}"))
    out = tmp_path / "learning.json"
    try:
        result = learning.main(["--quick", "--pipeline", str(jobs / "pipeline.yaml"), "--out", str(out)])
    finally:
        shutil.rmtree(root / ".learn" / "storage", ignore_errors=True)
    assert out.is_file() and result["quick"] is True and result["wall_seconds"] > 0
    assert list(result["rows"]) == ["trained (stage 3)", "untrained", "constant (training mean)", "random"]
    columns = {f"{t}/{k}" for t, k in learning.COLUMNS}
    for name, row in result["rows"].items():
        assert columns <= set(row), name
        assert all(0.0 <= value <= 100.0 for value in row.values()), name
    assert result["rows"]["constant (training mean)"]["tvg/parse_rate"] == 100.0  # rendered in the answer shape
    assert set(result["margins"]) == set(learning.TARGETS)
    for m in result["margins"].values():
        assert m["samples"] == 3 and m["ci_low"] <= m["margin"] <= m["ci_high"]
    picked = result["rec_named_vs_other"]  # the trained model's REC boxes against the named and the other shape
    assert picked["samples"] == 3
    assert all(0.0 <= picked[k] <= 100.0 for k in ("named/mIoU", "other/mIoU", "named/Acc@0.5", "other/Acc@0.5"))
    assert picked["named/Acc@0.5"] == pytest.approx(result["rows"]["trained (stage 3)"]["rec/Acc@0.5"])  # same IoU
