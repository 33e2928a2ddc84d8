"""Ray Jobs submission: `llavast submit` against a private Ray head runs a tiny stage job to SUCCEEDED, and
`llavast status` / `llavast logs` / `llavast stop` show and control it; a broken YAML fails in one line
before any cluster is contacted.

The head is this module's own `ray start --head --block`: its own temp dir, free ports, its own auth token
(Ray 2.60 token authentication: the test works whether or not ~/.ray/auth_token exists), the venv's bin dir
first on PATH so the job's entrypoint `llavast run ...` runs the same installed platform, and the teardown
stops exactly its processes (never `ray stop`, which stops every Ray on the machine). The head starts
WITHOUT the S3 credentials: the job gets them only through its YAML's `env_vars: ${env:...}` references,
resolved by `submit` from this process' environment, as a user's credentials reach a remote cluster. The MLflow
server is the head's own MLFLOW_TRACKING_URI (as the KubeRay Secret sets it on every pod): the job YAML names
none, and the submitting process has none.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml

from llavast.services import MlflowServer
from tests.fixtures.train import TrainWorld, unique

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


@dataclass(frozen=True)
class RayHead:
    dashboard: str  # http://127.0.0.1:<port>, the Jobs API
    env: dict[str, str]  # this process' environment plus the head's auth token, for CLI clients


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _wait_for_jobs_api(url: str, token: str, head: subprocess.Popen, log: Path, timeout_s: float = 180) -> None:
    """Until the dashboard answers /api/version (what the Jobs client checks first) or the head dies."""
    request = urllib.request.Request(f"{url}/api/version", headers={"Authorization": f"Bearer {token}"})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"ray start exited with {head.returncode}: {log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(request, timeout=2).close()
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(1)
    raise RuntimeError(f"the Ray head's Jobs API did not answer at {url} within {timeout_s:.0f}s: "
                       f"{log.read_text()[-3000:]}")


def _stop(head: subprocess.Popen) -> None:
    """SIGTERM to `ray start --block` (it stops its node), then SIGKILL whatever of its tree is left."""
    try:
        tree = psutil.Process(head.pid).children(recursive=True)  # taken first: orphans get re-parented
    except psutil.NoSuchProcess:
        tree = []
    head.send_signal(signal.SIGTERM)
    try:
        head.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()
    for process in tree:
        try:
            process.kill()  # a psutil.Process refuses to signal a pid reused by another process
        except psutil.NoSuchProcess:
            pass


@pytest.fixture(scope="module")
def ray_head(mlflow_server: MlflowServer) -> Iterator[RayHead]:
    directory = Path(tempfile.mkdtemp(prefix="lsb", dir="/tmp"))  # short: Ray's unix sockets live below it
    token = secrets.token_hex(32)
    (directory / "auth_token").write_text(token)
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(directory / "auth_token")}
    gcs, dashboard, client = _free_ports(3)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "MLFLOW_TRACKING_URI")}
    head_env = {k: v for k, v in env.items() if k not in CREDENTIALS}
    head_env.update(auth, MLFLOW_TRACKING_URI=mlflow_server.uri, PATH=f"{BIN}:{env.get('PATH', '')}",
                    RAY_USAGE_STATS_ENABLED="0",
                    RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",  # nothing to drain: stop in seconds
                    RAY_memory_monitor_refresh_ms="0")  # shared machine: no kills by total memory use
    log = directory / "head.log"
    with open(log, "wb") as out:
        head = subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", "--block", "--disable-usage-stats", f"--temp-dir={directory}/ray",
             f"--port={gcs}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
             f"--ray-client-server-port={client}", "--num-cpus=4", "--num-gpus=0",
             f"--object-store-memory={200 * 1024**2}", "--node-manager-port=0", "--object-manager-port=0",
             "--metrics-export-port=0", "--dashboard-agent-listen-port=0", "--dashboard-agent-grpc-port=0",
             "--runtime-env-agent-port=0", "--min-worker-port=0", "--max-worker-port=0"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=head_env, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{dashboard}"
        _wait_for_jobs_api(url, token, head, log)
        yield RayHead(dashboard=url, env={**env, **auth, "COLUMNS": "250"})  # wide: rich tables do not fold
    finally:
        _stop(head)
        shutil.rmtree(directory, ignore_errors=True)


def llavast(head: RayHead, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "llavast"), *args], capture_output=True, text=True, timeout=timeout,
                          env=head.env, cwd=ROOT)


def stage_yaml(world: TrainWorld, directory: Path, name: str, model: str) -> Path:
    """A 2-worker, 2-step stage-1 job; the working dir shipped to the cluster holds only this YAML, every
    path in it is absolute, the S3 credentials are ${env:...} references, and no tracking.uri: the cluster's."""
    raw = world.job(1, name, model, train={"max_steps": 2, "checkpoint_every": 2}).model_dump(mode="json")
    del raw["tracking"]["uri"]
    raw.update(working_dir=str(directory), env_vars={k: f"${{env:{k}}}" for k in CREDENTIALS})
    job_file = directory / "stage1.yaml"
    job_file.write_text(yaml.safe_dump(raw))
    return job_file


