"""The per-worker training loop: build the stage model -> DeepSpeed -> resume -> stream this rank's planned
rows -> step, log, checkpoint -> export the stage artifact. Ray Train runs `train_loop_per_worker` on every
worker; everything it calls is a small helper, so the loop reads top to bottom.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import ray.util
import torch
from ray.data import DataContext
from ray.train import CheckpointUploadMode

from llavast import storage
from llavast.config.secrets import SecretEnv
from llavast.config.stage import StageJobConfig
from llavast.data.collate import DataStats, StreamBatch, iter_batches
from llavast.data.manifest import Blocks, read_rows
from llavast.data.pipeline import build_dataset
from llavast.data.plan import RankPlan
from llavast.failures import WorkerError
from llavast.tracking import MetricsLogger, node_description, save_unsent, system_metrics
from llavast.train import callbacks
from llavast.train.artifact import read_artifact, write_artifact
from llavast.train.checkpoint import Progress, checkpoint_dir_name, load_checkpoint, save_checkpoint
from llavast.train.engine import build_engine
from llavast.train.metrics import StepMeter
from llavast.train.policy import resolve_policy
from llavast.train.progress import StageProgress
from llavast.train.stage_model import StageModel, build_stage_model, export_artifact
from llavast.train.step import micro_step

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopArgs:
    """Everything a worker needs, resolved once by the driver (no env reads, no registry calls here)."""

    job: StageJobConfig
    fingerprint: str
    run_name: str
    mlflow_run_id: str
    parent_dir_uri: str | None  # the parent stage artifact on object storage (already resolved)
    artifact_uri: str  # where this stage's artifact goes
    unsent_metrics_uri: str  # where rank 0 keeps the metric points MLflow did not take (replayed by the driver)
    total_steps: int
    blocks: Blocks  # where the manifest's row groups are (the plans number rows block by block)
    rank_plans: tuple[Any, ...]  # one ObjectRef per rank: its RankPlan (data/plan.py), made once by the driver
    lineage: dict[str, str] = field(default_factory=dict)
    progress: Any = None  # the driver's queue for rank 0's progress lines (train/progress.py `relayed`)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train's entry on every worker: the job's secrets into this process's environment, then
    `run_worker`, with a failure sent to the driver as a `WorkerError`
    (the original type and message, file:line, rank, and this worker's log file)."""
    try:
        config["secrets"].apply()  # before anything reads the environment (S3 and MLflow clients)
        with _node_system_metrics(config["args"]):
            run_worker(config["args"], config["secrets"])
    except Exception as err:
        raise WorkerError.wrap(err, _worker_log(), ray.train.get_context().get_world_rank()) from err


def _node_system_metrics(args: LoopArgs) -> AbstractContextManager[object]:
    """MLflow's system metrics of this node while it trains, from its local rank 0 only (one monitor per node):
    `system/node<node rank>/...` in the stage's run, and the node's host and GPUs as `llavast.hardware.node<k>`."""
    ctx = ray.train.get_context()
    if ctx.get_local_rank() != 0:
        return nullcontext()
    try:
        gpus = []  # the node's training GPUs: this worker sees its own only, the node's workers have as many each
        if args.job.compute.use_gpu and torch.cuda.is_available():
            count = math.ceil(args.job.compute.gpus_per_worker * ctx.get_local_world_size())
            gpus = [torch.cuda.get_device_name(0)] * count
        description = node_description(gpus)
    except Exception as err:  # noqa: BLE001 - a description is not worth a failed run
        log.warning("cannot describe node %d for MLflow: %s", ctx.get_node_rank(), err)
        description = None
    return system_metrics(args.job.tracking.uri, args.mlflow_run_id, f"node{ctx.get_node_rank()}",
                          interval_s=args.job.tracking.system_metrics_interval_s, description=description)


def _worker_log() -> str:
    """Where this worker's stderr (with the full traceback) is: Ray redirects it to a file in the node's
    session log directory; `ray logs` shows it from anywhere while the cluster is up."""
    pid, ip = os.getpid(), ray.util.get_node_ip_address()
    command = f"ray logs worker --pid {pid} --node-ip {ip} --err --tail -1"
    try:
        path = os.readlink("/proc/self/fd/2")
    except OSError:
        return command
    return f"{path} on node {ip} (or, while the cluster is up: {command})" if path.startswith("/") else command


