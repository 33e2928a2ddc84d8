"""MLflow's system metrics, one monitor per node, into the stage's run: `system/<node id>/<metric>`.

The monitor is MLflow's own (`SystemMetricsMonitor`): every `interval_s` it samples CPU, memory, disk and
network, and GPU utilisation, memory and power when `nvidia-ml-py` (pynvml) is installed and finds a GPU
(AMD through pyrsmi likewise). It logs from a background thread and stops by itself when the run is no
longer RUNNING or the server stops answering. Like rank 0's `MetricsLogger`, it never fails a run: a monitor
that cannot start (psutil missing, server down) is a warning, and stopping waits at most `stop_timeout_s`.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mlflow.tracking import MlflowClient

from llavast.tracking.tags import HARDWARE_PREFIX

log = logging.getLogger(__name__)

SAMPLING_INTERVAL_S = 10.0  # MLflow's default; `tracking.system_metrics_interval_s` in a job
STOP_TIMEOUT_S = 30.0  # the most a worker waits at its end for the monitor's last batch


def node_description(gpus: list[str] | None = None) -> str:
    """What the node is, for the `llavast.hardware.<node id>` tag: host, CPU count, memory, GPU names."""
    parts = [f"host={socket.gethostname()}", f"cpus={os.cpu_count()}"]
    try:
        import psutil

        parts.append(f"memory_gb={psutil.virtual_memory().total / 2**30:.1f}")
    except ImportError:
        pass
    parts.append(f"gpus={len(gpus)}x {gpus[0]}" if gpus else "gpus=0")
    parts.append(f"{platform.system().lower()}-{platform.machine()}")
    return " ".join(parts)


class NodeMonitor:
    """One node's MLflow system metrics monitor, started in the background (creating it asks the server for
    the run's last system step, so a resumed attempt continues the curves instead of restarting at 0; a
    server that is slow or down must not hold the worker)."""

    def __init__(self, uri: str, run_id: str, node_id: str, interval_s: float, description: str | None) -> None:
        self.uri, self.run_id, self.node_id, self.interval_s = uri, run_id, node_id, interval_s
        self.monitor: Any = None  # the SystemMetricsMonitor once it runs
        self._description = description
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._start, name=f"system-metrics-{node_id}", daemon=True)
        self._thread.start()

    def _start(self) -> None:
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            monitor = SystemMetricsMonitor(self.run_id, sampling_interval=self.interval_s, node_id=self.node_id,
                                           tracking_uri=self.uri, resume_logging=True)
        except Exception as err:  # noqa: BLE001 - system metrics are never worth a failed run
            log.warning("no system metrics for node %s in MLflow run %s: %s", self.node_id, self.run_id, err)
            return
        if self._description:
            try:
                MlflowClient(tracking_uri=self.uri).set_tag(self.run_id, f"{HARDWARE_PREFIX}{self.node_id}",
                                                            self._description)
            except Exception as err:  # noqa: BLE001 - nor is the node's description
                log.warning("could not tag MLflow run %s with node %s: %s", self.run_id, self.node_id, err)
        with self._lock:
            if self._closed:
                return
            monitor.start()
            self.monitor = monitor
        log.info("system metrics of node %s every %.0f s into MLflow run %s", self.node_id, self.interval_s,
                 self.run_id)

    def wait_started(self, timeout_s: float) -> bool:
        """Wait at most `timeout_s` for the start to end; whether the monitor runs."""
        self._thread.join(timeout_s)
        return self.monitor is not None

    def close(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop the monitor and flush what it holds, waiting at most `timeout_s`; never raises."""
        with self._lock:
            self._closed = True
            monitor, self.monitor = self.monitor, None
        if monitor is None:
            return
        stopper = threading.Thread(target=monitor.finish, name=f"system-metrics-stop-{self.node_id}", daemon=True)
        stopper.start()
        stopper.join(timeout_s)
        if stopper.is_alive():
            log.warning("system metrics of node %s did not stop within %.0f s (MLflow slow or down?); left behind",
                        self.node_id, timeout_s)


@contextmanager
def system_metrics(uri: str, run_id: str, node_id: str, *, interval_s: float = SAMPLING_INTERVAL_S,
                   description: str | None = None,
                   stop_timeout_s: float = STOP_TIMEOUT_S) -> Iterator[NodeMonitor | None]:
    """MLflow's system metrics of this node into `run_id` while the block runs, as `system/<node_id>/...`;
    `description` (see `node_description`) goes on the run as the tag `llavast.hardware.<node_id>`.

    Yields the `NodeMonitor`, or None when `interval_s` is 0 (off) or the monitor could not be made.
    """
    node = None
    if interval_s > 0:
        try:
            node = NodeMonitor(uri, run_id, node_id, interval_s, description)
        except Exception as err:  # noqa: BLE001 - a thread that cannot start is not worth a failed run
            log.warning("no system metrics for node %s in MLflow run %s: %s", node_id, run_id, err)
    try:
        yield node
    finally:
        if node is not None:
            node.close(stop_timeout_s)