def wait_for_status(head: RayHead, job_id: str, wanted: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        shown = llavast(head, "status", job_id, "--jobs-address", head.dashboard)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        if wanted in shown.stdout:
            return
        time.sleep(1)
    raise AssertionError(f"job {job_id} did not reach {wanted} in {timeout_s:.0f}s: {shown.stdout}")


@pytest.mark.timeout(600)
def test_submit_follow_status_logs(train_world: TrainWorld, ray_head: RayHead, tmp_path: Path) -> None:
    name, model = unique("submitted"), unique("llavast-sub")
    job_file = stage_yaml(train_world, tmp_path, name, model)
    submission_id = unique("llavast-job")

    submitted = llavast(ray_head, "submit", str(job_file), "--jobs-address", ray_head.dashboard, "--follow",
                        "--submission-id", submission_id, timeout=540)
    out = submitted.stdout
    assert submitted.returncode == 0, (out + submitted.stderr)[-6000:]
    assert f"submitted {submission_id} to {ray_head.dashboard}" in out
    assert f"{submission_id}: SUCCEEDED" in out
    assert f"done stage {name}" in out and f"models:/{model}/1 (@stage1)" in out  # the job's output, via --follow

    status = llavast(ray_head, "status", "--jobs-address", ray_head.dashboard)
    assert status.returncode == 0, status.stderr
    row = next(line for line in status.stdout.splitlines() if submission_id in line)
    assert "SUCCEEDED" in row and "llavast run stage1.yaml" in row

    one = llavast(ray_head, "status", submission_id, "--jobs-address", ray_head.dashboard)
    assert one.returncode == 0 and "SUCCEEDED" in one.stdout, one.stdout + one.stderr

    logs = llavast(ray_head, "logs", submission_id, "--jobs-address", ray_head.dashboard)
    assert logs.returncode == 0, logs.stderr
    assert f"done stage {name}" in logs.stdout and f"models:/{model}/1 (@stage1)" in logs.stdout
    assert re.search(r"steps\s*│\s*2\b", logs.stdout), logs.stdout  # the stage's table: 2 steps


@pytest.mark.timeout(400)
def test_stop_a_running_job_and_unknown_ids(train_world: TrainWorld, ray_head: RayHead, tmp_path: Path) -> None:
    job_file = stage_yaml(train_world, tmp_path, unique("stopped"), unique("llavast-stop"))
    submission_id = unique("llavast-job")
    submitted = llavast(ray_head, "submit", str(job_file), "--jobs-address", ray_head.dashboard,
                        "--submission-id", submission_id)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    wait_for_status(ray_head, submission_id, "RUNNING")

    stopped = llavast(ray_head, "stop", submission_id, "--jobs-address", ray_head.dashboard)
    assert stopped.returncode == 0 and f"{submission_id}: stop requested" in stopped.stdout, stopped.stderr
    wait_for_status(ray_head, submission_id, "STOPPED")
    again = llavast(ray_head, "stop", submission_id, "--jobs-address", ray_head.dashboard)
    assert again.returncode == 0 and f"{submission_id}: was not running" in again.stdout, again.stderr

    for command in (["status", "no-such-job"], ["logs", "no-such-job"], ["stop", "no-such-job"]):
        unknown = llavast(ray_head, *command, "--jobs-address", ray_head.dashboard)
        assert unknown.returncode == 1, unknown.stdout + unknown.stderr
        assert unknown.stderr.startswith(f"error: no job 'no-such-job' on the cluster at {ray_head.dashboard}")
        assert len(unknown.stderr.strip().splitlines()) == 1, unknown.stderr


VALID = {"kind": "stage", "name": "broken", "model": {"base": "/m"}, "data": {"manifest": "/d"}, "train": {"stage": 1},
         "tracking": {"uri": "http://127.0.0.1:5000", "experiment": "e", "registered_model": "m"},
         "storage": {"root": "/tmp/r"}}
BROKEN = {
    "syntax": ("kind: stage\nname: [unclosed\n", "line 3, column 1: invalid YAML"),
    "field": (yaml.safe_dump({**VALID, "compute": {"num_workers": 2, "placement_strategy": "SIDEWAYS"}}),
              "compute.placement_strategy: Input should be 'PACK', 'SPREAD', 'STRICT_SPREAD' or 'STRICT_PACK'"),
    "env": (yaml.safe_dump({**VALID, "working_dir": ".", "env_vars": {"AWS_ACCESS_KEY_ID": "${env:LLAVAST_UNSET}"}}),
            "env_vars.AWS_ACCESS_KEY_ID: references ${env:LLAVAST_UNSET} but LLAVAST_UNSET is not set here"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_submit_of_a_broken_yaml_fails_before_contacting_the_cluster(tmp_path: Path, case: str) -> None:
    text, message = BROKEN[case]
    job_file = tmp_path / "broken.yaml"
    job_file.write_text(text)
    nowhere = f"http://127.0.0.1:{_free_ports(1)[0]}"  # nothing listens: contacting it would be another error
    env = {k: v for k, v in os.environ.items() if k != "LLAVAST_UNSET"}
    proc = subprocess.run([str(BIN / "llavast"), "submit", str(job_file), "--jobs-address", nowhere],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.startswith(f"error: {job_file}: ") and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr  # one line, no traceback


def test_an_unreachable_jobs_api_is_a_one_line_error() -> None:
    nowhere = f"http://127.0.0.1:{_free_ports(1)[0]}"
    proc = subprocess.run([str(BIN / "llavast"), "status", "--jobs-address", nowhere], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: cannot reach the Ray Jobs API at {nowhere}: "), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