def run_worker(args: LoopArgs, secrets: SecretEnv) -> None:
    job = args.job
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    DataContext.get_current().execution_options.preserve_order = True  # this worker's stream keeps its plan

    # 1. The stage model: base -> parent artifact -> LoRA merge/add -> freeze per policy.
    with tempfile.TemporaryDirectory(prefix="llavast-worker-") as tmp:  # this attempt's downloads: never stale
        cache = Path(tmp)
        parent = (read_artifact(storage.download_dir(args.parent_dir_uri, job.storage.options, cache))
                  if args.parent_dir_uri else None)
        stage = build_stage_model(job.model.name, storage.download_dir(job.model.base, job.storage.options, cache),
                                  job.model.overrides, resolve_policy(job.train, _contract_of(job)), job.lora,
                                  parent, seed=job.train.seed)
    if job.train.gradient_checkpointing:
        stage.model.activation_checkpointing_enable()
    stage.model.to(device)

    # 2. DeepSpeed around a torch AdamW (one group per trainable part) and the cosine schedule.
    engine = build_engine(stage.model, stage.contract, stage.policy, job.train, job.deepspeed, args.total_steps,
                          use_gpu=job.compute.use_gpu)
    zero3 = job.deepspeed.zero_stage == 3

    # 3. Resume from the latest checkpoint Ray Train hands back, if any.
    step, dropped, consumed = 0, 0, 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        progress = load_checkpoint(engine, checkpoint, world, args.fingerprint)
        step, dropped, consumed = progress.step, progress.dropped_samples, progress.samples_consumed
        log.info("rank %d resumed at step %d", rank, step)
    ctx = callbacks.WorkerContext(job=job, run_name=args.run_name, rank=rank, world_size=world, stage=stage,
                                  zero3=zero3, total_steps=args.total_steps)
    user_callbacks = callbacks.build(job.train.callbacks)
    for callback in user_callbacks:
        callback.on_train_start(ctx, step)
    logger = MetricsLogger(job.tracking.uri, args.mlflow_run_id) if rank == 0 else None
    line = None
    if rank == 0 and args.progress is not None:  # rank 0's lines go to the driver's queue
        line = StageProgress(f"stage {job.train.stage} ({job.name})", args.total_steps,
                             job.tracking.progress_every_s, first_step=step, say=args.progress.put_nowait)
    if logger is not None and checkpoint is not None:
        logger.log({"resumed_from_step": step}, step=step)

    # 4. This rank's planned rows from the resume step on; each micro-batch holds the plan's media kind.
    plan: RankPlan = ray.get(args.rank_plans[rank])
    batches = _planned_batches(args, plan, step, stage, secrets)
    stats, metrics = DataStats(), {}
    while step < args.total_steps:
        meter, uids = StepMeter(), []
        for _ in range(job.train.grad_accum_steps):
            waited = time.perf_counter()
            batch = next(batches).to(device)
            waited = time.perf_counter() - waited
            stats.update(batch)
            uids += batch.uids
            out = micro_step(engine, batch)
            meter.add(out.loss, out.target_tokens, batch.size, out.tokens, waited, batch.num_dropped)
        step += 1
        metrics = _step_metrics(meter, engine, device, world)
        dropped += int(metrics.pop("dropped"))
        consumed += int(metrics["samples"])  # delivered samples of all ranks: stand-ins of dropped ones are not in it
        metrics.update(dropped_samples=dropped, samples_consumed=consumed)
        if logger is not None and step % job.train.log_every == 0:
            logger.log(metrics, step=step)
        if line is not None:
            line.step_end(step, metrics)
        if step % job.train.checkpoint_every == 0 or step == args.total_steps:
            progress = Progress(step=step, samples_consumed=consumed, dropped_samples=dropped,
                                world_size=world, fingerprint=args.fingerprint)
            _report_checkpoint(engine, job, metrics, progress, rank)
        ctx.metrics.clear()
        ctx.metrics.update(metrics)
        for callback in user_callbacks:
            callback.on_step_end(ctx, step, uids)

    # 5. The stage artifact: gathered on every rank under ZeRO-3, written by rank 0.
    artifact = export_artifact(stage, stage.model, zero3, _manifest(args, metrics, step))
    for callback in user_callbacks:
        callback.on_train_end(ctx, step)
    if rank == 0:
        with tempfile.TemporaryDirectory() as tmp:
            storage.upload_dir(write_artifact(Path(tmp), artifact, stage.tokenizer), args.artifact_uri,
                               job.storage.options)
        log.info("stage %d artifact written to %s", job.train.stage, args.artifact_uri)
    if logger is not None:
        logger.log(stats.metrics(prefix="data_rank0/"), step=step)
        kept = save_unsent(logger.close(), args.unsent_metrics_uri, job.storage.options)
        if kept is not None:
            log.warning("MLflow is unreachable: metric points kept in %s, replayed by the driver", kept)
    ray.train.report({**metrics, "step": step, "artifact_written": 1.0})


