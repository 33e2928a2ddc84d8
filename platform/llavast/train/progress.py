"""A stage's progress as plain lines, for a terminal, a Ray job's log or CI alike: rank 0 says one every
`tracking.progress_every_s` seconds and at the last step (step / total, loss, samples/s, data wait, ETA), the
driver one when the stage's MLflow run starts (its link). Rank 0's lines travel to the driver through a small
Ray queue (`relayed`), so they show without forwarding the workers' logs; the driver logs every line to the
`llavast.train.progress` logger."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

PROGRESS_LOGGER = "llavast.train.progress"
log = logging.getLogger(PROGRESS_LOGGER)


@contextmanager
def relayed() -> Iterator[Any]:
    """On the driver: a Ray queue for rank 0's lines (yielded, for the workers), logged as they come while the
    block runs, and what is left when it ends."""
    from ray.util.queue import Empty, Queue

    queue = Queue(actor_options={"num_cpus": 0})
    done = threading.Event()

    def drain() -> None:
        while not done.is_set():
            try:
                log.info(queue.get(timeout=1.0))
            except Empty:
                continue
            except Exception:  # noqa: BLE001 - the queue's actor is gone (Ray shuts down): nothing more comes
                return

    thread = threading.Thread(target=drain, name="stage-progress", daemon=True)
    thread.start()
    try:
        yield queue
    finally:
        done.set()
        thread.join(timeout=5)
        try:
            for line in queue.get_nowait_batch(queue.qsize()):
                log.info(line)
        finally:
            queue.shutdown()


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


@dataclass
class StageProgress:
    """What rank 0 says of a stage as it trains; `first_step` is where this attempt started (a resume)."""

    what: str  # "stage 2 (demo-stage2)"
    total: int
    every_s: float
    first_step: int = 0
    say: Callable[[str], None] = log.info  # rank 0: the driver's queue (`relayed`)
    clock: Callable[[], float] = time.monotonic
    started: float = field(init=False)
    last: float = field(init=False)

    def __post_init__(self) -> None:
        self.started = self.last = self.clock()

    def line(self, step: int, metrics: Mapping[str, float], now: float) -> str:
        done = step - self.first_step
        eta = duration((now - self.started) / done * (self.total - step)) if done > 0 else "-"
        return (f"{self.what}: step {step}/{self.total}, loss {metrics.get('loss', float('nan')):.4f}, "
                f"{metrics.get('samples_per_s', 0.0):.2f} samples/s, "
                f"data wait {100 * metrics.get('data_wait_fraction', 0.0):.0f}%, ETA {eta}")

    def step_end(self, step: int, metrics: Mapping[str, float]) -> None:
        """Log a line when `every_s` passed since the last one, and at the last step."""
        now = self.clock()
        if self.every_s <= 0 or (now - self.last < self.every_s and step < self.total):
            return
        self.last = now
        self.say(self.line(step, metrics, now))
