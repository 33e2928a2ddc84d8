"""Leases: one runner per node fingerprint at a time, across processes and machines.

A lease is a small JSON object (holder host, pid, start time, heartbeat) created with an exclusive create
in the node's own storage (`storage.create_exclusive`: O_EXCL on a filesystem, a conditional PUT on S3), so
it holds wherever the node's outputs live and needs no extra service. The holder rewrites its heartbeat
every `heartbeat_s`. A lease whose heartbeat is older than `ttl_s`, or whose holder process is gone (checked
on the holder's own host), belongs to a dead runner and is taken over, so a killed driver's re-run
proceeds. A second runner of a live lease waits for it up to `LeaseWait.timeout_s` (two pipelines that share a
node: the second runs it after the first releases it, and so skips it if it succeeded), then is refused with a
one-line error that names the holder: nothing runs twice.

A holder on another host cannot be checked for life, only watched: the runner waits while the lease is
fresh, and is refused as soon as the holder's heartbeat moves (alive), or takes the lease over once it
expires (dead). So a retried driver (a RayJob's next attempt, on a new pod, seconds after the last one was
killed) proceeds within `ttl_s`, while a live holder elsewhere is named within one heartbeat.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from types import TracebackType

import psutil

from llavast import storage
from llavast.errors import LlavastError
from llavast.storage import StorageOptions

log = logging.getLogger(__name__)
TTL_S = 120.0
HEARTBEAT_S = 20.0


class LeaseHeld(LlavastError):
    """Another live runner holds the node's lease."""


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    started: str  # ISO time, for people
    heartbeat: float  # epoch seconds, for the expiry check

    @classmethod
    def me(cls) -> Holder:
        return cls(socket.gethostname(), os.getpid(), datetime.now(UTC).isoformat(timespec="seconds"), time.time())

    def alive(self, ttl_s: float) -> bool:
        """A recent heartbeat, and (on this host, where it can be checked) a live process."""
        if self.host == socket.gethostname() and not psutil.pid_exists(self.pid):
            return False
        return time.time() - self.heartbeat < ttl_s

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()


def _describe(holder: Holder | None) -> str:
    """Who held an expired lease, for the takeover warning."""
    if holder is None:
        return "its file was unreadable or already gone"
    return (f"held by {holder.host} pid {holder.pid} since {holder.started}, last heartbeat "
            f"{time.time() - holder.heartbeat:.0f}s ago")


@dataclass(frozen=True)
class LeaseWait:
    """How long a runner waits for a live holder before it is refused (0: refused at once), and whom it tells
    that it waits (`on_wait(holder)`, once per lease)."""

    timeout_s: float = 0.0
    on_wait: Callable[[Holder], None] | None = None


class Lease:
    """`with Lease(uri, options, what="stage1"):` runs the block as the only holder of `uri`."""

    def __init__(self, uri: str, options: StorageOptions, what: str, *, ttl_s: float = TTL_S,
                 heartbeat_s: float = HEARTBEAT_S, poll_s: float = 2.0, wait: LeaseWait = LeaseWait()) -> None:
        self.uri, self.options, self.what = uri, options, what
        self.ttl_s, self.heartbeat_s, self.poll_s = ttl_s, heartbeat_s, poll_s
        self.wait = wait
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._holder = Holder.me()

    def __enter__(self) -> Lease:
        deadline = time.monotonic() + self.wait.timeout_s
        told = False
        while not storage.create_exclusive(self.uri, self._holder.encode(), self.options):
            found = self._read()
            if found == self._holder:  # our create landed but its answer was lost: the retry met our own lease
                break
            held = self._watch(found)
            if held is None:  # expired, unreadable or released meanwhile: take it
                log.warning("%s: taking over the expired lease %s (%s)", self.what, self.uri, _describe(found))
                storage.remove(self.uri, self.options)
                continue
            if time.monotonic() >= deadline:
                waited = f" (waited {self.wait.timeout_s:g}s)" if self.wait.timeout_s else ""
                raise LeaseHeld(f"{self.what} is being run by {held.host} pid {held.pid} since {held.started} "
                                f"(lease {self.uri}){waited}; wait for it to finish and run again (finished work "
                                f"is skipped), or remove the lease if that process is gone")
            if not told:
                log.info("%s: waiting for %s pid %s (lease %s)", self.what, held.host, held.pid, self.uri)
                if self.wait.on_wait is not None:
                    self.wait.on_wait(held)
                told = True
            time.sleep(min(self.poll_s, max(0.0, deadline - time.monotonic())))
        self._beat = threading.Thread(target=self._heartbeat, name="lease-heartbeat", daemon=True)
        self._beat.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        try:
            storage.remove(self.uri, self.options)
        except LlavastError as exc:  # it expires on its own; the node's own outcome matters more
            log.warning("could not release the lease %s: %s", self.uri, exc)

    def _watch(self, held: Holder | None) -> Holder | None:
        """The live holder of the lease, or None once it is gone, released or expired. A holder on this host is
        judged at once (its pid); one elsewhere is watched until its heartbeat moves or its lease expires."""
        if held is None or not held.alive(self.ttl_s):
            return None
        if held.host == socket.gethostname():
            return held
        log.warning("%s: lease %s is held by %s pid %s; waiting up to %.0fs for its next heartbeat or its expiry",
                    self.what, self.uri, held.host, held.pid, self.ttl_s - (time.time() - held.heartbeat))
        while held is not None and held.alive(self.ttl_s):
            time.sleep(self.poll_s)
            now = self._read()
            if now is not None and now.heartbeat != held.heartbeat:
                return now  # it beat: the holder lives
            held = now
        return None

    def _read(self) -> Holder | None:
        try:
            return Holder(**json.loads(storage.read_text(self.uri, self.options)))
        except (LlavastError, ValueError, TypeError):  # gone meanwhile, or unreadable: treat as expired
            return None

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            beat = Holder(self._holder.host, self._holder.pid, self._holder.started, time.time())
            try:
                storage.write_bytes(self.uri, beat.encode(), self.options)
            except LlavastError as exc:
                log.warning("lease heartbeat %s failed: %s", self.uri, exc)
