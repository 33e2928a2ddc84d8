"""A stage that fails on its Ray Train workers reports its root cause: the original exception type and message,
the file:line that raised it, the failed rank, and the worker's own log file, which holds the full traceback.
Its job carries a secret by reference, which no MLflow or Ray file ever holds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import ray

from llavast.config.secrets import SecretEnv
from llavast.errors import TrainError
from llavast.tracking import Tracker
from llavast.train.run import run_stage
from tests.fixtures import callbacks
from tests.fixtures.train import TrainWorld, unique

pytestmark = pytest.mark.integration
MESSAGE = "the audit found a sample without its media"
SECRET = "probe-7f3a9c1e-value"  # not secret-shaped: the point is where the value goes, not the shape check


def test_worker_failure_reports_root_cause_location_and_log(train_world: TrainWorld,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # The workers fail in the job's own code (its callback raises at step 1): what no driver check sees.
    # The job also carries a secret by reference: it must not show up in MLflow.
    monkeypatch.setenv("LLAVAST_PROBE_SECRET", SECRET)
    train = {"callbacks": [callbacks.spec("FailAt", at_step=1, message=MESSAGE)]}
    job = train_world.job(1, unique("broken"), unique("llavast"), train=train,
                          compute={"max_failures": 0}, env_vars={"PROBE_TOKEN": "${env:LLAVAST_PROBE_SECRET}"})
    with pytest.raises(TrainError) as caught:
        run_stage(job)
    failure = caught.value.failure
    assert failure is not None
    assert failure.exc_type == "ValueError"
    assert failure.message == MESSAGE
    assert failure.rank in (0, 1)
    # one line for the CLI's "error:" line and a table cell; the whole story in the report
    assert "\n" not in str(caught.value) and failure.summary in str(caught.value)
    path, line = failure.location.rsplit(":", 1)
    assert path.endswith("tests/fixtures/callbacks.py")
    assert "raise ValueError(" in Path(path).read_text().splitlines()[int(line) - 1]
    # The log is this machine's worker stderr file (local Ray), and it holds the full traceback.
    log_file = Path(failure.log.split(" ", 1)[0])
    assert log_file.suffix == ".err" and "ray logs worker --pid" in failure.log
    text = log_file.read_text()
    assert "Traceback" in text and MESSAGE in text
    client = Tracker(job.tracking.uri).client
    runs = client.search_runs([client.get_experiment_by_name(job.tracking.experiment).experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert runs[0].data.tags["llavast.error"] == failure.summary  # why, on the run itself
    assert "no checkpoint was saved: it starts over" in str(caught.value)  # no "resume" advice without one
    # the secret: its name in the params, never its value, anywhere MLflow or Ray keep text
    params, tags = runs[0].data.params, runs[0].data.tags
    assert params["env_vars.PROBE_TOKEN"] == "<redacted>"
    assert not [k for k, v in {**params, **tags}.items() if SECRET in v]
    assert _files_holding(SECRET, Path(train_world.mlflow.state_dir)) == []  # the database, the artifacts
    session_logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    assert (session_logs / "runtime_env_agent.log").exists()  # the log that records every runtime env
    assert _files_holding(SECRET, session_logs) == []


def test_a_secret_env_reaches_the_process_of_a_ray_worker(ray_local: None) -> None:
    """What the train workers and the decoding actors do first: apply the SecretEnv they were handed."""

    @ray.remote
    def probe(secrets: SecretEnv) -> str | None:
        secrets.apply()
        return os.environ.get("PROBE_TOKEN")

    assert ray.get(probe.remote(SecretEnv({"PROBE_TOKEN": SECRET}))) == SECRET


def _files_holding(text: str, root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file() and text.encode() in path.read_bytes()]
