"""`llavast run` on a pipeline whose node fails: a one-line reason in the table, the full report below it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
LLAVAST = str(Path(sys.executable).with_name("llavast"))
RAY_SESSIONS = Path("/tmp/ray")


def test_failed_node_reads_in_one_line_and_its_report_follows(tmp_path: Path) -> None:
    (tmp_path / "mixture.yaml").write_text("datasets: []\n")
    (tmp_path / "index.yaml").write_text("kind: index\nname: broken-index\nmixture: mixture.yaml\nout: out1\n")
    (tmp_path / "pipeline.yaml").write_text(
        "kind: pipeline\nname: broken\nnodes:\n"
        "  - {name: index1, job: index.yaml}\n"
        "  - {name: index2, job: index.yaml, depends_on: [index1], set: {out: out2}}\n")
    result = subprocess.run([LLAVAST, "run", str(tmp_path / "pipeline.yaml"), "--num-cpus", "1"],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "COLUMNS": "160", "RAY_ADDRESS": ""})
    assert result.returncode == 1, result.stdout + result.stderr
    reason = f"ConfigError: {tmp_path / 'mixture.yaml'}: a mixture needs"
    # the table: the failed node's row carries the start of its reason on the row's own line
    rows = [line for line in result.stdout.splitlines() if "index1" in line and "failed" in line]
    assert rows and any("ConfigError:" in row for row in rows), result.stdout
    # below it: the root exception in full, where it was raised, then the summary line
    report = result.stderr.splitlines()
    start = report.index("index1 failed:")
    assert report[start + 1].startswith(f"  {reason}"), result.stderr
    path, line = report[start + 2].removeprefix("  raised at ").rsplit(":", 1)
    assert path.endswith("llavast/data/annotations.py")
    assert "raise ConfigError(" in Path(path).read_text().splitlines()[int(line) - 1]
    assert "index2 failed:" not in report  # blocked, not failed: its table row says by what
    assert "2 node(s) did not succeed: index1, index2" in result.stderr


def test_every_unset_env_reference_of_a_pipeline_fails_in_one_line_before_ray(tmp_path: Path) -> None:
    """Unset `${env:NAME}` references in the pipeline and in its nodes' jobs: one error that names each, before
    a local Ray is started (no Ray session is created)."""
    (tmp_path / "synth.yaml").write_text(
        "kind: synth\nname: s\nout: st\nenv_vars: {AWS_ACCESS_KEY_ID: '${env:LLAVAST_UNSET_A}'}\n")
    (tmp_path / "pipeline.yaml").write_text(
        "kind: pipeline\nname: refs\nenv_vars: {HF_TOKEN: '${env:LLAVAST_UNSET_B}', MODE: fast}\nnodes:\n"
        "  - {name: one, job: synth.yaml}\n"
        "  - {name: two, job: synth.yaml, depends_on: [one],\n"
        "     set: {out: st2, env_vars: {KEY: '${env:LLAVAST_UNSET_C}'}}}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLAVAST_UNSET")}
    sessions = set(RAY_SESSIONS.glob("session_2*"))
    result = subprocess.run([LLAVAST, "run", str(tmp_path / "pipeline.yaml"), "--num-cpus", "1"],
                            capture_output=True, text=True, timeout=120,
                            env={**env, "COLUMNS": "160", "RAY_ADDRESS": ""})
    assert result.returncode == 1, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    pipeline = tmp_path / "pipeline.yaml"
    for part in (f"{pipeline}: env_vars.HF_TOKEN: references ${{env:LLAVAST_UNSET_B}} but LLAVAST_UNSET_B is not set",
                 f"{pipeline} node one: env_vars.AWS_ACCESS_KEY_ID: references ${{env:LLAVAST_UNSET_A}}",
                 f"{pipeline} node two: env_vars.AWS_ACCESS_KEY_ID: references ${{env:LLAVAST_UNSET_A}}",
                 f"{pipeline} node two: env_vars.KEY: references ${{env:LLAVAST_UNSET_C}}"):
        assert part in result.stderr, result.stderr
    assert result.stderr.rstrip().endswith("export them before running the job")
    assert set(RAY_SESSIONS.glob("session_2*")) == sessions  # no local Ray was started
    assert not (tmp_path / "st").exists()
