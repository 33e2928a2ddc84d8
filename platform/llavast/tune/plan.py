"""A sweep's plan, before any trial: its base stage jobs, the model's shapes (its config, no weights), the
valid space (`space.build_space`: the points that break a constraint removed, ConfigError if none), how many
trials run and how many at once (the cluster's resources / one trial's needs, unless the job says)."""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llavast import storage
from llavast.config.loader import fingerprint, load_sweep_stages
from llavast.config.resources import trial_resources
from llavast.config.stage import StageJobConfig
from llavast.config.sweep import SweepJobConfig
from llavast.errors import ConfigError
from llavast.train.run import plan_stage
from llavast.train.stage_model import WEIGHT_SUFFIXES, load_config
from llavast.tune.space import Shapes, Space, build_space, shapes_of, space_rows

SWEEPS_DIR = "sweeps"  # under the job's storage root: one folder per sweep key, Tune's state and best.json


@dataclass(frozen=True)
class SweepPlan:
    """What a sweep would run: its base jobs, the valid space, and how many trials run at once."""

    job: SweepJobConfig
    key: str
    stages: tuple[StageJobConfig, ...]
    shapes: Shapes
    space: Space
    trials: int  # how many trials the search runs
    max_steps: int  # the last stage's steps: ASHA's max_t
    per_trial: dict[str, float]  # what one trial holds at once
    concurrency: int | None  # None until the cluster's resources are known

    @property
    def rows(self) -> list[dict[str, Any]]:
        return space_rows(self.space.valid, self.shapes)


def sweep_key(job: SweepJobConfig) -> str:
    return f"{job.name}-{fingerprint(job)[:12]}"


def read_shapes(stages: tuple[StageJobConfig, ...]) -> Shapes:
    """The model's shapes at the last stage's settings, from the base checkpoint's config (no weights)."""
    last = stages[-1]
    with tempfile.TemporaryDirectory(prefix="llavast-sweep-") as cache:
        base = storage.download_dir(last.model.base, last.storage.options, Path(cache), skip_suffixes=WEIGHT_SUFFIXES)
        config, _ = load_config(last.model.name, base, last.model.overrides)
    return shapes_of(config, last.data.max_length, last.train.micro_batch_size, last.train.gradient_checkpointing)


def concurrency(needs: dict[str, float], cluster: dict[str, float], trials: int, name: str) -> int:
    """Trials that fit the cluster at once (the scarcest resource decides), at most `trials`."""
    fits = [math.floor(cluster.get(key, 0.0) / value + 1e-9) for key, value in needs.items() if value > 0]
    n = min(fits, default=trials)
    if n < 1:
        have = ", ".join(f"{k} {cluster.get(k, 0.0):g}" for k in needs)
        want = ", ".join(f"{k} {v:g}" for k, v in needs.items())
        raise ConfigError(f"sweep {name}: one trial needs {want}; the cluster has {have}")
    return min(n, trials)


def plan_sweep(job: SweepJobConfig, cluster: dict[str, float] | None = None) -> SweepPlan:
    """Everything but the trials: fails fast on a bad base, an empty space or a cluster too small."""
    stages = load_sweep_stages(job)
    shapes = read_shapes(stages)
    space = build_space(job.space, shapes, job.constraints.max_visual_tokens, job.constraints.max_activation_gib)
    trials = len(space.valid) if job.search.algorithm == "grid" else int(job.search.num_samples or 1)
    needs = trial_resources(job, stages)
    n = job.compute.max_concurrent_trials
    if n is None and cluster is not None:
        n = concurrency(needs, cluster, trials, job.name)
    return SweepPlan(job, sweep_key(job), stages, shapes, space, trials, plan_stage(stages[-1]).total_steps,
                     needs, n)
