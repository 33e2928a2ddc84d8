"""A sweep trial's validation: every `every` steps (and at the last), the model being trained answers a small
fixed held-out subset, the eval runner's scorer scores it, and the table is reported to Ray Train (from there,
`tune/trial.py`'s callback hands it to Tune's scheduler and to the trial's MLflow run).

It is a training callback (`train/callbacks.py`), built on every worker from the stage's `train.callbacks`:

    - on_train_start: the subset's prompts go through the training data path once (the eval runner's rows,
      `data/pipeline.build_dataset`) and the decoded batches are kept;
    - on_step_end: the model answers them greedily (`evaluate/generate.AnswerGenerator`), in eval mode and
      without gradients, then goes back to training. Under ZeRO-2 rank 0 answers and broadcasts the table
      (every rank holds all weights); under ZeRO-3 every rank answers the same batches in lockstep, since
      each forward pass gathers the partitioned weights from all ranks.
      Every rank then calls `ray.train.report` with the same metrics, marked with `VALIDATION_KEY`, and the id
      of the workers' placement group (`PLACEMENT_GROUP_KEY`), which the sweep's driver releases when Tune ends
      the trial (`tune/sweep.py`, `ReleasePlacementGroups`).
"""

from __future__ import annotations

import logging
import statistics
import time
from typing import Any

import pyarrow as pa
import ray.train
import ray.util
import torch
import torch.distributed as dist

from llavast.config.eval import BenchmarkSection
from llavast.data.manifest import SCHEMA
from llavast.data.pipeline import build_dataset
from llavast.evaluate.answers import CoordinateBins
from llavast.evaluate.benchmarks import read_benchmark
from llavast.evaluate.generate import AnswerGenerator
from llavast.evaluate.prompts import build_prompts
from llavast.evaluate.runner import prompt_rows, score_answers
from llavast.storage import StorageOptions
from llavast.train.callbacks import Callback, WorkerContext

log = logging.getLogger(__name__)
VALIDATION_KEY = "validation_step"  # marks a report as a validation (the loop's own reports lack it)
OBJECTIVE_KEY = "objective"
PLACEMENT_GROUP_KEY = "placement_group"  # the hex id of the reporting Train run's worker placement group
DERIVED = {"mean_tIoU_sIoU": ("m_tIoU", "m_sIoU")}  # objective names that average two table keys


def objective_value(table: dict[str, float], metric: str) -> float:
    """The objective from a validation table (plus `loss`): a table key, or a DERIVED mean of two."""
    if metric in DERIVED:
        return statistics.fmean(float(table[k]) for k in DERIVED[metric])
    if metric not in table:
        raise KeyError(f"objective {metric!r} is not among the reported keys {sorted(table)}")
    return float(table[metric])


class Validation(Callback):
    """Answer and score the first `limit` samples of `annotations` every `every` steps and at the last step."""

    def __init__(self, task: str, annotations: str, media_root: str | None, limit: int, every: int,
                 max_new_tokens: int, batch_size: int, objective: str, storage: dict[str, Any] | None = None,
                 name: str = "validation") -> None:
        self.benchmark = BenchmarkSection(task=task, annotations=annotations, media_root=media_root, name=name)
        self.limit, self.every, self.batch_size = limit, every, batch_size
        self.max_new_tokens, self.objective = max_new_tokens, objective
        self.options = StorageOptions(**(storage or {}))
        self.prompts: list[Any] = []
        self.batches: list[pa.Table] = []

    def _answers_here(self, ctx: WorkerContext) -> bool:
        return ctx.rank == 0 or ctx.zero3

    def on_train_start(self, ctx: WorkerContext, step: int) -> None:
        file = read_benchmark(self.benchmark.task, self.benchmark.annotations, self.options)
        self.prompts = build_prompts(file.samples[:self.limit])
        if not self.prompts:
            raise ValueError(f"{self.benchmark.annotations}: no {self.benchmark.task} sample to validate on")
        if not self._answers_here(ctx):
            return
        model, tokenizer = ctx.stage.model, ctx.stage.tokenizer
        rows = pa.Table.from_pylist(prompt_rows(self.prompts, self.benchmark), schema=SCHEMA)
        dataset = build_dataset(rows, ctx.job.data, self.options, model.config, tokenizer)
        self.batches = list(dataset.iter_batches(batch_size=self.batch_size, batch_format="pyarrow"))

    def on_step_end(self, ctx: WorkerContext, step: int, uids: list[str]) -> None:
        if step % self.every and step != ctx.total_steps:
            return
        started = time.perf_counter()
        table = self._validate(ctx) if self._answers_here(ctx) else None
        if ctx.world_size > 1 and not ctx.zero3:
            shared = [table]
            dist.broadcast_object_list(shared, src=0)
            table = shared[0]
        assert table is not None
        metrics = {**table, "loss": float(ctx.metrics.get("loss", float("nan")))}
        metrics[OBJECTIVE_KEY] = objective_value(metrics, self.objective)
        metrics.update({"step": step, VALIDATION_KEY: 1.0, "validation_seconds": time.perf_counter() - started})
        group = ray.util.get_current_placement_group()  # the worker group's: the sweep's driver releases it
        if group is not None:
            metrics[PLACEMENT_GROUP_KEY] = group.id.hex()
        if ctx.rank == 0:
            log.info("validation at step %d: %s = %.4g", step, self.objective, metrics[OBJECTIVE_KEY])
        ray.train.report(metrics)

    def _validate(self, ctx: WorkerContext) -> dict[str, float]:
        model = ctx.stage.model
        config = model.config
        training = model.training
        model.eval()
        try:
            device = next(model.parameters()).device
            generator = AnswerGenerator(model, ctx.stage.tokenizer, self.max_new_tokens, device)
            answers: dict[str, dict[str, Any]] = {}
            with torch.no_grad():
                for batch in self.batches:
                    for row in generator.answer(batch).to_pylist():
                        answers[row["uid"]] = row
        finally:
            model.train(training)
        prefix = f"{self.benchmark.label}/{self.benchmark.task}/"
        mine = {p.id: answers[prefix + p.id] for p in self.prompts}
        bins = CoordinateBins(config.m_t, config.m_h, config.m_w)
        scored = score_answers(self.benchmark, self.prompts, mine, bins, config.num_frames)
        return {k: float(v) for k, v in scored.summary.items()}