def _planned_batches(args: LoopArgs, plan: RankPlan, step: int, stage: StageModel,
                     secrets: SecretEnv) -> Iterator[StreamBatch]:
    """This rank's micro-batches from optimizer step `step` to the last: the rest of the current epoch's
    rows, then the following (reshuffled) epochs', each epoch read (its rows only) when it starts."""
    job, mb = args.job, args.job.train.micro_batch_size
    epoch, offset = plan.position(step)
    remaining = (args.total_steps - step) * plan.batching.rows_per_rank_step
    while remaining > 0:
        rows = plan.rows[epoch][offset:offset + remaining]
        kinds = plan.micro_kinds[epoch][offset // mb:(offset + len(rows)) // mb]
        dataset = build_dataset(read_rows(args.blocks, rows, job.data.storage), job.data, job.data.storage,
                                stage.model.config, stage.tokenizer, secrets)
        batches = iter_batches(dataset, mb, stage.tokenizer.pad_token_id, stage.model.config.image_size,
                               prefetch_batches=job.data.prefetch_batches)
        for kind, batch in zip(kinds, batches, strict=True):
            if batch.media_kinds != {int(kind)}:  # a stream out of plan order would desynchronise DeepSpeed
                raise AssertionError(f"micro-batch of media kinds {batch.media_kinds}, the plan says {int(kind)}")
            yield batch
        remaining, epoch, offset = remaining - len(rows), epoch + 1, 0


def _contract_of(job: StageJobConfig) -> Any:
    import model_zoo

    return model_zoo.spec(job.model.name)


def _step_metrics(meter: StepMeter, engine: Any, device: torch.device, world: int) -> dict[str, float]:
    metrics = meter.reduce(device, world)
    for group, lr in zip(engine.optimizer.param_groups, engine.get_lr()):
        metrics[f"lr/{group.get('name', 'group')}"] = float(lr)
    return metrics


def _report_checkpoint(engine: Any, job: StageJobConfig, metrics: dict[str, float], progress: Progress,
                       rank: int) -> None:
    mode = CheckpointUploadMode.ASYNC if job.train.async_checkpoint_upload else CheckpointUploadMode.SYNC
    ray.train.report({**metrics, "step": progress.step}, checkpoint=save_checkpoint(engine, progress, rank),
                     checkpoint_dir_name=checkpoint_dir_name(progress.step), checkpoint_upload_mode=mode,
                     delete_local_checkpoint_after_upload=True)


def _manifest(args: LoopArgs, metrics: dict[str, float], step: int) -> dict[str, Any]:
    job = args.job
    return {"model": job.model.name, "stage": job.train.stage, "base": job.model.base,
            "overrides": job.model.overrides,
            "parent": args.parent_dir_uri, "data_manifest": job.data.manifest, "fingerprint": args.fingerprint,
            "run_name": args.run_name, "mlflow_run_id": args.mlflow_run_id, "steps": step,
            "metrics": metrics, "lineage": args.lineage}
