"""A live two-node dev cluster from cluster/local/dev-cluster.sh: up, a task on the worker node, status, down.

It runs beside whatever other Ray instances the machine has: a private --dir, free ports, and `down`
must stop exactly the processes the script started. The finalizer always runs `down`, even when `up`
or an assertion fails.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "cluster" / "local" / "dev-cluster.sh"
RAY = str(Path(sys.executable).with_name("ray"))

# A driver that asks for the worker node's own resource: it can only run if that node joined the head.
DRIVER = """
import json, os, ray
ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
@ray.remote(num_cpus=1, resources={"dev_worker_1": 1})
def where():
    return ray.get_runtime_context().get_node_id()
alive = [n for n in ray.nodes() if n["Alive"]]
print(json.dumps({"task_node": ray.get(where.remote()), "nodes": len(alive),
                  "worker_node": [n["NodeID"] for n in alive if "dev_worker_1" in n["Resources"]],
                  "node_resources": sorted(k for n in alive for k in n["Resources"] if k.startswith("dev_"))}))
"""


@dataclass(frozen=True)
class DevCluster:
    dir: Path
    args: list[str]

    def run(self, command: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(SCRIPT), command, *self.args], capture_output=True, text=True,
                              timeout=timeout)

    def env(self) -> dict[str, str]:
        """The variables `up` writes to DIR/env for clients (address and the cluster's auth token)."""
        exports = (self.dir / "env").read_text().split("\n")
        pairs = [line.removeprefix("export ").split("=", 1) for line in exports if line.startswith("export ")]
        return {**os.environ, **dict(pairs)}

    def pids(self) -> set[int]:
        """Every live process of the cluster: each node's `ray start` and all of its descendants."""
        found: set[int] = set()
        for pid_file in self.dir.glob("*.pid"):
            try:
                node = psutil.Process(int(pid_file.read_text()))
                found |= {node.pid, *(p.pid for p in node.children(recursive=True))}
            except psutil.NoSuchProcess:
                continue
        return found


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture
def dev_cluster() -> Iterator[DevCluster]:
    directory = Path(tempfile.mkdtemp(prefix="ldc", dir="/tmp"))  # short: Ray's unix sockets live below
    gcs, dashboard, client = free_ports(3)
    cluster = DevCluster(directory, [
        "--dir", str(directory), "--workers", "1", "--head-cpus", "1", "--worker-cpus", "1",
        "--port", str(gcs), "--dashboard-port", str(dashboard), "--client-port", str(client),
        "--object-store-mb", "100", "--ray", RAY, "--timeout", "150",
    ])
    try:
        yield cluster
    finally:
        cluster.run("down", timeout=120)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.timeout(600)
def test_dev_cluster_up_status_down(dev_cluster):
    up = dev_cluster.run("up", timeout=400)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "1 head + 1 worker nodes" in up.stdout

    # The cluster really is two nodes: a task that needs the worker's resource runs there.
    driver = subprocess.run([sys.executable, "-c", DRIVER], capture_output=True, text=True, timeout=180,
                            env=dev_cluster.env())
    assert driver.returncode == 0, driver.stderr[-3000:]
    placed = json.loads(driver.stdout.strip().splitlines()[-1])
    # Counted through Ray's own API (ray.nodes()), not by reading `ray status` text.
    assert placed["nodes"] == 2
    assert placed["node_resources"] == ["dev_head", "dev_worker_1"]
    assert placed["worker_node"] == [placed["task_node"]]

    status = dev_cluster.run("status", timeout=120)
    assert status.returncode == 0, status.stderr
    assert status.stdout.count(" running") == 2  # the script's own line per node process it started

    processes = dev_cluster.pids()
    assert processes, "no processes found for the running cluster"
    down = dev_cluster.run("down", timeout=120)
    assert down.returncode == 0, down.stderr
    survivors = [p for p in processes if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    assert survivors == [], [psutil.Process(p).cmdline()[:3] for p in survivors]
    assert not list(dev_cluster.dir.glob("*.pid"))
