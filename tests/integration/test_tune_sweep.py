"""Sweeps on real services: Ray Tune trials of the tiny model, each a Ray Train V2 run with DeepSpeed (2 CPU
workers, gloo), data and storage on the moto S3 server, tracking in the real MLflow server.

- A 4-trial grid (2 of its 6 points break W1 % k1) under ASHA: it finishes, ASHA stops a trial early, MLflow holds
  the parent run and 4 children with distinct parameters and an objective each, the best YAML validates and
  carries the best trial's parameters, and no placement group is left behind (ray-project/ray#54305).
- The sweep's driver (`llavast run`) killed after its first trial finished: running it again resumes the sweep
  with Tune's restore and does not run that trial again.

The objective here is the training loss at each validation: an untrained tiny model scores 0 on every grounding
metric, and ASHA cannot rank trials that tie. The validation tables are still computed and logged (`val/...`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient

from llavast import storage
from llavast.config.loader import load_job
from llavast.data.index import build_index
from llavast.data.synth import SynthSpec, synthesize
from llavast.tune.best import best_parameters
from llavast.tune.plan import sweep_key
from model_zoo.llava_st import build_tiny_checkpoint
from tests.fixtures.train import unique

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(tmp_path_factory, s3_server, ray_local, mlflow_server) -> dict[str, Any]:
    """The tiny base; synthetic ST-Align with a held-out split on S3; the stage-2 mixture indexed; a stage job
    YAML (stage 1 training STP and LAPE, LAPE on, on the coordinate tasks) as the sweep's base."""
    tmp = tmp_path_factory.mktemp("sweep")
    base = build_tiny_checkpoint(tmp / "llava-ov-tiny")
    bucket = s3_server.create_bucket("sweep")
    options = s3_server.options
    synth = synthesize(f"{bucket}/st-align", options,
                       SynthSpec(videos=8, images=4, benchmark_videos=3, benchmark_images=0, min_frames=8,
                                 max_frames=12, seed=1))
    manifest = f"{bucket}/index/stage2"
    build_index(synth.mixtures[2], manifest, options, seed=0, rows_per_shard=8)
    endpoint = {"endpoint_url": s3_server.endpoint_url, "region": "us-east-1"}
    stage = {
        "kind": "stage", "name": "sweep-base",
        "model": {"base": str(base)},
        "data": {"manifest": manifest, "storage": endpoint, "decode_concurrency": 1, "decode_num_cpus": 0.1,
                 "decode_batch_size": 2, "fetch_threads": 2, "prefetch_batches": 1},
        "train": {"stage": 1, "trainable": ["stp", "lape"], "lape": True, "lr": 1e-3, "micro_batch_size": 1,
                  "max_steps": 4, "checkpoint_every": 2, "warmup_ratio": 0.1, "gradient_checkpointing": False},
        "compute": {"num_workers": 2, "cpus_per_worker": 0.25, "max_failures": 0},
        "tracking": {"uri": mlflow_server.uri, "experiment": "unused", "registered_model": "llava-st-production",
                     "system_metrics_interval_s": 0},
        "storage": {"root": f"{bucket}/runs", **endpoint},
    }
    stage_file = tmp / "stage.yaml"
    stage_file.write_text(yaml.safe_dump(stage))
    return {"tmp": tmp, "stage_file": stage_file, "bucket": bucket, "options": options, "endpoint": endpoint,
            "benchmark": synth.benchmark["tvg"], "media_root": f"{bucket}/st-align", "mlflow": mlflow_server}


def sweep_raw(world: dict[str, Any], name: str, space: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "kind": "sweep", "name": name,
        "base": [{"job": str(world["stage_file"])}],
        "space": space,
        "search": {"algorithm": "grid"},
        "objective": {"metric": "loss", "mode": "min"},
        "validation": {"task": "tvg", "annotations": world["benchmark"], "media_root": world["media_root"],
                       "limit": 2, "every": 2, "max_new_tokens": 12, "batch_size": 2},
        "tracking": {"uri": world["mlflow"].uri, "experiment": f"{name}-exp"},
        "storage": {"root": f"{world['bucket']}/{name}", **world["endpoint"]},
        **extra,
    }


