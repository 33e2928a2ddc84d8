"""An evaluation in MLflow: its own run (metrics, results, pictures) and its numbers on the evaluated version.

    run      in the job's experiment, nested under a pipeline's run when it has one; tags `llavast.model_version`
             (`<registered model>/<version>`) and `llavast.kind` = eval; params = the job; metrics
             `<benchmark>/<task>/<key>` (percent, as the paper; "@" in a key is written "_at_": MLflow names take no
             "@"); artifacts: the results folder (or, on object
             storage, summary.json and run.json with a tag saying where the rest is) and `pictures/...png`
    version  tags `eval.<benchmark>.<task>.<key>` = the value (4 decimals) and `eval.<benchmark>.run_id`, so the
             registry's version list compares versions side by side
Re-running the same evaluation (same run key) continues its run: its metrics take the new values.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llavast.tracking import tags
from llavast.tracking.client import Tracker, flatten_params

log = logging.getLogger(__name__)

def metric_key(benchmark: str, task: str, key: str) -> str:
    """`<benchmark>/<task>/<key>`; MLflow names take no "@", so `R@0.5` is written `R_at_0.5`."""
    return f"{benchmark}/{task}/{key.replace('@', '_at_')}"


def version_tag_key(benchmark: str, task: str, key: str) -> str:
    """`eval.<benchmark>.<task>.<key>`, "@" written as in `metric_key`."""
    return f"eval.{benchmark}.{task}.{key.replace('@', '_at_')}"


def log_evaluation(tracker: Tracker, *, experiment: str, run_key: str, run_name: str, parent_run_id: str | None,
                   params: Mapping[str, Any], summary: Mapping[str, Mapping[str, float | int]],
                   results_dir: str, local_results: Path | None, extra_files: Mapping[str, str],
                   figures: Sequence[tuple[str, Any]], version: str | None, tag_version: bool) -> str:
    """Log one evaluation; return its run id.

    `summary`: `<benchmark>/<task>` -> table. `local_results`: the results folder when it is on this machine
    (logged whole), else None and `extra_files` (name -> text) are logged instead. `figures`: (artifact path,
    matplotlib Figure). `version`: `<registered model>/<version>` of the evaluated model, or None.
    """
    run_tags = {tags.KIND: "eval", tags.EVAL_RESULTS: results_dir}
    if version:
        run_tags[tags.MODEL_VERSION] = version
    run_id = tracker.ensure_run(experiment, run_key=run_key, run_name=run_name, parent_run_id=parent_run_id,
                                tags=run_tags)
    tracker.log_params(run_id, flatten_params(params))
    metrics = {}
    for name, table in summary.items():
        benchmark, task = name.split("/")
        metrics.update({metric_key(benchmark, task, k): float(v) for k, v in table.items()})
    tracker.log_metrics(run_id, metrics, step=0)
    if local_results is not None:
        tracker.call("log_artifacts", tracker.client.log_artifacts, run_id, str(local_results), "results")
    for name, text in extra_files.items():
        tracker.call("log_text", tracker.client.log_text, run_id, text, f"results/{name}")
    for path, figure in figures:
        tracker.call("log_figure", tracker.client.log_figure, run_id, figure, path)
    if version and tag_version:
        model, number = version.rsplit("/", 1)
        for name, table in summary.items():
            benchmark, task = name.split("/")
            tracker.call("set_model_version_tag", tracker.client.set_model_version_tag, model, number,
                         f"eval.{benchmark}.run_id", run_id)
            for key, value in table.items():
                tracker.call("set_model_version_tag", tracker.client.set_model_version_tag, model, number,
                             version_tag_key(benchmark, task, key), f"{float(value):.4f}")
    tracker.end_run(run_id)
    log.info("evaluation logged to MLflow run %s%s", run_id, f" and version {version}" if version else "")
    return run_id


def download_pictures(tracker: Tracker, experiment: str, results_dir: str, dest: Path) -> list[Path]:
    """The pictures of the latest evaluation whose results are in `results_dir`, downloaded under `dest`
    (`pictures/<benchmark>/<task>/<id>.png` as logged); [] when there is no such run."""
    exp_id = tracker.experiment_id(experiment)
    runs = tracker.call("search_runs", tracker.client.search_runs, [exp_id],
                        filter_string=f"tags.`{tags.EVAL_RESULTS}` = '{results_dir}'",
                        order_by=["attributes.end_time DESC"], max_results=1)
    if not runs:
        return []
    dest.mkdir(parents=True, exist_ok=True)
    local = tracker.call("download_artifacts", tracker.client.download_artifacts, runs[0].info.run_id, "pictures",
                         str(dest))
    return sorted(Path(local).rglob("*.png"))
