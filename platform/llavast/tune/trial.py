"""One sweep trial: Ray Tune's function trainable that runs the base stages with the trial's parameters.

    Tune -> run_trial(config) in a trial actor (the Train driver of its stages; `driver_cpus`)
        the trial's MLflow run (child of the sweep's run; run key = sweep key + Tune trial id)
        for each base stage: the stage job with the trial's parameters (model.overrides M_*/k1/k2/sigma,
            train.lr, lora.r), named after the trial, nested under the trial's run, continuing from the
            previous stage's artifact -> `train/run.run_stage(register=False)`: a TorchTrainer on Ray Train V2
        the last stage also runs `Validation` (tune/validation.py) on its workers, and its TorchTrainer has
            `ReportValidation`: each validation report goes to Tune (ASHA's rungs) and to the trial's run.

A trial's stage jobs differ from the base in their model overrides, so each gets its own coordinate vocabulary,
LAPE tables and packer grid, built from the same base checkpoint. Nothing is registered: a trial's artifacts
stay in its storage, the best one is promoted by running its parameters (`--write-best`). A trial that Tune
restores after its driver died runs again with the same trial id, so its stages continue their own Ray Train
runs from their latest checkpoints (and a finished stage is not trained again).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import ray.tune
from ray.tune.integration.ray_train import TuneReportCallback

from llavast.config.compose import with_fields
from llavast.config.stage import StageJobConfig
from llavast.errors import LlavastError
from llavast.tune.space import assignments
from llavast.tune.validation import OBJECTIVE_KEY, PLACEMENT_GROUP_KEY, VALIDATION_KEY

log = logging.getLogger(__name__)
NOT_LOGGED = ("step", VALIDATION_KEY, PLACEMENT_GROUP_KEY)


def mlflow_key(name: str) -> str:
    """A reported key as an MLflow metric name (no "@": `Acc@0.5` -> `val/Acc_at_0.5`); the objective and the
    loss keep their names."""
    if name in (OBJECTIVE_KEY, "loss"):
        return name
    return f"val/{name.replace('@', '_at_')}"


class ReportValidation(TuneReportCallback):
    """Ray Train callback of a trial's last stage: hands each validation report (and only those: the loop's
    checkpoint reports carry no objective) to Tune, and logs it to the trial's MLflow run."""

    def __init__(self, tracking_uri: str, run_id: str, timeout_s: float) -> None:
        super().__init__()
        self.tracking_uri, self.run_id, self.timeout_s = tracking_uri, run_id, timeout_s

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if not metrics or VALIDATION_KEY not in metrics[0]:
            return
        report = metrics[0]
        try:
            from llavast.tracking import Tracker

            Tracker(self.tracking_uri, timeout_s=self.timeout_s).log_metrics(
                self.run_id, {mlflow_key(k): float(v) for k, v in report.items() if k not in NOT_LOGGED},
                step=int(report["step"]))
        except LlavastError as err:  # MLflow down: Tune still gets the result; the curve has a gap
            log.warning("could not log validation to MLflow run %s: %s", self.run_id, err)
        super().after_report(run_context, metrics, checkpoint)


@dataclass(frozen=True)
class TrialSpec:
    """What every trial of a sweep shares, resolved by the sweep's driver."""

    sweep_name: str
    sweep_key: str  # name + config fingerprint: run keys and storage paths
    tracking_uri: str
    experiment: str
    timeout_s: float
    parent_run_id: str
    stages: tuple[StageJobConfig, ...]  # the base stage jobs, validated
    points: dict[str, dict[str, Any]]  # point key -> its discrete values
    validation: dict[str, Any]  # the Validation callback's keyword arguments


def trial_point(config: dict[str, Any], spec: TrialSpec) -> dict[str, Any]:
    """Tune's config ({"point": key, "lr": x}) -> the trial's parameter values."""
    return {**spec.points[config["point"]], **{k: v for k, v in config.items() if k != "point"}}


def trial_job(base: StageJobConfig, point: dict[str, Any], spec: TrialSpec, trial_id: str, run_id: str,
              init_from: str | None, validate: bool) -> StageJobConfig:
    """The base stage job with the trial's parameters, named after the trial, nested under its run."""
    raw = base.model_dump(mode="json")
    fields = {**assignments(point), "name": f"{spec.sweep_name}-{trial_id}", "tracking.parent_run_id": run_id,
              "tracking.experiment": spec.experiment}
    if init_from is not None:
        fields["model.init_from"] = init_from
    raw = with_fields(raw, fields)
    if validate:
        raw["train"]["callbacks"] = [*raw["train"].get("callbacks", []),
                                     {"path": "llavast.tune.validation:Validation", "args": spec.validation}]
    return StageJobConfig.model_validate(raw)


def run_trial(config: dict[str, Any], spec: TrialSpec) -> None:
    """Tune's trainable: the trial's stages, one after the other, the last one validated and reported."""
    from llavast.tracking import Tracker, tags
    from llavast.train.run import run_stage

    point = trial_point(config, spec)
    trial_id = ray.tune.get_context().get_trial_id()
    tracker = Tracker(spec.tracking_uri, timeout_s=spec.timeout_s)
    run_id = tracker.ensure_run(spec.experiment, run_key=f"{spec.sweep_key}-{trial_id}",
                                run_name=f"{spec.sweep_name}-{trial_id}", parent_run_id=spec.parent_run_id,
                                tags={tags.KIND: "sweep-trial", tags.SWEEP: spec.sweep_key, tags.TRIAL_ID: trial_id})
    tracker.log_params(run_id, {name: str(value) for name, value in point.items()})
    init_from = None
    for k, base in enumerate(spec.stages):
        last = k == len(spec.stages) - 1
        job = trial_job(base, point, spec, trial_id, run_id, init_from, validate=last)
        callbacks = [ReportValidation(spec.tracking_uri, run_id, spec.timeout_s)] if last else []
        result = run_stage(job, register=False, train_callbacks=callbacks)
        init_from = result.artifact_uri
    tracker.set_tags(run_id, {tags.ARTIFACT: init_from or ""})
    tracker.end_run(run_id)
