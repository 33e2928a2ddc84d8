"""Resume checkpoints: every rank's DeepSpeed state plus the stage's progress, reported to Ray Train.

Each rank saves into its own local directory; Ray Train merges the ranks' files into one checkpoint
directory under the run's storage path (uploading asynchronously when asked), and after a failure
`ray.train.get_checkpoint()` hands the latest one back to every rank. Frozen parameters are left out
(they come from the base checkpoint and the parent artifact, rebuilt identically on restart), so a
7B stage's checkpoint holds only the adapters, STP, LAPE and the optimizer state.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ray.train import Checkpoint

from llavast.errors import TrainError

PROGRESS_FILE = "progress.json"
DS_TAG = "deepspeed"
CHECKPOINT_PREFIX = "step_"  # each resume checkpoint's directory in the Ray Train run: step_00000012


def checkpoint_dir_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step:08d}"


@dataclass(frozen=True)
class Progress:
    """Where a stage stands after `step` optimizer steps; the data position follows from the step."""

    step: int
    samples_consumed: int  # samples trained on by all ranks so far (pads and dropped samples not counted)
    dropped_samples: int  # samples the data pipeline could not deliver, all ranks, so far
    world_size: int
    fingerprint: str


def save_checkpoint(engine: Any, progress: Progress, rank: int) -> Checkpoint:
    """Save this rank's DeepSpeed state (a collective: every rank calls it) and wrap it for Ray."""
    directory = Path(tempfile.mkdtemp(prefix=f"llavast-ckpt-{progress.step}-r{rank}-"))
    engine.save_checkpoint(str(directory), tag=DS_TAG, exclude_frozen_parameters=True)
    if rank == 0:
        (directory / PROGRESS_FILE).write_text(json.dumps(asdict(progress)))
    return Checkpoint.from_directory(str(directory))


def load_checkpoint(engine: Any, checkpoint: Checkpoint, world_size: int, fingerprint: str) -> Progress:
    """Restore the DeepSpeed state of this rank (a collective) and return the progress it recorded."""
    with checkpoint.as_directory() as directory:
        progress_file = Path(directory) / PROGRESS_FILE
        if not progress_file.is_file():
            raise TrainError(f"checkpoint {checkpoint.path} has no {PROGRESS_FILE}: it was not written by llavast")
        progress = Progress(**json.loads(progress_file.read_text()))
        if progress.world_size != world_size:
            raise TrainError(f"checkpoint {checkpoint.path} was written by {progress.world_size} workers, this run "
                             f"has {world_size}: ZeRO shards do not re-partition; keep compute.num_workers")
        if progress.fingerprint != fingerprint:
            raise TrainError(f"checkpoint {checkpoint.path} belongs to config {progress.fingerprint[:12]}, not "
                             f"{fingerprint[:12]}")
        path, _ = engine.load_checkpoint(directory, tag=DS_TAG, load_module_strict=False,
                                         load_optimizer_states=True, load_lr_scheduler_states=True)
        if path is None:
            raise TrainError(f"DeepSpeed found no state under {checkpoint.path}")
    return progress
