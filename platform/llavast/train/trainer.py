"""The Ray Train V2 `TorchTrainer` of a stage: workers, storage, failures, checkpoints.

The run name is deterministic (job name, stage, config fingerprint), so running the same job again
reuses `RunConfig(name, storage_path)` and Ray Train resumes from the latest checkpoint there, while
an edited job (another fingerprint) starts a fresh run instead of loading an incompatible state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from ray.train.v2.api.callback import UserCallback

from llavast import storage
from llavast.config.secrets import SecretEnv
from llavast.config.stage import ComputeSection, StageJobConfig
from llavast.train.checkpoint import CHECKPOINT_PREFIX
from llavast.train.loop import LoopArgs, train_loop_per_worker

RUNS_DIR = "runs"


def stage_run_name(job: StageJobConfig, fingerprint: str) -> str:
    return f"{job.name}-stage{job.train.stage}-{fingerprint[:12]}"


def scaling_config(compute: ComputeSection) -> ScalingConfig:
    resources: dict[str, float] = {"CPU": compute.cpus_per_worker, **compute.resources_per_worker}
    if compute.use_gpu:
        resources["GPU"] = compute.gpus_per_worker
    return ScalingConfig(num_workers=compute.num_workers, use_gpu=compute.use_gpu, resources_per_worker=resources,
                         accelerator_type=compute.accelerator_type, placement_strategy=compute.placement_strategy)


def worker_env(job: StageJobConfig, env_vars: Mapping[str, str]) -> dict[str, str]:
    """Runtime env variables of the training workers: the job's literal `env_vars` (resolved references travel
    as a SecretEnv instead: Ray logs runtime envs), and DeepSpeed's CPU accelerator when there is no GPU."""
    return {**env_vars, **({} if job.compute.use_gpu else {"DS_ACCELERATOR": "cpu"})}


def run_config(job: StageJobConfig, run_name: str, env_vars: Mapping[str, str],
               callbacks: Sequence[UserCallback] = ()) -> RunConfig:
    fs, path = storage.arrow_filesystem(storage.join(job.storage.root, RUNS_DIR), job.storage.options)
    return RunConfig(
        name=run_name, storage_path=path, storage_filesystem=fs, callbacks=list(callbacks),
        failure_config=FailureConfig(max_failures=job.compute.max_failures),
        checkpoint_config=CheckpointConfig(num_to_keep=job.train.keep_checkpoints),
        worker_runtime_env={"env_vars": worker_env(job, env_vars)},
    )


def latest_checkpoint_step(job: StageJobConfig, run_name: str) -> int | None:
    """The step of the newest resume checkpoint this stage's Ray Train run left in storage, or None."""
    names = storage.list_names(storage.join(job.storage.root, RUNS_DIR, run_name), job.storage.options)
    steps = [int(name.removeprefix(CHECKPOINT_PREFIX)) for name in names
             if name.startswith(CHECKPOINT_PREFIX) and name.removeprefix(CHECKPOINT_PREFIX).isdigit()]
    return max(steps, default=None)


def build_trainer(args: LoopArgs, env_vars: Mapping[str, str], secrets: SecretEnv,
                  callbacks: Sequence[UserCallback] = ()) -> TorchTrainer:
    """A TorchTrainer running `train_loop_per_worker(args)`: NCCL on GPU, gloo on CPU. `env_vars` (the job's
    literal ones) go in the workers' runtime env; `secrets` travel as an argument each worker applies.
    `callbacks` are Ray Train callbacks of the run (a sweep trial's report to Tune)."""
    job = args.job
    loop_config: dict[str, Any] = {"args": args, "secrets": secrets}
    return TorchTrainer(
        train_loop_per_worker, train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if job.compute.use_gpu else "gloo"),
        scaling_config=scaling_config(job.compute), run_config=run_config(job, args.run_name, env_vars, callbacks))
