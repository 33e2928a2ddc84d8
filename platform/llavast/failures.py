"""Failures a person can read: the root exception, where it was raised, and where the full log is.

A stage that fails on a Ray Train worker reaches the driver as Ray's `WorkerGroupError`, whose text is a
truncated "error snippet" of every rank's traceback, and whose per-rank exceptions have lost their
tracebacks on the way. So the worker wraps its own exception in `WorkerError` before it leaves the process:
the original type and message, the file:line it was raised at, and the worker's log file. On the driver,
`describe` turns any exception (a worker's, a DAG node's, a driver-side one) into a `FailureReport`: one
line for a table cell, and a few lines below the table that say what, where, and where to read more.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass

SUMMARY_CHARS = 160


class WorkerError(Exception):
    """A training worker's exception, with what the driver cannot see: where it was raised, which rank, and
    where the worker's full log is. Picklable (Ray sends it to the driver)."""

    def __init__(self, exc_type: str, message: str, location: str | None, log: str | None, rank: int | None):
        super().__init__(f"{exc_type}: {message}")
        self.exc_type, self.message, self.location, self.log, self.rank = exc_type, message, location, log, rank

    def __reduce__(self) -> tuple[type, tuple[str, str, str | None, str | None, int | None]]:
        return (type(self), (self.exc_type, self.message, self.location, self.log, self.rank))

    @classmethod
    def wrap(cls, err: BaseException, log: str | None, rank: int | None) -> WorkerError:
        root = root_cause(err)
        return cls(type(root).__name__, str(root), raise_location(root), log, rank)


@dataclass(frozen=True)
class FailureReport:
    exc_type: str
    message: str
    location: str | None = None  # file:line where the root exception was raised
    log: str | None = None  # a path or command that shows the full log
    rank: int | None = None  # the training worker's rank, when a worker failed

    @property
    def summary(self) -> str:
        """One line: `Type: first line of the message`, cut to SUMMARY_CHARS."""
        first = self.message.strip().splitlines()[0] if self.message.strip() else ""
        line = f"{self.exc_type}: {first}" if first else self.exc_type
        return line if len(line) <= SUMMARY_CHARS else line[: SUMMARY_CHARS - 3] + "..."

    def lines(self) -> list[str]:
        """The full report: the root exception (whole message), where it was raised, where the log is."""
        where = f" (worker rank {self.rank})" if self.rank is not None else ""
        out = [f"{self.exc_type}{where}: {self.message.strip()}"]
        if self.location:
            out.append(f"raised at {self.location}")
        if self.log:
            out.append(f"full log: {self.log}")
        return out


def root_cause(err: BaseException) -> BaseException:
    """The innermost exception: through `raise ... from`, implicit context, and the lowest failed rank of a
    Ray Train worker-group failure (`worker_failures`)."""
    seen: set[int] = set()
    while id(err) not in seen:
        seen.add(id(err))
        failures = getattr(err, "worker_failures", None)
        if isinstance(failures, dict) and failures:
            err = failures[min(failures)]
        elif err.__cause__ is not None:
            err = err.__cause__
        elif err.__context__ is not None and not err.__suppress_context__:
            err = err.__context__
        else:
            break
    return err


def raise_location(err: BaseException) -> str | None:
    """`file:line` of the frame that raised `err` (its traceback's deepest frame), or None without one."""
    frames = traceback.extract_tb(err.__traceback__) if err.__traceback__ is not None else []
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else None


def describe(err: BaseException, log: str | None = None) -> FailureReport:
    """The report of `err`: its root cause (a worker's own report when one failed); `log` is where to read
    more when the root does not say (e.g. the driver's own log)."""
    root = root_cause(err)
    if isinstance(root, WorkerError):
        return FailureReport(root.exc_type, root.message, root.location, root.log or log, root.rank)
    return FailureReport(type(root).__name__, str(root), raise_location(root), log)
