"""A sweep end to end, on the driver: base jobs -> valid space -> parent run -> Tune (or its restore) -> trials
table, picture and best parameters.

    plan.py: the base stage jobs, the model's shapes, the valid space, trials and how many at once
    the sweep's MLflow run (run key = name + fingerprint: a re-run continues it), the space table as space.csv
    tuner.py: Tuner(run_trial, param_space, TuneConfig(search_alg, ASHA on "step", metric "objective"),
        RunConfig(storage)) or Tuner.restore(...) when the sweep's storage holds an interrupted run of it:
        finished trials stay done
    results: one row per trial (parameters, objective, steps reached, stopped early or not), trials.csv and a
        picture in the parent run, the child runs closed, best.json next to Tune's state (`best.py`)
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import ray

from llavast import storage
from llavast.config.sweep import PARAMETERS, SweepJobConfig
from llavast.errors import ConfigError
from llavast.tune.best import best_uri
from llavast.tune.plan import SweepPlan, plan_sweep
from llavast.tune.report import trials_csv, trials_figure
from llavast.tune.trial import TrialSpec
from llavast.tune.tuner import build_tuner
from llavast.tune.validation import OBJECTIVE_KEY

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepResult:
    plan: SweepPlan
    parent_run_id: str
    trials: list[dict[str, Any]]  # one row per trial, best first
    best: dict[str, Any]  # the best trial's row
    best_uri: str


def trial_rows(plan: SweepPlan, grid: Any, spec: TrialSpec) -> list[dict[str, Any]]:
    """One row per trial, best first: id, parameters, objective, steps reached, early stop, error."""
    from llavast.tune.trial import trial_point

    rows = []
    for result in grid:
        metrics = result.metrics or {}
        config = result.config or {}
        point = trial_point(config, spec) if "point" in config else {}
        step = int(metrics.get("step", 0) or 0)
        objective = metrics.get(OBJECTIVE_KEY)
        rows.append({"trial_id": metrics.get("trial_id") or (result.path or "").rsplit("/", 1)[-1],
                     **{name: point.get(name) for name in PARAMETERS if name in point},
                     OBJECTIVE_KEY: float(objective) if objective is not None else None,
                     "loss": metrics.get("loss"), "steps": step,
                     "stopped_early": result.error is None and step < plan.max_steps,
                     "error": str(result.error).splitlines()[0] if result.error else None})
    sign = 1 if plan.job.objective.mode == "max" else -1
    return sorted(rows, key=lambda r: (r[OBJECTIVE_KEY] is None, -sign * (r[OBJECTIVE_KEY] or 0.0)))


def run_sweep(job: SweepJobConfig) -> SweepResult:
    """Run (or resume) the sweep on the current Ray cluster; progress goes to the PROGRESS_LOGGER logger."""
    from llavast.tracking import Tracker
    from llavast.tracking.sweeps import finish_sweep, start_sweep

    cluster = {k: float(v) for k, v in ray.cluster_resources().items()}
    plan = plan_sweep(job, cluster)
    log.info("sweep %s: %d valid point(s), %d removed (%s); %d trial(s), %d at once", plan.key,
             len(plan.space.valid), len(plan.space.removed), plan.space.removed_by_reason(), plan.trials,
             plan.concurrency)
    tracker = Tracker(job.tracking.uri, timeout_s=job.tracking.timeout_s)
    parent = start_sweep(tracker, job, plan.key, plan.rows, plan.space.removed_by_reason())
    validation = {"task": job.validation.task, "annotations": job.validation.annotations,
                  "media_root": job.validation.media_root, "limit": job.validation.limit,
                  "every": job.validation.every, "max_new_tokens": job.validation.max_new_tokens,
                  "batch_size": job.validation.batch_size, "objective": job.objective_metric,
                  "storage": job.storage.options.model_dump()}
    spec = TrialSpec(job.name, plan.key, job.tracking.uri, job.tracking.experiment, job.tracking.timeout_s, parent,
                     plan.stages, {p.key: p.values for p in plan.space.valid}, validation)
    tuner = build_tuner(plan, spec)
    grid = tuner.fit()
    rows = trial_rows(plan, grid, spec)
    report = (trials_csv(rows), trials_figure(rows, job.objective_metric))
    scored = [r for r in rows if r[OBJECTIVE_KEY] is not None]
    # the best of the trials that ran to the end (a stopped trial's objective is from an earlier step)
    finished = [r for r in scored if not r["stopped_early"] and r["error"] is None] or scored
    if not finished:
        errors = "; ".join(f"{r['trial_id']}: {r['error']}" for r in rows if r["error"]) or "no trial reported"
        finish_sweep(tracker, parent, job, plan.key, rows, report, None, failed=True)
        raise ConfigError(f"sweep {job.name}: no trial reached a validation ({errors})")
    best = finished[0]
    uri = best_uri(job)
    storage.write_text(uri, json.dumps({"sweep": plan.key, "objective_metric": job.objective_metric,
                                             "mode": job.objective.mode, "best": best}, indent=2),
                       job.storage.options)
    finish_sweep(tracker, parent, job, plan.key, rows, report, best, failed=False)
    return SweepResult(plan, parent, rows, best, uri)
