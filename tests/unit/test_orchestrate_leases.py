"""Storage-marked nodes (synth, index) run under a lease in their output folder: a live holder refuses a
second runner (at once, or after the wait it is given), and a runner that gets the lease after another one
finished skips instead of rewriting."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from llavast.config.loader import parse_job
from llavast.lease import Holder, Lease, LeaseHeld
from llavast.orchestrate.dag import Node, Status
from llavast.orchestrate.executors import LEASE, MARKER, NodeWait, SynthExecutor
from llavast.storage import StorageOptions


def _node(out: Path) -> Node:
    job = parse_job({"kind": "synth", "name": "tiny-synth", "out": str(out),
                     "synth": {"videos": 1, "images": 1, "benchmark_videos": 0, "min_frames": 8, "max_frames": 8}})
    return Node("synth", (), job)


def test_a_live_holder_refuses_a_second_runner(tmp_path: Path) -> None:
    node, executor = _node(tmp_path / "st"), SynthExecutor()
    (tmp_path / "st").mkdir()
    holder = Holder(socket.gethostname(), os.getpid(), "2026-11-30T17:00:00+00:00", time.time())
    (tmp_path / "st" / LEASE).write_bytes(holder.encode())
    with pytest.raises(LeaseHeld, match=f"synth node synth .* is being run by {socket.gethostname()} pid"):
        executor.run(node, {}, executor.fingerprint(node, {}))
    assert not (tmp_path / "st" / MARKER).exists()


def test_runs_once_then_a_late_runner_skips(tmp_path: Path) -> None:
    node, executor = _node(tmp_path / "st"), SynthExecutor()
    fingerprint = executor.fingerprint(node, {})
    first = executor.run(node, {}, fingerprint)
    assert first.status == Status.SUCCEEDED and first.details["samples"] > 0
    marker = tmp_path / "st" / MARKER
    assert json.loads(marker.read_text())["fingerprint"] == fingerprint
    assert not (tmp_path / "st" / LEASE).exists()  # released
    written = marker.stat().st_mtime_ns
    late = executor.run(node, {}, fingerprint)  # e.g. a second pipeline that waited out the first
    assert late.status == Status.SKIPPED and marker.stat().st_mtime_ns == written


@pytest.mark.parametrize("first_finishes", [True, False])
def test_a_runner_waits_for_the_holder_then_skips_or_runs(tmp_path: Path, first_finishes: bool) -> None:
    """A node held by another runner is waited for (the runner told once, with the node's name); then skipped
    when that runner wrote its output, or run when it did not (it failed)."""
    node = _node(tmp_path / "st")
    told: list[tuple[str, int]] = []
    executor = SynthExecutor(NodeWait(30, lambda name, holder: told.append((name, holder.pid))))
    fingerprint = executor.fingerprint(node, {})
    held, release = threading.Event(), threading.Event()

    def first() -> None:
        with Lease(str(tmp_path / "st" / LEASE), StorageOptions(), what="first"):
            held.set()
            release.wait(10)
            if first_finishes:
                SynthExecutor().produce(node.spec)
                (tmp_path / "st" / MARKER).write_text(json.dumps({"fingerprint": fingerprint}))

    thread = threading.Thread(target=first)
    thread.start()
    assert held.wait(10)
    threading.Timer(1.0, release.set).start()
    result = executor.run(node, {}, fingerprint)
    thread.join()
    assert told == [("synth", os.getpid())]
    assert result.status == (Status.SKIPPED if first_finishes else Status.SUCCEEDED)
    assert json.loads((tmp_path / "st" / MARKER).read_text())["fingerprint"] == fingerprint
