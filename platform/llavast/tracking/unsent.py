"""Metric points MLflow did not take, kept in the stage's storage until a driver can replay them.

Rank 0 logs metrics from a background thread that never stops training. When the tracking server is down
at the end of a stage, the points it still holds (queued, or given up after retries) are written here as
JSON lines, one file per worker attempt, under `<storage.root>/unsent_metrics/<run name>/`. The driver replays them
into the stage's MLflow run at its next contact with the server (after training, or on the re-run) and
removes each file once MLflow has it. MLflow's stores ignore a point they already hold (same key, step,
timestamp and value), so a point that did land before the outage is not doubled by its replay.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence

from mlflow.entities import Metric

from llavast import storage
from llavast.errors import TrackingError
from llavast.storage import StorageOptions
from llavast.tracking.client import Tracker

log = logging.getLogger(__name__)
UNSENT_DIR = "unsent_metrics"
SUFFIX = ".jsonl"


def save_unsent(points: Sequence[Metric], directory: str, options: StorageOptions) -> str | None:
    """Write `points` to a new file under `directory`; its URI, or None when there was nothing to keep."""
    if not points:
        return None
    uri = storage.join(directory, f"{uuid.uuid4().hex}{SUFFIX}")
    lines = [json.dumps({"key": p.key, "value": p.value, "timestamp": p.timestamp, "step": p.step}) for p in points]
    storage.write_text(uri, "\n".join(lines) + "\n", options)
    return uri


def load_unsent(uri: str, options: StorageOptions) -> list[Metric]:
    return [Metric(**json.loads(line)) for line in storage.read_text(uri, options).splitlines() if line]


def replay_unsent(tracker: Tracker, run_id: str, directory: str, options: StorageOptions) -> int:
    """Log every kept point into `run_id` and remove its file; the number of points replayed. With MLflow
    down (a TrackingError after the tracker's retries) the files stay for the next replay."""
    replayed = 0
    for uri in storage.list_files(directory, options, suffix=SUFFIX):  # none when the directory does not exist
        points = load_unsent(uri, options)
        try:
            tracker.log_points(run_id, points)
        except TrackingError as err:
            log.warning("%d metric points stay in %s until MLflow answers: %s", len(points), uri, err)
            break
        storage.remove(uri, options)
        replayed += len(points)
    if replayed:
        log.info("replayed %d metric points into MLflow run %s", replayed, run_id)
    return replayed
