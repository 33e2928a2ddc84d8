"""An eval job end to end, on the driver: resolve the model, answer and score on Ray, log to MLflow.

    resolve `model` (a registered version through MLflow, an artifact URI, or a base checkpoint)
    -> `runner.run_eval` (Ray Data inference; results under `out`)
    -> with a `tracking` section: `tracking.evaluation.log_evaluation` (its own run, metrics, results,
       pictures; tags on the evaluated version)
`llavast eval EVAL.yaml`, `llavast run EVAL.yaml` and a pipeline's `eval` node all run this.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llavast import storage
from llavast.config.eval import EvalJobConfig
from llavast.config.loader import fingerprint
from llavast.config.secrets import SecretEnv, redact_config, resolve_env
from llavast.evaluate.figures import figures
from llavast.evaluate.model import resolve_source
from llavast.evaluate.runner import EvalRun, run_eval


@dataclass(frozen=True)
class EvalJobResult:
    run: EvalRun
    mlflow_run_id: str | None

    def details(self) -> dict[str, float | str | None]:
        """The headline number of each task, for a pipeline's table (all of them are in summary.json)."""
        headline = {"stvg": "m_vIoU", "svg": "m_vIoU", "elc": "m_vIoU", "tvg": "mIoU", "rec": "Acc@0.5"}
        out: dict[str, float | str | None] = {
            f"{t.benchmark.task}.{headline[t.benchmark.task]}": float(t.scored.summary[headline[t.benchmark.task]])
            for t in self.run.tasks}
        out["run_id"] = self.mlflow_run_id
        return out


def run_key(job: EvalJobConfig, model: str) -> str:
    """One MLflow run per (job config, evaluated model): re-running the same evaluation continues its run."""
    digest = hashlib.sha256(f"{fingerprint(job)}\n{model}".encode()).hexdigest()[:16]
    return f"eval-{job.name}-{digest}"


def run_eval_job(job: EvalJobConfig, parent_run_id: str | None = None,
                 on_progress: Callable[[int, int], None] | None = None) -> EvalJobResult:
    """Evaluate `job.model` on `job.benchmarks` on the current Ray cluster; log to MLflow when the job says where."""
    env = SecretEnv(resolve_env(job.env_vars, f"job {job.name}", os.environ))  # for the actors' environment
    tracker = None
    if job.tracking is not None:
        from llavast.tracking import Tracker

        tracker = Tracker(job.tracking.uri, timeout_s=job.tracking.timeout_s)
    source = resolve_source(job, tracker)
    run = run_eval(job, source, env, on_progress)
    if tracker is None or job.tracking is None:
        return EvalJobResult(run, None)
    from llavast.tracking.evaluation import log_evaluation

    pictures = figures(run, job, job.tracking.pictures)
    local = Path(storage.parse(job.out).path) if storage.is_local(job.out) else None
    extra = {} if local else {name: storage.read_text(storage.join(job.out, name), job.storage)
                              for name in ("summary.json", "run.json")}
    run_id = log_evaluation(
        tracker, experiment=job.tracking.experiment,
        run_key=run_key(job, source.version or source.artifact or source.base), run_name=job.name,
        parent_run_id=parent_run_id or job.tracking.parent_run_id,
        params={**redact_config(job.model_dump(mode="json", exclude={"tracking": {"parent_run_id"}})), "resolved": {
            "artifact": source.artifact, "base": source.base, "version": source.version,
            "coordinate_bins": json.dumps([run.bins.temporal, run.bins.height, run.bins.width]),
            "num_frames": run.num_frames}},
        summary=run.summary(), results_dir=job.out, local_results=local, extra_files=extra, figures=pictures,
        version=source.version, tag_version=job.tracking.tag_version)
    for _, figure in pictures:
        figure.clear()
    return EvalJobResult(run, run_id)
