"""MLflow goes down before a stage ends: training finishes, the metric points MLflow did not take are kept in
the stage's storage, the stage reports "trained; registration pending", and the same job run again (MLflow
back) registers it without training again and replays every kept point: no point lost, none doubled."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from llavast import storage
from llavast.config.loader import fingerprint, parse_job
from llavast.errors import RegistrationPending
from llavast.services import MlflowServer
from llavast.tracking import UNSENT_DIR, Tracker
from llavast.train.run import run_stage
from llavast.train.trainer import stage_run_name
from tests.fixtures.train import TrainWorld, unique

pytestmark = pytest.mark.integration
STEPS = 4
NO_CLIENT_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}  # MLflow's own HTTP retries take minutes


def _stage_run(tracker: Tracker, experiment: str, run_name: str) -> str | None:
    found = tracker.client.get_experiment_by_name(experiment)
    runs = tracker.client.search_runs([found.experiment_id], filter_string=f"tags.`llavast.run_key` = '{run_name}'") \
        if found else []
    return str(runs[0].info.run_id) if runs else None


def _stop_after_first_point(server: MlflowServer, experiment: str, run_name: str, stopped: threading.Event) -> None:
    """Stop the server once the stage's first loss point landed: the rest of the stage meets the outage."""
    tracker = Tracker(server.uri)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        run_id = _stage_run(tracker, experiment, run_name)
        if run_id and tracker.client.get_metric_history(run_id, "loss"):
            server.stop()
            stopped.set()
            return
        time.sleep(0.2)


@pytest.mark.timeout(600)
def test_an_outage_at_the_end_of_a_stage_loses_no_point_and_a_rerun_registers(
        train_world: TrainWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in NO_CLIENT_RETRIES.items():
        monkeypatch.setenv(name, value)
    server = MlflowServer(state_dir=tmp_path / "mlflow").start()
    try:
        raw = train_world.job(1, unique("outage"), unique("llavast-outage"), env_vars=NO_CLIENT_RETRIES,
                              train={"max_steps": STEPS, "checkpoint_every": STEPS}).model_dump(mode="json")
        raw["tracking"]["uri"] = server.uri
        job = parse_job(raw)
        run_name = stage_run_name(job, fingerprint(job))
        stopped = threading.Event()
        watcher = threading.Thread(target=_stop_after_first_point, daemon=True,
                                   args=(server, job.tracking.experiment, run_name, stopped))
        watcher.start()

        with pytest.raises(RegistrationPending) as caught:
            run_stage(job)
        assert stopped.is_set()
        message = str(caught.value)
        assert f"stage 1 ({run_name}) trained; registration pending: " in message
        assert message.endswith("re-run to register (training is not repeated)") and "\n" not in message
        kept_dir = storage.join(job.storage.root, UNSENT_DIR, run_name)
        assert storage.list_files(kept_dir, job.storage.options)  # rank 0 kept what MLflow did not take

        server.start()  # same port, same store: MLflow is back
        tracker = Tracker(server.uri)
        run_id = _stage_run(tracker, job.tracking.experiment, run_name)
        assert tracker.client.get_run(run_id).info.status == "RUNNING"  # trained, not failed

        result = run_stage(job)
        assert (result.mlflow_run_id, result.model_version) == (run_id, "1")
        assert tracker.client.get_run(run_id).info.status == "FINISHED"
        assert tracker.client.get_metric_history(run_id, "resumed_from_step") == []  # not trained again
        loss = tracker.client.get_metric_history(run_id, "loss")
        assert sorted(m.step for m in loss) == list(range(1, STEPS + 1))  # every step once: none lost, none doubled
        assert [m.step for m in tracker.client.get_metric_history(run_id, "data_rank0/samples")] == [STEPS]
        assert storage.list_files(kept_dir, job.storage.options) == []  # replayed, then removed
        versions = tracker.client.search_model_versions(f"name='{job.tracking.registered_model}'")
        assert [v.version for v in versions] == ["1"]
    finally:
        server.stop()