def _runs(client: MlflowClient, experiment: str, **tags: str) -> list[Any]:
    exp = client.get_experiment_by_name(experiment)
    where = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    return client.search_runs([exp.experiment_id], filter_string=where) if exp else []


SWEEP_IN_ITS_OWN_RAY = """
import json, sys, time
import ray
from llavast.config.loader import load_job
from llavast.tune.sweep import run_sweep

ray.init(address="local", num_cpus=4, include_dashboard=False, logging_level="ERROR")
result = run_sweep(load_job(sys.argv[1]))
for _ in range(10):  # removal is asynchronous: give the GCS a moment
    left = [pg for pg in ray.util.placement_group_table().values() if pg["state"] != "REMOVED"]
    if not left:
        break
    time.sleep(1)
print(json.dumps({"trials": result.trials, "best": result.best, "best_uri": result.best_uri,
                  "concurrency": result.plan.concurrency, "removed": result.plan.space.removed_by_reason(),
                  "placement_groups_left": len(left)}))
"""


@pytest.mark.timeout(1200)
def test_four_trial_sweep_with_asha(world, tmp_path):
    """The sweep in a Ray of its own (4 logical CPUs), so its placement groups can be counted afterwards."""
    name = unique("grid")
    raw = sweep_raw(world, name, {"m_t": {"values": [20, 50]}, "k1": {"values": [3, 6, 9]}},
                    scheduler={"kind": "asha", "grace_period": 2, "reduction_factor": 2})
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump(raw))
    job = load_job(sweep_file)
    env = {**os.environ, "RAY_memory_monitor_refresh_ms": "0"}
    run = subprocess.run([sys.executable, "-c", SWEEP_IN_ITS_OWN_RAY, str(sweep_file)], env=env,
                         capture_output=True, text=True, timeout=1100)
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    trials = result["trials"]

    # the space: 6 points, the 2 with k1 = 6 removed (27 % 6), 4 trials with distinct parameters
    assert result["removed"] == {"W1 % k1 == 0 (W1=27)": 2}
    assert result["concurrency"] == 3  # 4 CPUs / (2 workers x (0.25 + 0.1 decode) + 0.1 validation + 0.25 driver)
    assert len(trials) == 4
    assert {(t["m_t"], t["k1"]) for t in trials} == {(20, 3), (20, 9), (50, 3), (50, 9)}
    assert all(t["objective"] is not None and t["error"] is None for t in trials)
    assert all(t["steps"] == (2 if t["stopped_early"] else 4) for t in trials)  # ASHA's only rung is step 2

    # no placement group left behind (ray-project/ray#54305), asked of the sweep's own Ray
    assert result["placement_groups_left"] == 0

    # MLflow: the parent run and one child per trial, each with its parameters and objective
    client = MlflowClient(world["mlflow"].uri)
    key = sweep_key(job)
    parents = _runs(client, f"{name}-exp", **{"llavast.kind": "sweep", "llavast.sweep": key})
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    children = _runs(client, f"{name}-exp", **{"mlflow.parentRunId": parent.info.run_id})
    assert len(children) == 4
    assert {(c.data.params["m_t"], c.data.params["k1"]) for c in children} == {
        ("20", "3"), ("20", "9"), ("50", "3"), ("50", "9")}
    for child in children:
        assert child.info.status in ("FINISHED", "KILLED")
        assert "objective" in child.data.metrics and "val/mIoU" in child.data.metrics
        stages = _runs(client, f"{name}-exp", **{"mlflow.parentRunId": child.info.run_id})
        assert len(stages) == 1 and stages[0].info.status != "RUNNING"
        assert stages[0].data.params["model.overrides.k1"] == child.data.params["k1"]
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"space.csv", "trials.csv", "trials.png"}

    # ASHA on the objective (loss, min): which trials it cuts at step 2 depends on the order they get there, but
    # never the one with the lowest loss at step 2, and a cut one always had a better trial before it
    at_rung = {(c.data.params["m_t"], c.data.params["k1"]): next(
        m.value for m in client.get_metric_history(c.info.run_id, "objective") if m.step == 2) for c in children}
    stopped = {(str(t["m_t"]), str(t["k1"])) for t in trials if t["stopped_early"]}
    assert min(at_rung, key=at_rung.get) not in stopped, (at_rung, stopped)
    assert all(at_rung[p] > min(at_rung.values()) for p in stopped), (at_rung, stopped)
    best = result["best"]  # the lowest loss of the trials that ran to the end
    assert not best["stopped_early"]
    assert best["objective"] == min(t["objective"] for t in trials if not t["stopped_early"])
    assert float(parent.data.params["best.m_t"]) == best["m_t"]

    # nothing registered under the production model
    assert client.search_model_versions("name='llava-st-production'") == []

    # the best trial as a job YAML that validates and carries its parameters
    from llavast.tune.best import write_best

    out = tmp_path / "best.yaml"
    loaded = write_best(job, best, best_parameters(best), out)
    assert loaded.kind == "stage"
    assert loaded.model.overrides["m_t"] == best["m_t"] and loaded.model.overrides["k1"] == best["k1"]
    assert load_job(out).model.overrides == loaded.model.overrides
    stored = json.loads(storage.read_text(result["best_uri"], world["options"]))
    assert stored["best"]["trial_id"] == best["trial_id"]


