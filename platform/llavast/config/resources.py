"""What a job asks the cluster for at once, from its config alone: the DAG check refuses a node larger than
the cluster, and a sweep divides the cluster by one trial's needs."""

from __future__ import annotations

from pydantic import BaseModel

from llavast.config.eval import EvalJobConfig
from llavast.config.loader import load_sweep_stages
from llavast.config.stage import StageJobConfig
from llavast.config.sweep import SweepJobConfig


def job_resources(job: BaseModel) -> dict[str, float]:
    """Ray resources a job holds at once. A sweep's are one trial's (`trial_resources`): how many trials run
    together is Tune's to decide."""
    if isinstance(job, StageJobConfig):
        c, d = job.compute, job.data
        # each training worker runs its own decoding actors (docs/training.md, "Data")
        per_worker = c.cpus_per_worker + d.decode_concurrency * d.decode_num_cpus
        needs = {"CPU": c.num_workers * per_worker}
        if c.gpus_per_worker:
            needs["GPU"] = c.num_workers * c.gpus_per_worker
        if c.accelerator_type:
            needs[f"accelerator_type:{c.accelerator_type}"] = 0.001 * c.num_workers
        return needs
    if isinstance(job, SweepJobConfig):
        return trial_resources(job, load_sweep_stages(job))
    if isinstance(job, EvalJobConfig):
        c, d = job.compute, job.decode
        needs = {"CPU": c.num_actors * c.cpus_per_actor + d.decode_concurrency * d.decode_num_cpus}
        if c.gpus_per_actor:
            needs["GPU"] = c.num_actors * c.gpus_per_actor
        return needs
    return {"CPU": 1.0}


def trial_resources(job: SweepJobConfig, stages: tuple[StageJobConfig, ...]) -> dict[str, float]:
    """What one trial holds at once: its largest stage's workers and decoders, the validation's decoders (rank 0
    of the last stage decodes the subset beside its training stream), plus its driver."""
    needs: dict[str, float] = {}
    for stage in stages:
        for key, value in job_resources(stage).items():
            needs[key] = max(needs.get(key, 0.0), value)
    last = stages[-1].data
    needs["CPU"] = needs.get("CPU", 0.0) + last.decode_concurrency * last.decode_num_cpus + job.compute.driver_cpus
    return needs
