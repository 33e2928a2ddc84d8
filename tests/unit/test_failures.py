"""Failure reports: the root cause through chains and Ray's per-rank failures, file:line, one-line summaries."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from llavast.failures import SUMMARY_CHARS, FailureReport, WorkerError, describe, raise_location, root_cause

HERE = Path(__file__).name


def _decode_frames() -> None:
    raise ValueError("video v7.mp4 has 0 frames\nsecond line of detail")


def _caught(fn) -> BaseException:
    try:
        fn()
    except BaseException as err:  # noqa: BLE001 - the test inspects whatever was raised
        return err
    raise AssertionError("nothing was raised")


def _wrapped() -> None:
    try:
        _decode_frames()
    except ValueError as err:
        raise RuntimeError("stage 1 failed") from err


def _during_handling() -> None:
    try:
        _decode_frames()
    except ValueError:
        raise KeyError("cleanup broke too") from None  # suppressed context: this one is the root


def test_root_cause_follows_raise_from_and_stops_at_suppressed_context():
    assert isinstance(root_cause(_caught(_wrapped)), ValueError)
    assert isinstance(root_cause(_caught(_during_handling)), KeyError)


def test_raise_location_is_the_deepest_frame():
    err = root_cause(_caught(_wrapped))
    location = raise_location(err)
    assert location is not None
    path, line = location.rsplit(":", 1)
    assert path.endswith(HERE)
    assert 'raise ValueError("video v7.mp4' in Path(path).read_text().splitlines()[int(line) - 1]
    assert raise_location(ValueError("never raised")) is None


class WorkerGroupFailure(Exception):
    """Shaped like Ray Train's WorkerGroupError: a `worker_failures` dict rank -> exception."""

    def __init__(self, worker_failures: dict[int, BaseException]):
        super().__init__("Training failed due to worker errors: [Rank 0 Error Snippet] ...")
        self.worker_failures = worker_failures


def test_worker_error_survives_pickling_and_the_lowest_rank_is_reported():
    rank1 = WorkerError.wrap(_caught(_wrapped), "/tmp/ray/logs/worker-1.err", rank=1)
    rank0 = WorkerError.wrap(_caught(_during_handling), "/tmp/ray/logs/worker-0.err", rank=0)
    shipped = {r: pickle.loads(pickle.dumps(e)) for r, e in {1: rank1, 0: rank0}.items()}
    alone = describe(RuntimeError("never raised"))  # no chain, no traceback: itself, nowhere
    assert (alone.exc_type, alone.message, alone.location) == ("RuntimeError", "never raised", None)
    try:
        raise RuntimeError("stage 1 failed") from WorkerGroupFailure(shipped)
    except RuntimeError as err:
        report = describe(err)
    assert (report.exc_type, report.rank, report.log) == ("KeyError", 0, "/tmp/ray/logs/worker-0.err")
    assert report.location is not None and report.location.rsplit(":", 1)[0].endswith(HERE)
    assert describe(WorkerGroupFailure({1: shipped[1]})).message.startswith("video v7.mp4 has 0 frames")


def test_summary_is_one_bounded_line_and_lines_carry_everything():
    report = describe(_caught(_wrapped), log="llavast logs raysubmit_1")
    assert report.summary == "ValueError: video v7.mp4 has 0 frames"
    lines = report.lines()
    assert lines[0] == "ValueError: video v7.mp4 has 0 frames\nsecond line of detail"
    assert lines[1].startswith("raised at ") and HERE in lines[1]
    assert lines[2] == "full log: llavast logs raysubmit_1"
    long = FailureReport("ConfigError", "x" * 500)
    assert len(long.summary) == SUMMARY_CHARS and long.summary.endswith("...") and "\n" not in long.summary
    assert FailureReport("KeyboardInterrupt", "").summary == "KeyboardInterrupt"


@pytest.mark.parametrize("rank", [None, 3])
def test_worker_rank_appears_in_the_report_only_for_workers(rank):
    text = FailureReport("OSError", "disk full", rank=rank).lines()[0]
    assert text == ("OSError: disk full" if rank is None else "OSError (worker rank 3): disk full")
