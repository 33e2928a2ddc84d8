"""Tune's side of a sweep: the space as Tune sees it (`param_space`), the searcher (grid/random or Optuna's TPE),
the scheduler (ASHA on the step, or FIFO), the callbacks (progress, placement groups), and the Tuner itself,
new or restored from the sweep's storage."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from ray import tune

from llavast import storage
from llavast.tune.plan import SWEEPS_DIR, SweepPlan
from llavast.tune.trial import TrialSpec, run_trial
from llavast.tune.validation import OBJECTIVE_KEY, PLACEMENT_GROUP_KEY

log = logging.getLogger(__name__)


def param_space(plan: SweepPlan) -> dict[str, Any]:
    """Tune's space: the valid points by key (a grid, or a choice), and each range."""
    keys = [p.key for p in plan.space.valid]
    space: dict[str, Any] = {"point": tune.grid_search(keys) if plan.job.search.algorithm == "grid"
                             else tune.choice(keys)}
    for name, (kind, low, high) in plan.space.ranges.items():
        space[name] = tune.uniform(low, high) if kind == "uniform" else tune.loguniform(low, high)
    return space


def searcher(plan: SweepPlan) -> Any:
    search = plan.job.search
    if search.algorithm == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(sampler=optuna.samplers.TPESampler(seed=search.seed))
    from ray.tune.search import BasicVariantGenerator

    # Tune applies max_concurrent_trials to a Searcher (Optuna's, wrapped in a ConcurrencyLimiter) but ignores it
    # for a search-generator instance: this one carries the limit itself.
    return BasicVariantGenerator(random_state=search.seed, max_concurrent=plan.concurrency or 0)


def scheduler(plan: SweepPlan) -> Any:
    config = plan.job.scheduler
    if config.kind == "fifo":
        from ray.tune.schedulers import FIFOScheduler

        return FIFOScheduler()
    from ray.tune.schedulers import ASHAScheduler

    grace = config.grace_period or plan.job.validation.every
    return ASHAScheduler(time_attr="step", max_t=plan.max_steps, grace_period=min(grace, plan.max_steps),
                         reduction_factor=config.reduction_factor)


def experiment_path(plan: SweepPlan) -> tuple[Any, str]:
    """(pyarrow filesystem, path) of the folder that holds the sweep's Tune experiments."""
    return storage.arrow_filesystem(storage.join(plan.job.storage.root, SWEEPS_DIR), plan.job.storage.options)


def build_tuner(plan: SweepPlan, spec: TrialSpec) -> tune.Tuner:
    """A new Tuner, or the restored one when the sweep's storage holds this sweep's Tune state."""
    job = plan.job
    fs, root = experiment_path(plan)
    trainable = tune.with_resources(partial(run_trial, spec=spec), {"CPU": job.compute.driver_cpus})
    path = f"{root.rstrip('/')}/{plan.key}"
    if tune.Tuner.can_restore(path, storage_filesystem=fs):
        log.info("resuming sweep %s from %s", plan.key, path)
        return tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True,
                                  storage_filesystem=fs)
    tune_config = tune.TuneConfig(metric=OBJECTIVE_KEY, mode=job.objective.mode, search_alg=searcher(plan),
                                  scheduler=scheduler(plan), num_samples=1 if job.search.algorithm == "grid"
                                  else plan.trials, max_concurrent_trials=plan.concurrency)
    run_config = tune.RunConfig(name=plan.key, storage_path=root, storage_filesystem=fs, verbose=0,
                                callbacks=[TrialProgress(plan.trials, job.objective.mode), ReleasePlacementGroups()],
                                failure_config=tune.FailureConfig(max_failures=job.compute.max_failures))
    return tune.Tuner(trainable, param_space=param_space(plan), tune_config=tune_config, run_config=run_config)


PROGRESS_LOGGER = "llavast.tune.progress"


class TrialProgress(tune.Callback):
    """Logs how the sweep stands (to PROGRESS_LOGGER, at INFO) whenever a trial reports, ends or fails. It holds
    no handle of its own, since Tune pickles its callbacks with the sweep's state (a restored sweep keeps them)."""

    def __init__(self, total: int, mode: str) -> None:
        self.total, self.mode = total, mode
        self.best: float | None = None

    def _update(self, trials: list[Any], result: dict[str, Any] | None = None) -> None:
        value = (result or {}).get(OBJECTIVE_KEY)
        if value is not None and (self.best is None or (value > self.best) == (self.mode == "max")):
            self.best = float(value)
        done = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
        running = sum(t.status == "RUNNING" for t in trials)
        best = f"{self.best:.4g}" if self.best is not None else "-"
        logging.getLogger(PROGRESS_LOGGER).info("%d/%d trials done, %d running; best objective so far %s", done,
                                                self.total, running, best)

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        self._update(trials, result)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._update(trials)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._update(trials)


class ReleasePlacementGroups(tune.Callback):
    """Removes the worker placement group of each trial Tune ends (finished, stopped by ASHA, or failed).

    Tune does not manage Ray Train V2's placement groups, and a Train run whose trial actor Tune ends (ASHA's stop,
    or the last rung) keeps its group: in the Ray of the lock, Train's own cleaner (PlacementGroupCleaner) asks the
    State API, which fails here, so it never removes it (ray-project/ray#54305), and the CPUs it holds starve the
    trials after it. The id comes with the trial's validation reports (`validation.PLACEMENT_GROUP_KEY`)."""

    def _release(self, trial: Any) -> None:
        from ray._raylet import PlacementGroupID
        from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

        group_id = (trial.last_result or {}).get(PLACEMENT_GROUP_KEY)
        if not group_id:
            return
        group = PlacementGroup(PlacementGroupID(bytes.fromhex(group_id)))
        if placement_group_table(group).get("state") not in (None, "REMOVED"):
            remove_placement_group(group)
            log.info("released placement group %s of trial %s", group_id, trial.trial_id)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._release(trial)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._release(trial)