def _kill_tree(process: subprocess.Popen) -> None:
    """The driver and everything it started (its local Ray's processes included)."""
    try:
        tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in tree:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    process.wait(timeout=60)
    psutil.wait_procs(tree, timeout=60)


def _terminated_trials(path: str, filesystem: Any) -> int:
    """Trials Tune's saved experiment state holds as finished (asked through Tune's API)."""
    from ray.tune import ExperimentAnalysis

    try:
        analysis = ExperimentAnalysis(path, storage_filesystem=filesystem)
    except Exception:  # noqa: BLE001 - the state is not written yet
        return 0
    return sum(trial.status == "TERMINATED" for trial in analysis.trials)


@pytest.mark.timeout(1500)
def test_killed_driver_resumes_without_rerunning_finished_trials(world, tmp_path):
    name = unique("restore")
    raw = sweep_raw(world, name, {"k1": {"values": [3, 9]}}, scheduler={"kind": "fifo"},
                    compute={"max_concurrent_trials": 1})
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump(raw))
    job = load_job(sweep_file)
    fs, root = storage.arrow_filesystem(storage.join(job.storage.root, "sweeps"), world["options"])
    experiment = f"{root}/{sweep_key(job)}"
    command = [str(Path(sys.executable).with_name("llavast")), "run", str(sweep_file), "--num-cpus", "4"]
    env = {**os.environ, "RAY_memory_monitor_refresh_ms": "0"}

    driver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 900
        while _terminated_trials(experiment, fs) < 1:
            assert driver.poll() is None, driver.stderr.read().decode()[-3000:] if driver.stderr else ""
            assert time.monotonic() < deadline, "the first trial did not finish in 15 minutes"
            time.sleep(2)
    finally:
        _kill_tree(driver)

    client = MlflowClient(world["mlflow"].uri)
    finished = [r for r in _runs(client, f"{name}-exp", **{"llavast.kind": "sweep-trial"})
                if r.info.status == "FINISHED"]
    assert len(finished) == 1
    first = finished[0]

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
    assert rerun.returncode == 0, rerun.stderr[-3000:]

    trials = _runs(client, f"{name}-exp", **{"llavast.kind": "sweep-trial"})
    assert len(trials) == 2 and all(t.info.status == "FINISHED" for t in trials)
    again = client.get_run(first.info.run_id)
    assert again.info.end_time == first.info.end_time  # not run again: its run was never reopened
    assert _terminated_trials(experiment, fs) == 2
