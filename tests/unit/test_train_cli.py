"""`llavast run` of a stage: user errors print one line and exit 1 before any Ray cluster starts."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from llavast.cli import app
from llavast.services import free_port

JOB = """\
kind: stage
name: cli-test
model: {base: /models/base}
data: {manifest: /data/index}
train: {stage: 1, max_steps: 2}
tracking: {uri: "http://127.0.0.1:PORT", experiment: e, registered_model: m}
storage: {root: /tmp/runs}
"""


def test_bad_yaml_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "stage.yaml"
    path.write_text(JOB.replace("stage: 1", "stage: 7").replace("PORT", "1"))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].endswith(f"{path}: train.stage: Input should be 1, 2 or 3")
    assert "Traceback" not in result.output


def test_unreachable_mlflow_fails_before_ray_starts(tmp_path: Path) -> None:
    path = tmp_path / "stage.yaml"
    path.write_text(JOB.replace("PORT", str(free_port())))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "MLflow tracking server" in errors[0] and "is unreachable" in errors[0]
