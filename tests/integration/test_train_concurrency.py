"""The same stage started twice at once against one MLflow and one storage root: one runner trains and
registers, the other is refused in one line naming the holder (or, starting after the first finished, finds
the registered version): exactly one version for the stage's fingerprint, and its alias points at it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llavast.tracking import Tracker
from tests.fixtures.train import TrainWorld, unique

pytestmark = pytest.mark.integration
LLAVAST = str(Path(sys.executable).with_name("llavast"))
SECRET = "probe-41c9e07b-value"


@pytest.mark.timeout(600)
def test_two_runners_of_one_stage_register_one_version(train_world: TrainWorld, tmp_path: Path) -> None:
    model = unique("llavast-twice")
    raw = train_world.job(1, unique("twice"), model, train={"max_steps": 2, "checkpoint_every": 2},
                          compute={"cpus_per_worker": 0.5},
                          env_vars={"PROBE_TOKEN": "${env:LLAVAST_PROBE_SECRET}"}).model_dump(mode="json")
    job_file = tmp_path / "stage1.yaml"
    job_file.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "LLAVAST_PROBE_SECRET": SECRET}  # the S3 fixture exported the test credentials
    runners = [subprocess.Popen([LLAVAST, "run", str(job_file), "--num-cpus", "2"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outcomes = [(r.wait(timeout=540), r.stdout.read(), r.stderr.read()) for r in runners]

    codes = sorted(code for code, _, _ in outcomes)
    assert codes in ([0, 0], [0, 1]), outcomes
    assert not [out + err for _, out, err in outcomes if SECRET in out + err]  # the CLI never prints a secret
    for code, _, err in outcomes:
        if code == 1:  # refused while the other held the stage: one line that names the holder
            lines = [line for line in err.splitlines() if line.startswith("error: ")]
            assert len(lines) == 1 and " is being run by " in lines[0] and " pid " in lines[0], err
    client = Tracker(train_world.mlflow.uri).client
    versions = client.search_model_versions(f"name = '{model}'")
    assert [v.version for v in versions] == ["1"]
    assert client.get_model_version_by_alias(model, "stage1").version == "1"
    experiment = client.get_experiment_by_name(raw["tracking"]["experiment"])
    assert len(client.search_runs([experiment.experiment_id])) == 1  # one MLflow run for the stage


@pytest.mark.timeout(900)
def test_two_pipelines_started_together_register_one_version_per_node(train_world: TrainWorld,
                                                                     tmp_path: Path) -> None:
    """Two `llavast run pipeline.yaml` at once, one MLflow, one storage root: both finish (a node the other holds
    is waited for, then skipped or registered without training), every stage trains once, and each node
    fingerprint has exactly one version."""
    model, name = unique("llavast-pipe-twice"), unique("pipe-twice")
    experiments = set()
    for stage in (1, 2):
        raw = train_world.job(stage, f"{name}-s{stage}", model, train={"max_steps": 2, "checkpoint_every": 2},
                              init_from=f"models:/{model}@stage1" if stage == 2 else None,  # the pipeline sets it
                              compute={"cpus_per_worker": 0.5}).model_dump(mode="json")
        (tmp_path / f"stage{stage}.yaml").write_text(yaml.safe_dump(raw))
        experiments.add(raw["tracking"]["experiment"])
    pipeline = {"kind": "pipeline", "name": name, "max_parallel": 1,
                "tracking": {"uri": train_world.mlflow.uri, "experiment": f"{name}-exp"},
                "nodes": [{"name": "stage1", "job": "stage1.yaml"},
                          {"name": "stage2", "job": "stage2.yaml", "depends_on": ["stage1"],
                           "set": {"model.init_from": "node:stage1"}}]}
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(pipeline))
    runners = [subprocess.Popen([LLAVAST, "run", str(tmp_path / "pipeline.yaml"), "--num-cpus", "2"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
               for _ in range(2)]
    outcomes = [(r.wait(timeout=840), r.stdout.read(), r.stderr.read()) for r in runners]

    assert [code for code, _, _ in outcomes] == [0, 0], outcomes  # both ran through: the later one waited
    assert not [out + err for _, out, err in outcomes if " is being run by " in out + err]
    client = Tracker(train_world.mlflow.uri).client
    versions = client.search_model_versions(f"name = '{model}'")
    fingerprints = [v.tags["llavast.node_fingerprint"] for v in versions]
    assert len(versions) == 2 and len(set(fingerprints)) == 2, [(v.version, v.tags) for v in versions]
    ids = [client.get_experiment_by_name(e).experiment_id for e in sorted(experiments)]  # the stages' experiments
    stage_runs = [r for r in client.search_runs(ids) if "llavast.stage" in r.data.tags]
    assert sorted(r.data.tags["llavast.stage"] for r in stage_runs) == ["1", "2"]  # one MLflow run per stage
    for run in stage_runs:  # trained once: one loss point per step
        assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2], run.data.tags
    by_stage = {v.tags["llavast.stage"]: v.version for v in versions}
    assert {alias: client.get_model_version_by_alias(model, alias).version for alias in ("stage1", "stage2")} == \
        {"stage1": by_stage["1"], "stage2": by_stage["2"]}
    stage2 = client.get_model_version(model, by_stage["2"])
    assert stage2.tags["llavast.parent_version"] == f"{model}/{by_stage['1']}"  # lineage across the runners

    # the pipeline's run keeps both attempts: for each node, the one that trained it says so (the other skipped
    # it, or registered what the first trained)
    # (two runners that start in the same moment may each create the pipeline's run: look in every one)
    parents = client.search_runs([client.get_experiment_by_name(f"{name}-exp").experiment_id])
    attempts = [json.loads(Path(client.download_artifacts(p.info.run_id, a.path, str(tmp_path))).read_text())
                for p in parents for a in client.list_artifacts(p.info.run_id, "attempts")]
    assert len(attempts) == 2
    for node in ("stage1", "stage2"):
        assert [a["nodes"][node].get("trained") for a in attempts].count(True) == 1, attempts
        assert {a["nodes"][node]["status"] for a in attempts} <= {"skipped", "succeeded"}, attempts
