"""Preflight: every reference a stage needs, checked on the driver before Ray starts and before an MLflow
run exists, so a typo costs seconds and one line, not a Ray cluster start and a run left RUNNING.

    tracking.uri       the MLflow server answers
    model.base         a readable model directory (its config.json)
    model.overrides    valid on that checkpoint: its config built with them (no weights), so a rule that needs
                       the checkpoint's shapes (the packer's W1 % k1) fails here, not on a worker
    data.manifest      a finished index (its summary.json and at least one manifest shard)
    model.init_from    the registered alias or version exists (or, for a plain URI, the artifact does)
    storage.root       writable: a small object is written and removed
    train.callbacks    each class imports (on the driver; the workers need the same package)

Each failure raises the project's error type with a message that names the field and the fix.
"""

from __future__ import annotations

import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import model_zoo
from llavast import storage
from llavast.config.stage import StageJobConfig
from llavast.data.manifest import manifest_files
from llavast.errors import ConfigError, DataError, StorageError, TrainError
from llavast.tracking import ResolvedInit, Tracker, check_reachable, resolve_init_from
from llavast.train import callbacks
from llavast.train.stage_model import WEIGHT_SUFFIXES

PROBE_PREFIX = ".llavast-preflight-"


@dataclass(frozen=True)
class Checked:
    """What the preflight resolved, for the stage to use as is."""

    tracker: Tracker
    parent: ResolvedInit | None  # the stage artifact `model.init_from` names, or None (stage from base)


def preflight(job: StageJobConfig) -> Checked:
    check_reachable(job.tracking.uri, job.tracking.timeout_s)
    tracker = Tracker(job.tracking.uri, timeout_s=job.tracking.timeout_s)
    options = job.storage.options
    if not storage.exists(storage.join(job.model.base, "config.json"), options):
        raise TrainError(f"model.base: {job.model.base} is not a readable model directory (no config.json); "
                         "point it at a LLaVA-OneVision or LLaVA-ST checkpoint directory")
    with tempfile.TemporaryDirectory(prefix="llavast-preflight-") as tmp:
        base = storage.download_dir(job.model.base, options, Path(tmp), skip_suffixes=WEIGHT_SUFFIXES)
        try:
            model_zoo.spec(job.model.name).load_config(str(base), **job.model.overrides)
        except ValueError as err:
            raise ConfigError(f"model.overrides: {err} (with the base checkpoint {job.model.base})") from err
    try:
        manifest_files(job.data.manifest, job.data.storage)  # a finished index with shards
    except DataError as err:
        raise DataError(f"data.manifest: {err}") from err
    parent = None
    if job.model.init_from:
        parent = resolve_init_from(job.model.init_from, tracker)  # a missing alias/version: TrackingError
        if parent.model_name is None and not storage.exists(parent.uri, options):
            raise TrainError(f"model.init_from: {parent.uri} does not exist; give the previous stage's artifact "
                             "URI or its registered version (models:/<name>@<alias>)")
    probe = storage.join(job.storage.root, PROBE_PREFIX + uuid.uuid4().hex)
    try:
        storage.write_text(probe, "llavast preflight\n", options)
        storage.remove(probe, options)
    except StorageError as err:
        raise StorageError(f"storage.root: {job.storage.root} is not writable ({err}); checkpoints and the stage "
                           "artifact go there: fix the path or the credentials") from err
    for spec in job.train.callbacks:
        callbacks.resolve(spec.path)
    return Checked(tracker=tracker, parent=parent)
