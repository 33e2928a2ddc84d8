"""One stage end to end, on the driver: resolve, track, plan, train on Ray, register.

    preflight (MLflow, base model, manifest, init_from, a writable storage root) -> the stage's lease ->
    the stage's MLflow run (created, or continued when the same job runs again) -> plan every rank's rows
    from the manifest's layout (once, here; each worker gets its own plan) -> TorchTrainer.fit(), unless a
    record says this run trained already -> replay the metric points MLflow did not take -> register the
    artifact, move the stage alias, tag lineage -> finish the run. Any failure after the run exists ends it
    FAILED, with the reason in its `llavast.error` tag; MLflow down after training is `RegistrationPending`
    instead: the run is not failed, and a re-run only registers.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ray

from llavast import storage
from llavast.config.loader import fingerprint
from llavast.config.secrets import SecretEnv, redact, redact_config, split_env
from llavast.config.stage import StageJobConfig
from llavast.data import plan
from llavast.data.manifest import SCHEMA, Blocks, read_layout, read_summary, summary_digest
from llavast.errors import LlavastError, RegistrationPending, TrackingError, TrainError
from llavast.failures import describe
from llavast.lease import Lease, LeaseWait
from llavast.tracking import (
    UNSENT_DIR,
    ResolvedInit,
    Tracker,
    download_artifact,
    flatten_params,
    register_stage_artifact,
    replay_unsent,
    tags,
)
from llavast.tracking.client import experiment_url
from llavast.train import progress
from llavast.train.loop import LoopArgs
from llavast.train.preflight import Checked, preflight
from llavast.train.trainer import build_trainer, latest_checkpoint_step, stage_run_name

log = logging.getLogger(__name__)
ARTIFACTS_DIR = "artifacts"
LEASES_DIR = "leases"
TRAINED_DIR = "trained"  # <run name>.json: written once fit() returned, so a re-run registers without training
# Not fingerprinted, so they may differ between attempts of one run, and MLflow refuses a param whose value
# changes (the parent run is the run's `mlflow.parentRunId` tag already).
UNLOGGED_PARAMS = ("tracking.system_metrics_interval_s", "tracking.parent_run_id")


@dataclass(frozen=True)
class StageResult:
    run_name: str
    mlflow_run_id: str
    artifact_uri: str
    model_name: str
    model_version: str
    total_steps: int
    metrics: dict[str, Any]
    trained: bool = True  # False: an earlier call (or another runner) trained it; this one registered it


@dataclass(frozen=True)
class StagePlan:
    blocks: Blocks
    layout: plan.Layout
    batching: plan.Batching
    total_steps: int


def plan_stage(job: StageJobConfig) -> StagePlan:
    """The manifest's layout (row-group sizes and media kinds, nothing else) and the stage's step count."""
    blocks, layout = read_layout(job.data.manifest, job.data.storage)
    batching = plan.Batching(job.compute.num_workers, job.train.micro_batch_size, job.train.grad_accum_steps)
    per_epoch = plan.steps_per_epoch(layout, batching)
    return StagePlan(blocks, layout, batching, plan.total_steps(job.train.max_steps, job.train.epochs, per_epoch))


def hand_out_plans(job: StageJobConfig, stage_plan: StagePlan) -> tuple[tuple[Any, ...], list[int]]:
    """Every epoch's plan, made once; each rank's share put in Ray's object store (a worker fetches its own).
    Returns the refs (one per rank) and the rows each epoch leaves out."""
    started = time.perf_counter()
    epochs = plan.plan_stage(stage_plan.layout, stage_plan.batching, job.data.shuffle, job.data.seed,
                             stage_plan.total_steps)
    refs = tuple(ray.put(plan.rank_plan(epochs, rank, stage_plan.layout, stage_plan.batching))
                 for rank in range(stage_plan.batching.world_size))
    left_out = [p.left_out for p in epochs]
    log.info("planned %d epoch(s) of %d rows for %d workers in %.1f s; left out per epoch: %s",
             len(epochs), len(stage_plan.layout.kinds), stage_plan.batching.world_size,
             time.perf_counter() - started, left_out)
    return refs, left_out


def run_stage(job: StageJobConfig, checked: Checked | None = None,
              version_tags: Mapping[str, str] | None = None, *, register: bool = True,
              train_callbacks: Sequence[Any] = (), lease_wait: LeaseWait | None = None) -> StageResult:
    """Train one stage on the current Ray cluster and register its artifact; raise TrainError on failure.

    `checked` is the preflight's result when the caller ran it already (the CLI, before starting Ray);
    `version_tags` go on the model version with its lineage when it is created (the pipeline's node fingerprint).
    `register=False` (a sweep's trials) leaves the artifact unregistered: the result's version is "".
    `train_callbacks` are Ray Train callbacks of the TorchTrainer (a sweep trial's report to Tune).
    `lease_wait`: how long to wait for another runner of the same stage run (then it is registered: this run
    registers the same version without training, see `_train_and_register`).
    Once the stage's MLflow run exists, any failure ends it FAILED with the reason as the `llavast.error` tag.
    """
    env_vars, secrets = split_env(job.env_vars, f"job {job.name}", os.environ)  # once, here: an unset one fails now
    checked = checked or preflight(job)
    tracker, parent = checked.tracker, checked.parent
    fp = fingerprint(job)
    run_name = stage_run_name(job, fp)
    lineage = {tags.STAGE: str(job.train.stage), tags.BASE: job.model.base, tags.INIT_FROM: job.model.init_from or "",
               tags.PARENT_ARTIFACT: parent.uri if parent else "",
               tags.PARENT_VERSION: f"{parent.model_name}/{parent.version}" if parent and parent.version else "",
               tags.DATA_MANIFEST: job.data.manifest, tags.FINGERPRINT: fp, tags.RUN_NAME: run_name}
    lease = Lease(storage.join(job.storage.root, LEASES_DIR, f"{run_name}.json"), job.storage.options,
                  what=f"stage {job.train.stage} of {job.name} ({run_name})", wait=lease_wait or LeaseWait())
    with lease:  # one runner per stage run: its MLflow run, Ray Train directory and registration
        run_id = tracker.ensure_run(job.tracking.experiment, run_key=run_name, run_name=f"{job.name}-{job.alias}",
                                    parent_run_id=job.tracking.parent_run_id, tags=lineage)
        try:
            return _train_and_register(job, env_vars, secrets, tracker, parent, fp, run_name, run_id,
                                       {**lineage, **(version_tags or {})}, register, train_callbacks)
        except RegistrationPending:
            raise  # trained, not failed: the run stays open for the re-run that registers it
        except Exception as err:
            failure = describe(err)
            _end_failed(tracker, run_id, replace(failure, message=redact(failure.message)).summary)
            if isinstance(err, LlavastError):
                raise  # a user error (a manifest, MLflow) already names what and where
            raise TrainError(f"stage {job.train.stage} ({run_name}) failed: {failure.summary}; "
                             f"{_resume_advice(job, run_name)}", failure=failure) from err


def _resume_advice(job: StageJobConfig, run_name: str) -> str:
    """What a re-run does: resume from the latest checkpoint when one exists, else start over."""
    try:
        step = latest_checkpoint_step(job, run_name)
    except LlavastError:  # the storage that failed the stage may not answer this either
        return "fix the cause and run the same job again (it resumes from its latest checkpoint, if one was saved)"
    if step is None:
        return "fix the cause and run the same job again (no checkpoint was saved: it starts over)"
    return f"run the same job again to resume from its latest checkpoint (step {step})"


def _train_and_register(job: StageJobConfig, env_vars: dict[str, str], secrets: SecretEnv,
                        tracker: Tracker, parent: ResolvedInit | None, fp: str, run_name: str, run_id: str,
                        lineage: dict[str, str], register: bool = True,
                        train_callbacks: Sequence[Any] = ()) -> StageResult:
    progress.log.info("stage %d (%s): MLflow run %s", job.train.stage, job.name,
                      experiment_url(tracker.uri, tracker.experiment_id(job.tracking.experiment), run_id))
    root, options = job.storage.root, job.storage.options
    unsent = storage.join(root, UNSENT_DIR, run_name)
    replay_unsent(tracker, run_id, unsent, options)  # points an earlier attempt kept through an outage
    params = flatten_params(redact_config(job.model_dump(mode="json")))
    for key in UNLOGGED_PARAMS:
        params.pop(key, None)
    tracker.log_params(run_id, params)
    summary = read_summary(job.data.manifest, job.data.storage)
    log_manifest_input(tracker, run_id, job.data.manifest, summary)
    stage_plan = plan_stage(job)
    total = stage_plan.total_steps
    tracker.log_params(run_id, {"resolved.total_steps": str(total), "resolved.fingerprint": fp})
    artifact_uri = storage.join(root, ARTIFACTS_DIR, run_name)
    record_uri = storage.join(root, TRAINED_DIR, f"{run_name}.json")
    trained = not storage.exists(record_uri, options)
    if not trained:
        metrics = json.loads(storage.read_text(record_uri, options))["metrics"]
        log.info("stage %d already trained (%s): registering its artifact", job.train.stage, record_uri)
    else:
        with tempfile.TemporaryDirectory(prefix="llavast-parent-") as downloads:  # the parent, for this run only
            parent_dir = parent.uri if parent else None
            if parent is not None and parent.needs_mlflow_download:  # registered from a local storage root
                parent_dir = str(download_artifact(parent, tracker, Path(downloads)))
            rank_plans, left_out = hand_out_plans(job, stage_plan)
            for epoch, rows in enumerate(left_out):  # rows the single-media micro-steps and whole steps leave out
                tracker.log_metrics(run_id, {"data/left_out_samples": float(rows)}, step=epoch)
            tolerated = summary.get("tolerated", {})  # the index's repairs
            tracker.log_metrics(run_id, {f"data/tolerated_{name}": float(n) for name, n in tolerated.items()}, step=0)
            log.info("stage %d: %d steps on %d workers, run %s", job.train.stage, total, job.compute.num_workers,
                     run_name)
            with progress.relayed() as lines:
                args = LoopArgs(job=job, fingerprint=fp, run_name=run_name, mlflow_run_id=run_id,
                                parent_dir_uri=parent_dir, artifact_uri=artifact_uri, unsent_metrics_uri=unsent,
                                total_steps=total, blocks=stage_plan.blocks, rank_plans=rank_plans, lineage=lineage,
                                progress=lines)
                metrics = dict(build_trainer(args, env_vars, secrets, train_callbacks).fit().metrics or {})
        storage.write_text(record_uri, json.dumps({"artifact": artifact_uri, "steps": total, "metrics": metrics}),
                           options)
    try:
        replay_unsent(tracker, run_id, unsent, options)  # what rank 0 kept if MLflow was down at the end
        version = ""
        if register:
            version = register_stage_artifact(tracker, job.tracking.registered_model, artifact_uri,
                                              alias=job.alias, run_id=run_id, tags=lineage)
            tracker.set_tags(run_id, {tags.MODEL_VERSION: f"{job.tracking.registered_model}/{version}"})
        tracker.set_tags(run_id, {tags.ARTIFACT: artifact_uri})
        tracker.end_run(run_id)
    except TrackingError as err:
        raise RegistrationPending(f"stage {job.train.stage} ({run_name}) trained; registration pending: "
                                  f"{redact(str(err))}; re-run to register (training is not repeated)") from err
    return StageResult(run_name=run_name, mlflow_run_id=run_id, artifact_uri=artifact_uri,
                       model_name=job.tracking.registered_model, model_version=version, total_steps=total,
                       metrics=metrics, trained=trained)


PROFILE_KEYS = ("total", "quarantined", "by_media", "by_task", "by_source", "tolerated")


def log_manifest_input(tracker: Tracker, run_id: str, manifest_uri: str, summary: dict[str, Any]) -> bool:
    """The stage's manifest as the run's training dataset: named after its folder, its URI as the source, the
    summary's digest, the Parquet schema and the summary's counts as the profile; once per run."""
    name = manifest_uri.rstrip("/").rsplit("/", 1)[-1] or manifest_uri
    return tracker.log_dataset(run_id, manifest_uri, name=name, digest=summary_digest(summary), schema=SCHEMA,
                               profile={k: summary[k] for k in PROFILE_KEYS if k in summary})


def _end_failed(tracker: Tracker, run_id: str, reason: str) -> None:
    """End the stage's run FAILED with its (redacted) reason; an MLflow that is down too must not hide the
    first error."""
    try:
        tracker.set_tags(run_id, {tags.ERROR: reason})
        tracker.end_run(run_id, "FAILED")
    except LlavastError as err:
        log.warning("could not mark MLflow run %s FAILED: %s", run_id, err)
