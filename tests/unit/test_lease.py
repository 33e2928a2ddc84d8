"""Leases on a real filesystem: exclusive, named holder, released, and taken over when the holder is gone."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from llavast import storage
from llavast.lease import Holder, Lease, LeaseHeld, LeaseWait
from llavast.storage import StorageOptions

OPTIONS = StorageOptions()


def test_create_exclusive_is_exclusive(tmp_path: Path) -> None:
    uri = str(tmp_path / "deep" / "lease.json")
    assert storage.create_exclusive(uri, b"first", OPTIONS) is True
    assert storage.create_exclusive(uri, b"second", OPTIONS) is False
    assert Path(uri).read_bytes() == b"first"


def test_a_second_runner_is_refused_with_the_holders_name_then_the_lease_is_released(tmp_path: Path) -> None:
    uri = str(tmp_path / "stage1.json")
    with Lease(uri, OPTIONS, what="stage 1"):
        held = json.loads(Path(uri).read_text())
        assert (held["host"], held["pid"]) == (socket.gethostname(), os.getpid())
        with pytest.raises(LeaseHeld) as caught, Lease(uri, OPTIONS, what="stage 1"):
            pass
        message = str(caught.value)
        assert f"stage 1 is being run by {socket.gethostname()} pid {os.getpid()} since {held['started']}" in message
        assert "\n" not in message
    assert not Path(uri).exists()


def test_the_heartbeat_keeps_the_lease_fresh(tmp_path: Path) -> None:
    uri = str(tmp_path / "stage1.json")
    with Lease(uri, OPTIONS, what="stage 1", heartbeat_s=0.1):
        first = json.loads(Path(uri).read_text())["heartbeat"]
        time.sleep(0.5)
        assert json.loads(Path(uri).read_text())["heartbeat"] > first


def test_a_dead_holders_lease_is_taken_over(tmp_path: Path) -> None:
    """The holder was killed (its process is gone): the re-run proceeds at once."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    uri = str(tmp_path / "stage1.json")
    dead = Holder(socket.gethostname(), int(gone.stdout), "2026-11-30T10:00:00+00:00", time.time())
    Path(uri).write_bytes(dead.encode())
    with Lease(uri, OPTIONS, what="stage 1"):
        assert json.loads(Path(uri).read_text())["pid"] == os.getpid()


def test_a_stale_lease_from_another_host_expires(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Taken over, with a warning that names what held it (not "None")."""
    uri = str(tmp_path / "stage1.json")
    Path(uri).write_bytes(Holder("other-host", 1, "2026-11-30T10:00:00+00:00", time.time() - 600).encode())
    with caplog.at_level("WARNING", logger="llavast.lease"), Lease(uri, OPTIONS, what="stage 1", ttl_s=120):
        assert json.loads(Path(uri).read_text())["host"] == socket.gethostname()
    (warning,) = [r.getMessage() for r in caplog.records if "taking over" in r.getMessage()]
    assert warning.startswith(f"stage 1: taking over the expired lease {uri} (held by other-host pid 1 since "
                              f"2026-11-30T10:00:00+00:00, last heartbeat ")
    assert warning.endswith("s ago)") and "None" not in warning


def test_a_fresh_lease_of_a_dead_remote_holder_is_waited_out(tmp_path: Path) -> None:
    """A retried driver on a new pod, seconds after the last attempt was killed: its heartbeat stops, so the
    lease expires and the retry proceeds (after at most ttl_s), instead of failing the retry."""
    uri = str(tmp_path / "stage1.json")
    Path(uri).write_bytes(Holder("killed-pod", 1, "2026-11-30T10:00:00+00:00", time.time()).encode())
    started = time.monotonic()
    with Lease(uri, OPTIONS, what="stage 1", ttl_s=1.5, poll_s=0.1):
        waited = time.monotonic() - started
        assert json.loads(Path(uri).read_text())["host"] == socket.gethostname()
    assert 1.0 < waited < 5.0


def test_a_live_remote_holder_is_named_at_its_next_heartbeat(tmp_path: Path) -> None:
    uri = str(tmp_path / "stage1.json")
    Path(uri).write_bytes(Holder("other-host", 7, "2026-11-30T10:00:00+00:00", time.time()).encode())
    stop = threading.Event()

    def beat() -> None:  # the other host's heartbeat thread
        while not stop.wait(0.3):
            Path(uri).write_bytes(Holder("other-host", 7, "2026-11-30T10:00:00+00:00", time.time()).encode())

    beating = threading.Thread(target=beat)
    beating.start()
    started = time.monotonic()
    try:
        with pytest.raises(LeaseHeld, match="being run by other-host pid 7"), \
                Lease(uri, OPTIONS, what="stage 1", ttl_s=60, poll_s=0.1):
            pass
    finally:
        stop.set()
        beating.join()
    assert time.monotonic() - started < 5.0  # one heartbeat, not the 60 s expiry
    assert json.loads(Path(uri).read_text())["host"] == "other-host"  # the holder keeps its lease


def test_a_runner_that_may_wait_gets_the_lease_when_the_holder_releases_it(tmp_path: Path) -> None:
    """Two runners of one node: the second waits (telling whom it waits for, once), then holds the lease."""
    uri = str(tmp_path / "node.json")
    held, release = threading.Event(), threading.Event()

    def first() -> None:
        with Lease(uri, OPTIONS, what="node a"):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=first)
    thread.start()
    assert held.wait(10)
    told: list[Holder] = []
    threading.Timer(1.0, release.set).start()
    started = time.monotonic()
    with Lease(uri, OPTIONS, what="node a", poll_s=0.1, wait=LeaseWait(30, told.append)):
        waited = time.monotonic() - started
        assert json.loads(Path(uri).read_text())["pid"] == os.getpid()
    thread.join()
    assert 0.9 < waited < 10
    assert [(h.host, h.pid) for h in told] == [(socket.gethostname(), os.getpid())]  # told once
    assert not Path(uri).exists()


def test_a_runner_that_waits_past_its_timeout_is_refused(tmp_path: Path) -> None:
    uri = str(tmp_path / "node.json")
    with Lease(uri, OPTIONS, what="node a"):
        started = time.monotonic()
        with pytest.raises(LeaseHeld, match=r"node a is being run by .* \(waited 0.5s\); wait for it"), \
                Lease(uri, OPTIONS, what="node a", poll_s=0.1, wait=LeaseWait(0.5)):
            pass
        assert 0.4 < time.monotonic() - started < 3
