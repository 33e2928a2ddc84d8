"""Local services for the embedded default: an MLflow tracking server with a sqlite store.

The demo and the tests run the same real `mlflow server` process a team would run, only on 127.0.0.1
with a sqlite file, so the code under test talks HTTP to MLflow exactly as in production.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from llavast.errors import ServiceError

log = logging.getLogger(__name__)
LOCAL_MLFLOW_PORT = 5055  # `llavast services up` and the demo jobs' tracking.uri
LOCAL_MLFLOW_URI = f"http://127.0.0.1:{LOCAL_MLFLOW_PORT}"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _mlflow_executable() -> str:
    """The `mlflow` script of this interpreter's environment (a venv need not be activated)."""
    beside = Path(sys.executable).with_name("mlflow")
    if beside.exists():
        return str(beside)
    found = shutil.which("mlflow")
    if found is None:
        raise ServiceError("the `mlflow` executable is not installed: pip install mlflow")
    return found


@dataclass
class MlflowServer:
    """One `mlflow server` process: sqlite backend store and artifact store under `state_dir`.

    Start it with `start()`, stop it with `stop()` (or use it as a context manager). Stopping and
    starting again on the same `state_dir` and `port` keeps every run and registered model, which is
    how the tests simulate a transient outage.
    """

    state_dir: Path
    port: int = 0
    host: str = "127.0.0.1"
    start_timeout_s: float = 120.0
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return Path(self.state_dir) / "mlflow-server.log"

    def start(self) -> Self:
        """Start the server and block until `/health` answers; raise ServiceError if it does not."""
        state = Path(self.state_dir)
        state.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port(self.host)
        cmd = [
            _mlflow_executable(), "server",
            "--backend-store-uri", f"sqlite:///{state / 'mlflow.db'}",
            "--artifacts-destination", str(state / "artifacts"),
            "--host", self.host, "--port", str(self.port), "--workers", "1",
        ]
        # Job execution needs extra services and delays start-up by minutes; the platform does not use it.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with open(self.log_path, "ab") as out:
            self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                          start_new_session=True)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ServiceError(f"mlflow server exited with code {self._proc.returncode} during start-up; "
                                   f"see {self.log_path}")
            if self.healthy():
                log.info("mlflow server ready at %s (state in %s)", self.uri, state)
                return self
            time.sleep(0.25)
        self.stop()
        raise ServiceError(f"mlflow server did not answer on {self.uri} within {self.start_timeout_s:.0f}s; "
                           f"see {self.log_path}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout_s: float = 20.0) -> None:
        """Terminate the server's whole process group (uvicorn runs worker children)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout_s)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


PID_FILE = "mlflow-server.pid"


def mlflow_up(state_dir: Path, port: int, host: str = "127.0.0.1") -> tuple[str, bool]:
    """Start a detached MLflow server on `port` unless one already answers there: (uri, started now).

    The server outlives this process (its own session); `mlflow_down` stops it by the pid file it leaves.
    """
    server = MlflowServer(Path(state_dir), port=port, host=host)
    if server.healthy():
        return server.uri, False
    server.start()
    assert server._proc is not None
    (Path(state_dir) / PID_FILE).write_text(str(server._proc.pid))
    server._proc = None  # detach: leave it running
    return server.uri, True


def mlflow_down(state_dir: Path, timeout_s: float = 20.0) -> bool:
    """Stop the server `mlflow_up` started in `state_dir`; False when none was running."""
    pid_file = Path(state_dir) / PID_FILE
    if not pid_file.is_file():
        return False
    pid = int(pid_file.read_text())
    pid_file.unlink()
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    os.killpg(pid, signal.SIGKILL)
    return True
