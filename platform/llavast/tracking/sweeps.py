"""A sweep in MLflow: one parent run (the space, then the trials table, a picture and the best parameters),
one child run per trial (tune/trial.py creates it: parameters, validation curves, objective), each trial's
stage runs nested under the trial's."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mlflow.entities import RunStatus

from llavast.tracking import tags
from llavast.tracking.client import PARENT_RUN_TAG, Tracker, flatten_params

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)


def start_sweep(tracker: Tracker, job: Any, key: str, space_rows: Sequence[Mapping[str, Any]],
                removed: Mapping[str, int]) -> str:
    """The sweep's parent run (created, or continued on a re-run): its config, the valid space as space.csv."""
    run_id = tracker.ensure_run(job.tracking.experiment, run_key=f"sweep-{key}", run_name=job.name,
                                parent_run_id=job.tracking.parent_run_id, tags={tags.KIND: "sweep", tags.SWEEP: key})
    params = flatten_params(job.model_dump(mode="json", include={"space", "search", "scheduler", "objective",
                                                                "validation", "constraints"}))
    params.update({"space.valid_points": str(len(space_rows)),
                   "space.removed": ", ".join(f"{k}: {n}" for k, n in removed.items()) or "none"})
    tracker.log_params(run_id, params)
    tracker.call("log_text", tracker.client.log_text, run_id, _csv(space_rows), "space.csv")
    return run_id


def _csv(rows: Sequence[Mapping[str, Any]]) -> str:
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()


def finish_sweep(tracker: Tracker, run_id: str, job: Any, key: str, rows: Sequence[dict[str, Any]],
                 report: tuple[str, Figure], best: Mapping[str, Any] | None, *, failed: bool) -> None:
    """The trials table (`report`: its CSV text and picture, rendered by the sweep) on the parent run, the best
    trial as `best.*` parameters and the `best_objective` metric; trial runs Tune stopped (ASHA, or a dead
    driver) closed, with their stages; `rows` say which trial stopped early after how many steps."""
    table, figure = report
    tracker.call("log_text", tracker.client.log_text, run_id, table, "trials.csv")
    tracker.call("log_figure", tracker.client.log_figure, run_id, figure, "trials.png")
    if best is not None:
        tracker.log_params(run_id, {f"best.{k}": str(v) for k, v in best.items() if v is not None})
        tracker.log_metrics(run_id, {"best_objective": float(best["objective"])}, step=0)
    by_trial = {row["trial_id"]: row for row in rows}
    exp_id = tracker.experiment_id(job.tracking.experiment)
    trials = tracker.call("search_runs", tracker.client.search_runs, [exp_id],
                          filter_string=f"tags.`{tags.SWEEP}` = '{key}' and tags.`{tags.KIND}` = 'sweep-trial'")
    for trial in trials:
        row = by_trial.get(trial.data.tags.get(tags.TRIAL_ID, ""))
        if row is not None:
            tracker.set_tags(trial.info.run_id, {tags.STOPPED_EARLY: str(bool(row["stopped_early"])).lower(),
                                                 tags.STEPS: str(row["steps"])})
        if trial.info.status == "RUNNING":  # stopped by ASHA: its function was ended mid-stage
            _end_nested(tracker, exp_id, trial.info.run_id)
            tracker.end_run(trial.info.run_id, RunStatus.to_string(RunStatus.KILLED))
    tracker.end_run(run_id, "FAILED" if failed else "FINISHED")


def _end_nested(tracker: Tracker, exp_id: str, parent_id: str) -> None:
    nested = tracker.call("search_runs", tracker.client.search_runs, [exp_id],
                          filter_string=f"tags.`{PARENT_RUN_TAG}` = '{parent_id}' and attributes.status = 'RUNNING'")
    for run in nested:
        tracker.end_run(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))

