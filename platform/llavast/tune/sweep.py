"""A sweep end to end, on the driver: base jobs -> valid space -> parent run -> Tune (or its restore) -> trials
table, picture and best parameters.

    load the base stage jobs; read the base model's config (no weights) for its shapes
    space.build_space: the discrete product minus the points that break a constraint (ConfigError if none)
    concurrency: the cluster's resources / one trial's needs (its largest stage + its driver), unless given
    the sweep's MLflow run (run key = name + fingerprint: a re-run continues it), the space table as space.csv
    Tuner(run_trial, param_space, TuneConfig(search_alg, ASHA on "step", metric "objective"), RunConfig(storage))
        or Tuner.restore(...) when the sweep's storage holds an interrupted run of it: finished trials stay done
    results: one row per trial (parameters, objective, steps reached, stopped early or not), trials.csv and a
        picture in the parent run, the child runs closed, best.json next to Tune's state (`best_uri`)
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import ray
from ray import tune

import model_zoo
from llavast import storage
from llavast.config.compose import apply_sets, resolve_extends
from llavast.config.loader import anchor_paths, fingerprint, parse_job, read_yaml
from llavast.config.secrets import check_secrets
from llavast.config.stage import StageJobConfig
from llavast.config.sweep import SweepJobConfig
from llavast.errors import ConfigError
from llavast.evaluate.runner import WEIGHT_SUFFIXES
from llavast.orchestrate.executors import node_resources
from llavast.train.files import download_dir
from llavast.train.run import plan_stage
from llavast.tune.space import PARAMETERS, Shapes, Space, build_space, shapes_of, space_rows
from llavast.tune.trial import TrialSpec, run_trial
from llavast.tune.validation import OBJECTIVE_KEY, PLACEMENT_GROUP_KEY

log = logging.getLogger(__name__)
SWEEPS_DIR = "sweeps"
BEST_FILE = "llavast_best.json"


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


@dataclass(frozen=True)
class SweepResult:
    plan: SweepPlan
    parent_run_id: str
    trials: list[dict[str, Any]]  # one row per trial, best first
    best: dict[str, Any]  # the best trial's row
    best_uri: str


def sweep_key(job: SweepJobConfig) -> str:
    return f"{job.name}-{fingerprint(job)[:12]}"


def best_uri(job: SweepJobConfig) -> str:
    """Where a finished sweep keeps its best trial (next to Tune's state)."""
    return storage.join(job.storage.root, SWEEPS_DIR, sweep_key(job), BEST_FILE)


def tuned_job(job: StageJobConfig, uri: str | None, where: str) -> StageJobConfig:
    """`job` with the parameters of the best trial recorded at `uri` (a sweep node's output)."""
    from llavast.tune.space import assignments

    if not uri:
        raise ConfigError(f"{where}: the sweep has no best trial yet")
    best = json.loads(storage.read_text(uri, job.storage.options))["best"]
    sets = [f"{k}={json.dumps(v)}" for k, v in assignments(best_parameters(best)).items()]
    return StageJobConfig.model_validate(apply_sets(job.model_dump(mode="json"), sets))


def load_base(job: SweepJobConfig) -> tuple[StageJobConfig, ...]:
    """The base stage jobs with their `set` fields (paths there are relative to the stage job's folder)."""
    stages = []
    for i, item in enumerate(job.base):
        path = Path(item.job)
        where = f"base.{i}.job"
        if not path.is_file():
            raise ConfigError(f"sweep {job.name}: {where}: {item.job} does not exist")
        raw = anchor_paths(resolve_extends(read_yaml(path), path, read_yaml), path.parent)
        raw = anchor_paths(apply_sets(raw, [f"{k}={json.dumps(v)}" for k, v in item.set.items()]), path.parent)
        check_secrets(raw, str(path))
        stage = parse_job(raw, source=f"{path} ({where} of sweep {job.name})")
        if not isinstance(stage, StageJobConfig):
            raise ConfigError(f"sweep {job.name}: {where}: {item.job} is a {stage.kind} job; a sweep runs stages")
        if i > 0 and stage.model.base != stages[0].model.base:
            raise ConfigError(f"sweep {job.name}: {where}: every stage must start from the same model.base")
        stages.append(stage)
    return tuple(stages)


def read_shapes(stages: tuple[StageJobConfig, ...]) -> Shapes:
    """The model's shapes at the last stage's settings, from the base checkpoint's config (no weights)."""
    last = stages[-1]
    cache = Path(tempfile.mkdtemp(prefix="llavast-sweep-"))
    base = download_dir(last.model.base, last.storage.options, cache, skip_suffixes=WEIGHT_SUFFIXES)
    config = model_zoo.spec(last.model.name).load_config(str(base), **last.model.overrides)
    return shapes_of(config, last.data.max_length, last.train.micro_batch_size, last.train.gradient_checkpointing)


def trial_needs(job: SweepJobConfig, stages: tuple[StageJobConfig, ...]) -> dict[str, float]:
    """What one trial holds at once: its largest stage's workers and decoders, the validation's decoders (rank 0
    of the last stage decodes the subset beside its training stream), plus its driver."""
    needs: dict[str, float] = {}
    for stage in stages:
        for key, value in node_resources(stage).items():
            needs[key] = max(needs.get(key, 0.0), value)
    last = stages[-1].data
    needs["CPU"] = needs.get("CPU", 0.0) + last.decode_concurrency * last.decode_num_cpus + job.compute.driver_cpus
    return needs


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
    stages = load_base(job)
    shapes = read_shapes(stages)
    space = build_space(job.space, shapes, job.constraints.max_visual_tokens, job.constraints.max_activation_gib)
    trials = len(space.valid) if job.search.algorithm == "grid" else int(job.search.num_samples or 1)
    needs = trial_needs(job, stages)
    n = job.compute.max_concurrent_trials
    if n is None and cluster is not None:
        n = concurrency(needs, cluster, trials, job.name)
    return SweepPlan(job, sweep_key(job), stages, shapes, space, trials, plan_stage(stages[-1]).total_steps,
                     needs, n)


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
                  "storage": {"endpoint_url": job.storage.endpoint_url, "region": job.storage.region}}
    spec = TrialSpec(job.name, plan.key, job.tracking.uri, job.tracking.experiment, job.tracking.timeout_s, parent,
                     plan.stages, {p.key: p.values for p in plan.space.valid}, validation)
    tuner = build_tuner(plan, spec)
    grid = tuner.fit()
    rows = trial_rows(plan, grid, spec)
    scored = [r for r in rows if r[OBJECTIVE_KEY] is not None]
    # the best of the trials that ran to the end (a stopped trial's objective is from an earlier step)
    finished = [r for r in scored if not r["stopped_early"] and r["error"] is None] or scored
    if not finished:
        errors = "; ".join(f"{r['trial_id']}: {r['error']}" for r in rows if r["error"]) or "no trial reported"
        finish_sweep(tracker, parent, job, plan.key, rows, None, failed=True)
        raise ConfigError(f"sweep {job.name}: no trial reached a validation ({errors})")
    best = finished[0]
    uri = best_uri(job)
    storage.write_text(uri, json.dumps({"sweep": plan.key, "objective_metric": job.objective_metric,
                                             "mode": job.objective.mode, "best": best}, indent=2),
                       job.storage.options)
    finish_sweep(tracker, parent, job, plan.key, rows, best, failed=False)
    return SweepResult(plan, parent, rows, best, uri)


def best_parameters(best: dict[str, Any]) -> dict[str, Any]:
    """The swept parameters of a trial row."""
    return {name: best[name] for name in PARAMETERS if best.get(name) is not None}
