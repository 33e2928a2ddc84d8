"""Tracking against a real `mlflow server` process: resumable runs, registry, init_from, outages."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from llavast.data.manifest import SCHEMA
from llavast.errors import TrackingError
from llavast.services import MlflowServer, free_port
from llavast.storage import StorageOptions
from llavast.tracking import (
    UNSENT_DIR,
    Backoff,
    MetricsLogger,
    Tracker,
    check_reachable,
    download_artifact,
    flatten_params,
    node_description,
    register_stage_artifact,
    replay_unsent,
    resolve_init_from,
    save_unsent,
    system_metrics,
)
from llavast.tracking.tags import RUN_NAME

pytestmark = pytest.mark.integration


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_unreachable_server_at_start_is_a_tracking_error() -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(TrackingError, match="unreachable.*tracking.uri"):
        Tracker(uri, timeout_s=2)
    assert time.monotonic() - start < 10


def test_run_key_continues_the_same_run_nested_under_parent(mlflow_server: MlflowServer) -> None:
    tracker = Tracker(mlflow_server.uri)
    exp = _name("exp")
    parent = tracker.ensure_run(exp, run_key=_name("pipeline"), run_name="pipeline")
    key = _name("stage1")
    first = tracker.ensure_run(exp, run_key=key, run_name="stage1", parent_run_id=parent)
    tracker.log_params(first, flatten_params({"train": {"lr": 1e-3, "stage": 1}, "name": "demo"}))
    tracker.end_run(first, "FAILED")

    again = tracker.ensure_run(exp, run_key=key, run_name="stage1", parent_run_id=parent)
    assert again == first
    tracker.log_params(again, flatten_params({"train": {"lr": 1e-3, "stage": 1}, "name": "demo"}))  # idempotent
    run = tracker.client.get_run(again)
    assert run.info.status == "RUNNING"
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.params == {"train.lr": "0.001", "train.stage": "1", "name": "demo"}
    assert tracker.ensure_run(exp, run_key=_name("other"), run_name="stage1") != first


def test_register_alias_lineage_and_init_from_resolution(mlflow_server: MlflowServer) -> None:
    tracker = Tracker(mlflow_server.uri)
    model = _name("llavast")
    run1 = tracker.ensure_run(_name("exp"), run_key=_name("k"), run_name="stage1")
    v1 = register_stage_artifact(tracker, model, "s3://bucket/runs/stage1/artifact", alias="stage1", run_id=run1,
                                 tags={"llavast.stage": "1", "llavast.fingerprint": "abc"})
    v2 = register_stage_artifact(tracker, model, "s3://bucket/runs/stage1b/artifact", alias="stage1",
                                 run_id=run1, tags={"llavast.stage": "1", "llavast.parent": "none"})
    assert (v1, v2) == ("1", "2")

    by_alias = resolve_init_from(f"models:/{model}@stage1", tracker)
    assert (by_alias.uri, by_alias.version, by_alias.model_name) == ("s3://bucket/runs/stage1b/artifact", "2", model)
    assert resolve_init_from(f"models:/{model}/1", tracker).uri == "s3://bucket/runs/stage1/artifact"
    assert resolve_init_from("s3://somewhere/else", None).uri == "s3://somewhere/else"
    assert tracker.client.get_model_version(model, "1").tags["llavast.fingerprint"] == "abc"
    with pytest.raises(TrackingError, match="cannot be resolved"):
        resolve_init_from(f"models:/{model}@stage9", tracker)
    with pytest.raises(TrackingError, match="not a registry URI"):
        resolve_init_from(f"models:/{model}@a@b", tracker)


def test_registering_the_same_stage_run_again_returns_its_version(mlflow_server: MlflowServer) -> None:
    """A driver killed after registering (before anything else), or a re-run of a finished stage: the second
    registration of one stage run finds the first version, adds what it lacks, and moves the alias to it."""
    tracker = Tracker(mlflow_server.uri)
    model = _name("llavast")
    run = tracker.ensure_run(_name("exp"), run_key=_name("k"), run_name="stage1")
    lineage = {"llavast.stage": "1", RUN_NAME: "demo-stage1-0123456789ab"}
    first = register_stage_artifact(tracker, model, "s3://b/artifacts/demo-stage1", alias="stage1", run_id=run,
                                    tags=lineage)
    other = register_stage_artifact(tracker, model, "s3://b/artifacts/other", alias="stage1", run_id=run,
                                    tags={"llavast.stage": "1", RUN_NAME: "other-stage1-ba9876543210"})
    again = register_stage_artifact(tracker, model, "s3://b/artifacts/demo-stage1", alias="stage1", run_id=run,
                                    tags={**lineage, "llavast.node_fingerprint": "f00d"})
    assert (first, other, again) == ("1", "2", "1")
    assert len(tracker.client.search_model_versions(f"name = '{model}'")) == 2
    assert tracker.client.get_model_version(model, "1").tags["llavast.node_fingerprint"] == "f00d"
    assert tracker.client.get_model_version_by_alias(model, "stage1").version == "1"


def test_local_artifact_is_registered_through_run_artifacts(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    tracker = Tracker(mlflow_server.uri)
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    (artifact / "manifest.json").write_text('{"stage": 1}')
    run = tracker.ensure_run(_name("exp"), run_key=_name("k"), run_name="stage1")
    model = _name("llavast")
    register_stage_artifact(tracker, model, str(artifact), alias="stage1", run_id=run, tags={})
    resolved = resolve_init_from(f"models:/{model}@stage1", tracker)
    assert resolved.needs_mlflow_download
    local = download_artifact(resolved, tracker, tmp_path / "fetched")
    assert (local / "manifest.json").read_text() == '{"stage": 1}'


def _system_history(tracker: Tracker, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in tracker.client.get_metric_history(run_id, key))


def test_system_metrics_of_a_node_land_in_the_run_and_continue_after_a_restart(mlflow_server: MlflowServer) -> None:
    """MLflow's monitor, per node (`system/<node id>/...`), with the node's description as a tag; a second
    monitor on the same run (a restarted worker) continues the steps instead of logging step 0 again."""
    tracker = Tracker(mlflow_server.uri)
    run = tracker.ensure_run(_name("exp"), run_key=_name("k"), run_name="stage1")
    cpu = "system/node0/cpu_utilization_percentage"
    for attempt in range(2):
        with system_metrics(mlflow_server.uri, run, "node0", interval_s=0.5,
                            description=node_description(["Tiny GPU"])) as node:
            assert node is not None and node.wait_started(30)
            deadline = time.monotonic() + 30
            while len(_system_history(tracker, run, cpu)) <= 2 * attempt and time.monotonic() < deadline:
                time.sleep(0.2)
        if attempt == 0:
            first = _system_history(tracker, run, cpu)
            assert first and first[0] == 0
    steps = _system_history(tracker, run, cpu)
    assert len(steps) > len(first) and len(set(steps)) == len(steps) and steps[0] == 0  # continued: no step twice
    data = tracker.client.get_run(run).data
    assert {"system/node0/system_memory_usage_megabytes", "system/node0/disk_usage_percentage",
            "system/node0/network_receive_megabytes"} <= set(data.metrics)
    assert not any(k.startswith("system/") and not k.startswith("system/node0/") for k in data.metrics)
    description = data.tags["llavast.hardware.node0"]
    assert description.startswith("host=") and "cpus=" in description and "gpus=1x Tiny GPU" in description


def test_dataset_input_is_the_manifest_logged_once_per_run(mlflow_server: MlflowServer) -> None:
    """Name, source URI, digest, the manifest's schema and a profile; a re-run (same name and digest) adds
    nothing, another index (another digest) is a second input."""
    tracker = Tracker(mlflow_server.uri)
    run = tracker.ensure_run(_name("exp"), run_key=_name("k"), run_name="stage1")
    uri, profile = "s3://bucket/index/stage1", {"total": 14, "by_media": {"video": 8, "image": 6}}
    assert tracker.log_dataset(run, uri, name="stage1", digest="0123456789", profile=profile, schema=SCHEMA)
    assert not tracker.log_dataset(run, uri, name="stage1", digest="0123456789", profile=profile, schema=SCHEMA)
    inputs = tracker.client.get_run(run).inputs.dataset_inputs
    assert len(inputs) == 1
    dataset = inputs[0].dataset
    assert (dataset.name, dataset.digest, dataset.source_type) == ("stage1", "0123456789", "s3")
    assert json.loads(dataset.source) == {"uri": uri} and json.loads(dataset.profile) == profile
    columns = {c["name"]: c["type"] for c in json.loads(dataset.schema)["mlflow_colspec"]}
    assert list(columns) == SCHEMA.names and columns["uid"] == "string" and columns["record_index"] == "long"
    assert columns["variables"] == "object"
    assert {t.key: t.value for t in inputs[0].tags} == {"mlflow.data.context": "training"}
    assert tracker.log_dataset(run, uri, name="stage1", digest="abcdef0123", profile=profile)
    assert len(tracker.client.get_run(run).inputs.dataset_inputs) == 2


def test_metrics_logger_survives_an_outage_without_blocking(tmp_path: Path) -> None:
    server = MlflowServer(state_dir=tmp_path / "mlflow").start()
    try:
        tracker = Tracker(server.uri)
        run = tracker.ensure_run("outage", run_key="k", run_name="stage")
        logger = MetricsLogger(server.uri, run, backoff=Backoff(attempts=30, base_s=0.5, max_s=2.0))
        logger.log({"loss": 3.0}, step=0)
        time.sleep(1.0)
        server.stop()
        start = time.monotonic()
        for step in range(1, 4):
            logger.log({"loss": 3.0 - step}, step=step)  # server down: must return at once
        assert time.monotonic() - start < 0.5
        time.sleep(1.0)
        server.start()  # same port, same sqlite store: a transient outage
        assert logger.close(timeout_s=120) == []  # everything landed
        assert logger.dropped_points == 0
        history = tracker.client.get_metric_history(run, "loss")
        assert sorted((m.step, m.value) for m in history) == [(0, 3.0), (1, 2.0), (2, 1.0), (3, 0.0)]
    finally:
        server.stop()


def test_points_mlflow_did_not_take_at_the_end_are_kept_and_replayed_once(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The end of a stage under an outage: close() hands back what is unsent, it is kept in storage, and the
    replay into the run loses nothing and doubles nothing (the point that landed before is not repeated)."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the client's own retries: minutes otherwise
    server = MlflowServer(state_dir=tmp_path / "mlflow").start()
    try:
        tracker = Tracker(server.uri, backoff=Backoff(attempts=2, base_s=0.1))
        run = tracker.ensure_run("end-outage", run_key="k", run_name="stage")
        logger = MetricsLogger(server.uri, run, backoff=Backoff(attempts=30, base_s=0.2, max_s=1.0))
        logger.log({"loss": 3.0}, step=1)
        deadline = time.monotonic() + 30
        while not tracker.client.get_metric_history(run, "loss") and time.monotonic() < deadline:
            time.sleep(0.2)
        server.stop()
        for step in (2, 3):
            logger.log({"loss": 3.0 - step, "samples_consumed": 2.0 * step}, step=step)
        unsent = logger.close(timeout_s=2)
        assert sorted((m.key, m.step) for m in unsent) == [("loss", 2), ("loss", 3), ("samples_consumed", 2),
                                                          ("samples_consumed", 3)]
        kept = str(tmp_path / "run" / UNSENT_DIR)
        assert save_unsent(unsent, kept, StorageOptions()) is not None
        assert replay_unsent(tracker, run, kept, StorageOptions()) == 0  # still down: the file stays
        assert len(list(Path(kept).iterdir())) == 1
        server.start()
        # the first point as well, as if a batch had landed just before the deadline: not doubled
        landed = tracker.client.get_metric_history(run, "loss")  # step 1, and any batch still in flight at close
        save_unsent(landed, kept, StorageOptions())
        assert replay_unsent(tracker, run, kept, StorageOptions()) == len(unsent) + len(landed)
        assert list(Path(kept).iterdir()) == []
        history = tracker.client.get_metric_history(run, "loss")
        assert sorted((m.step, m.value) for m in history) == [(1, 3.0), (2, 1.0), (3, 0.0)]
        assert len(tracker.client.get_metric_history(run, "samples_consumed")) == 2
    finally:
        server.stop()


def test_services_up_in_the_foreground_serves_until_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    llavast = str(Path(sys.executable).with_name("llavast"))
    proc = subprocess.Popen([llavast, "services", "up", "--foreground", "--port", str(port),
                             "--state-dir", str(tmp_path / "mlflow")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                check_reachable(f"http://127.0.0.1:{port}", timeout_s=2)
                break
            except TrackingError:
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.5)
        run = Tracker(f"http://127.0.0.1:{port}").ensure_run("fg", run_key="k", run_name="r")  # a working server
        assert run
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        with pytest.raises(TrackingError):  # Ctrl-C stopped the server too
            check_reachable(f"http://127.0.0.1:{port}", timeout_s=2)
    finally:
        if proc.poll() is None:
            proc.kill()



def _create_at_once(uri: str, name: str, count: int) -> tuple[list[str], list[Exception]]:
    """`count` trackers ask for experiment `name` at the same moment; their ids and errors."""
    import threading

    from llavast.tracking import Tracker

    trackers = [Tracker(uri) for _ in range(count)]
    barrier, ids, errors = threading.Barrier(count), [], []

    def create(tracker: Tracker) -> None:
        barrier.wait()
        try:
            ids.append(tracker.experiment_id(name))
        except Exception as err:  # noqa: BLE001 - collected for the assertion
            errors.append(err)

    threads = [threading.Thread(target=create, args=(t,)) for t in trackers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return ids, errors


def test_runners_creating_one_experiment_at_once_get_the_same_id(mlflow_server):
    """Two pipelines started together both find the experiment missing and create it: the loser of the race
    reads the winner's id instead of failing (MLflow answers RESOURCE_ALREADY_EXISTS)."""
    import uuid

    for _ in range(5):
        ids, errors = _create_at_once(mlflow_server.uri, f"race-{uuid.uuid4().hex[:8]}", 4)
        assert not errors and len(ids) == 4 and len(set(ids)) == 1, (errors, ids)
    from mlflow import MlflowClient

    experiment = MlflowClient(mlflow_server.uri).get_experiment(ids[0])  # a model-training experiment
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
