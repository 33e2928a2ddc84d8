"""`make demo` end to end, through the real CLI: synthetic data -> index -> stages 1, 2, 3 -> registry -> eval.

Then the properties users rely on: a second run skips every finished node; a changed stage config
re-runs that stage only (its dependencies stay skipped); the registry shows versions, aliases, lineage.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from llavast.services import free_port

REPO = Path(__file__).resolve().parents[2]
LLAVAST = str(Path(sys.executable).with_name("llavast"))


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([LLAVAST, *args], cwd=cwd, capture_output=True, text=True, timeout=900,
                            env={**__import__("os").environ, "COLUMNS": "200"})
    print(result.stdout[-4000:], result.stderr[-4000:])
    return result


@pytest.fixture(scope="module")
def demo_copy(tmp_path_factory: pytest.TempPathFactory):
    """jobs/demo copied into a scratch root (its ../../.demo paths land there) on a free MLflow port."""
    root = tmp_path_factory.mktemp("demo")
    port = free_port()
    jobs = root / "jobs" / "demo"
    jobs.mkdir(parents=True)
    for yaml_file in (REPO / "jobs" / "demo").glob("*.yaml"):
        (jobs / yaml_file.name).write_text(yaml_file.read_text().replace("127.0.0.1:5055", f"127.0.0.1:{port}"))
    yield root, jobs / "pipeline.yaml", f"http://127.0.0.1:{port}"
    _cli("services", "down", "--state-dir", str(root / ".demo" / "mlflow"), cwd=root)
    shutil.rmtree(root, ignore_errors=True)


def _statuses(stdout: str) -> dict[str, str]:
    return dict(re.findall(r"│ (stage\d) +│ (\w+) +│", stdout))


def _rows(stdout: str) -> dict[str, str]:
    """node -> status, from the pipeline's nodes table."""
    return dict(re.findall(r"│ (\w+) +│ \w+ +│[^│]*│[^│]*│ (\w+) +│", stdout))


@pytest.mark.timeout(1500)
def test_demo_end_to_end_then_skip_then_rerun_a_changed_stage(demo_copy, tmp_path_factory):
    root, pipeline, mlflow_uri = demo_copy
    mlflow_dir = str(root / ".demo" / "mlflow")

    first = _cli("demo", "--pipeline", str(pipeline), "--mlflow-dir", mlflow_dir, cwd=root)
    assert first.returncode == 0, first.stderr
    assert _statuses(first.stdout) == {"stage1": "succeeded", "stage2": "succeeded", "stage3": "succeeded"}
    client = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    experiment = client.get_experiment_by_name("llava-st-demo")
    # the link opens the runs (the UI's training view), and the experiment says it is one of model training
    assert f"MLflow UI: {mlflow_uri}/#/experiments/{experiment.experiment_id}?workflowType=machine_learning" \
        in first.stdout
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    versions = {int(v.version): v for v in client.search_model_versions("name = 'llava-st-demo'")}
    assert sorted(versions) == [1, 2, 3]
    for stage in (1, 2, 3):
        alias = client.get_model_version_by_alias("llava-st-demo", f"stage{stage}")
        assert alias.version == str(stage) and alias.tags["llavast.stage"] == str(stage)
    assert versions[2].tags["llavast.parent_version"] == "llava-st-demo/1"
    assert versions[3].tags["llavast.parent_version"] == "llava-st-demo/2"
    parent_runs = client.search_runs([client.get_experiment_by_name("llava-st-demo").experiment_id],
                                     filter_string="tags.`llavast.kind` = 'pipeline'")
    assert len(parent_runs) == 1
    children = client.search_runs([parent_runs[0].info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent_runs[0].info.run_id}'")
    assert len(children) == 4  # three stages and the evaluation of stage 3
    (eval_run,) = [r for r in children if r.data.tags.get("llavast.kind") == "eval"]
    assert eval_run.data.tags["llavast.model_version"] == "llava-st-demo/3"
    summary = json.loads((root / ".demo" / "eval" / "stage3" / "summary.json").read_text())
    assert list(summary) == ["st-align/stvg", "st-align/svg", "st-align/elc"]
    assert summary["st-align/stvg"]["count"] == 2 and "m_vIoU" in summary["st-align/svg"]
    assert eval_run.data.metrics["st-align/stvg/m_vIoU"] == summary["st-align/stvg"]["m_vIoU"]
    assert client.list_artifacts(eval_run.info.run_id, "pictures/st-align/stvg")
    tags = client.get_model_version("llava-st-demo", "3").tags
    assert tags["eval.st-align.stvg.m_tIoU"] == f"{summary['st-align/stvg']['m_tIoU']:.4f}"
    assert "LLaVA-ST demo: eval of models:/llava-st-demo/3" in first.stdout
    assert "near zero by design" in first.stdout  # the tiny model's scores are explained
    assert "View run" not in first.stdout  # MLflow's own links (to its GenAI view) are not printed
    assert "Waiting up to" not in first.stdout + first.stderr  # nor its wait for a version that is ready
    assert "Downloading artifacts" not in first.stdout + first.stderr  # nor its download bars

    elsewhere = tmp_path_factory.mktemp("elsewhere")  # the demo does not depend on the folder it is run from
    second = _cli("demo", "--pipeline", str(pipeline), "--mlflow-dir", mlflow_dir, cwd=elsewhere)
    assert second.returncode == 0, second.stderr
    assert _statuses(second.stdout) == {"stage1": "skipped", "stage2": "skipped", "stage3": "skipped"}
    assert _rows(second.stdout)["eval"] == "skipped"
    assert "LLaVA-ST demo: eval of models:/llava-st-demo/3" in second.stdout  # read from its results
    assert len(client.search_model_versions("name = 'llava-st-demo'")) == 3

    changed = _cli("run", str(pipeline), "--set", "nodes.stage3.set.train.lr=1.0e-4", "--num-cpus", "4", cwd=root)
    assert changed.returncode == 0, changed.stderr
    rows = _rows(changed.stdout)
    assert rows["stage3"] == "succeeded" and rows["eval"] == "succeeded"  # the new version is evaluated
    assert all(rows[n] == "skipped" for n in ("synth", "index1", "index2", "index3", "stage1", "stage2"))
    latest = max(int(v.version) for v in client.search_model_versions("name = 'llava-st-demo'"))
    assert latest == 4 and client.get_model_version_by_alias("llava-st-demo", "stage3").version == "4"
    assert "eval.st-align.svg.m_vIoU" in client.get_model_version("llava-st-demo", "4").tags

    registry = _cli("registry", "list", "llava-st-demo", "--tracking-uri", mlflow_uri, cwd=root)
    assert registry.returncode == 0 and "stage3" in registry.stdout and "llava-st-demo/2" in registry.stdout
