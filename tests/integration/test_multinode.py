"""Multi-node: a stage on a `ray.cluster_utils.Cluster` of a CPU-less head and two worker nodes.

`compute.placement_strategy: STRICT_SPREAD` must put the two Ray Train workers on different nodes; the
checkpoints and the stage artifact must land on the S3 server and the version in the MLflow server.

The cluster lives in a holder process of its own: this session's driver is already connected to the
`ray_local` instance, and a process can be the driver of one cluster only (a Cluster started in this
process would also reset this process' Ray state when it shuts down). The stage runs through the real
CLI, `llavast run JOB --ray-address <cluster>`, as a user would run it. Which node each rank ran on
comes from Ray Train's own worker logs: every record carries `world_rank`, `run_name` and `node_id`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml

from llavast import storage
from llavast.config.loader import fingerprint, load_stage_job
from llavast.tracking import Tracker
from llavast.train.run import ARTIFACTS_DIR
from llavast.train.trainer import RUNS_DIR, stage_run_name
from tests.fixtures.train import TrainWorld, unique

pytestmark = pytest.mark.integration
LLAVAST = str(Path(sys.executable).with_name("llavast"))

# The holder: head without CPUs (no training worker can land there), two 2-CPU worker nodes. It prints the
# cluster's address and node ids, then keeps the cluster up until its stdin closes.
HOLDER = """
import json, sys
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
workers = [cluster.add_node(num_cpus=2, object_store_memory=200 * 1024**2) for _ in range(2)]
cluster.wait_for_nodes()
print(json.dumps({"address": cluster.address, "head": cluster.head_node.node_id,
                  "workers": [n.node_id for n in workers],
                  "session_dir": cluster.head_node.get_session_dir_path()}), flush=True)
sys.stdin.read()
cluster.shutdown()
"""


@dataclass(frozen=True)
class HeldCluster:
    address: str
    head: str
    workers: list[str]
    session_dir: Path


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def cluster() -> Iterator[HeldCluster]:
    """A 3-node Cluster in its own process group, with its own Ray temp dir (short: unix socket paths)."""
    temp = Path(tempfile.mkdtemp(prefix="lmn", dir="/tmp"))
    env = {**os.environ, "RAY_TMPDIR": str(temp), "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_memory_monitor_refresh_ms": "0"}  # the machine is shared: no kills by total memory use
    with open(temp / "holder.log", "wb") as log:
        holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=log, env=env, text=True, start_new_session=True)
    processes: list[psutil.Process] = []
    try:
        line = holder.stdout.readline()
        if not line:
            raise RuntimeError(f"the Cluster did not start: {(temp / 'holder.log').read_text()[-3000:]}")
        info = json.loads(line)
        yield HeldCluster(info["address"], info["head"], info["workers"], Path(info["session_dir"]))
        processes = psutil.Process(holder.pid).children(recursive=True)  # GCS, raylets, Ray workers
    finally:
        holder.stdin.close()  # the holder shuts the cluster down
        try:
            holder.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(holder.pid, signal.SIGKILL)
            holder.wait()
        survivors = [p for p in processes if _alive(p)]
        for process in survivors:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()  # psutil refuses to signal a pid that now belongs to another process
        shutil.rmtree(temp, ignore_errors=True)
    assert not survivors, f"the Cluster left processes behind: {[p.pid for p in survivors]}"


def rank_nodes(session_dir: Path, run_name: str) -> dict[int, set[str]]:
    """world rank -> node ids, from Ray Train's JSON worker logs (logs/train/ray-train-*-worker-*.log)."""
    found: dict[int, set[str]] = {}
    for path in (session_dir / "logs" / "train").glob("ray-train-*-worker-*.log"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record.get("run_name") == run_name and "world_rank" in record:
                found.setdefault(int(record["world_rank"]), set()).add(record["node_id"])
    return found


@pytest.mark.timeout(600)
def test_stage_on_two_nodes_checkpoints_on_s3(train_world: TrainWorld, cluster: HeldCluster, tmp_path: Path) -> None:
    name, model = unique("multinode"), unique("llavast-mn")
    raw = train_world.job(1, name, model, train={"max_steps": 3, "checkpoint_every": 2}).model_dump(mode="json")
    raw["compute"]["placement_strategy"] = "STRICT_SPREAD"
    job_file = tmp_path / "stage1.yaml"
    job_file.write_text(yaml.safe_dump(raw))
    job = load_stage_job(job_file)
    run_name = stage_run_name(job, fingerprint(job))

    proc = subprocess.run([LLAVAST, "run", str(job_file), "--ray-address", cluster.address],
                          capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    assert f"models:/{model}/1 (@stage1)" in proc.stdout

    # Two ranks, on two different worker nodes of this cluster (never the CPU-less head).
    nodes = rank_nodes(cluster.session_dir, run_name)
    assert sorted(nodes) == [0, 1]
    assert all(len(ids) == 1 for ids in nodes.values()), nodes  # no restart moved a rank
    (node0,), (node1,) = nodes[0], nodes[1]
    assert node0 != node1
    assert {node0, node1} == set(cluster.workers)

    # Ray Train's checkpoints (steps 2 and 3, each with both ranks' files) and the artifact on the S3 server.
    options = train_world.s3.options
    run_dir = storage.join(job.storage.root, RUNS_DIR, run_name)
    checkpoints = sorted(n for n in storage.list_names(run_dir, options) if n.startswith("step_"))
    assert checkpoints == ["step_00000002", "step_00000003"]
    for step in checkpoints:
        files = {uri.rsplit("/", 1)[-1] for uri in storage.list_files(storage.join(run_dir, step), options)}
        assert {"progress.json", "zero_pp_rank_0_mp_rank_00_optim_states.pt",  # each rank's ZeRO-2 shard
                "zero_pp_rank_1_mp_rank_00_optim_states.pt"} <= files, files
        progress = json.loads(storage.read_text(storage.join(run_dir, step, "progress.json"), options))
        assert (progress["step"], progress["world_size"]) == (int(step.removeprefix("step_")), 2)
    artifact = storage.join(job.storage.root, ARTIFACTS_DIR, run_name)
    assert {"manifest.json", "weights.safetensors", "config.json"} <= storage.list_names(artifact, options)
    assert json.loads(storage.read_text(storage.join(artifact, "manifest.json"), options))["steps"] == 3

    # The version in the MLflow server points at that artifact.
    version = Tracker(train_world.mlflow.uri).client.get_model_version_by_alias(model, "stage1")
    assert version.version == "1"
    assert version.source == artifact
    assert version.tags["llavast.run_name"] == run_name
