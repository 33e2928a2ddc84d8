"""Batch inference on Ray Data: benchmark prompts -> the training data path -> greedy answers -> scores.

    driver: read each benchmark (`benchmarks.py`), build its prompts (`prompts.py`), one manifest-shaped row per
            prompt (`prompt_rows`); the model's config and tokenizer (`model.py`)
    Ray Data: build_dataset (the training decode + tokenise actors, `data/pipeline.py`)
              -> map_batches(GenerateAnswers, `generate.py`): an actor pool, one model per actor (per GPU on a cluster),
                 assistant header appended, greedy decoding up to max_new_tokens, answers decoded with
                 special tokens kept
    driver: answers joined to their samples by id, parsed and scored (`score.py`), results written:
            <out>/<benchmark>/<task>/results.parquet (one row per sample), <out>/summary.json (one table per
            task, the keys of `llavast eval score`), <out>/run.json (model, counts, timing); pictures: `figures.py`

A sample whose media cannot be fetched or decoded, or whose prompt does not fit max_length, gets no answer: it
is a miss, its parse status says why, and run.json counts it. MLflow logging is the caller's (`tracking/`).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray

from llavast import storage
from llavast.config.eval import BenchmarkSection, EvalJobConfig
from llavast.config.secrets import SecretEnv
from llavast.data.manifest import SCHEMA
from llavast.data.pipeline import OK, build_dataset
from llavast.errors import DataError
from llavast.evaluate.answers import CoordinateBins
from llavast.evaluate.benchmarks import BenchmarkFile, STSample, read_benchmark
from llavast.evaluate.generate import GenerateAnswers
from llavast.evaluate.model import ModelSource, load_config_for_eval
from llavast.evaluate.prompts import Prompt, build_prompts
from llavast.evaluate.score import Scored, score

log = logging.getLogger(__name__)


@dataclass
class TaskRun:
    """One benchmark's scored results."""

    benchmark: BenchmarkSection
    file: BenchmarkFile
    prompts: list[Prompt]
    scored: Scored
    statuses: dict[str, int] = field(default_factory=dict)  # answer status -> samples


@dataclass
class EvalRun:
    """What an eval job produced: one TaskRun per benchmark, where the files are, and how long it took."""

    source: ModelSource
    tasks: list[TaskRun]
    out: str
    seconds: float
    bins: CoordinateBins
    num_frames: int  # N: frames the model samples per video
    image_size: int  # S: the side of a frame as the model sees it

    def summary(self) -> dict[str, dict[str, float | int]]:
        """The tables as `<benchmark>/<task>` -> metrics (summary.json)."""
        return {f"{t.benchmark.label}/{t.benchmark.task}": t.scored.summary for t in self.tasks}


# ---- the driver -----------------------------------------------------------------------------------------

def prompt_rows(prompts: list[Prompt], benchmark: BenchmarkSection) -> list[dict[str, Any]]:
    """Manifest-shaped rows (`data/manifest.SCHEMA`) of prompts, so the training data path decodes and
    tokenises them: uid `<benchmark>/<task>/<id>`, media under the benchmark's media root, ST-Align's split
    window, the human turn and its coordinate values."""
    root = benchmark.media_folder
    rows = []
    for i, prompt in enumerate(prompts):
        sample = prompt.sample
        window = sample.record.split if isinstance(sample, STSample) else None
        rows.append({
            "uid": f"{benchmark.label}/{benchmark.task}/{prompt.id}", "id": prompt.id, "source": benchmark.label,
            "task": benchmark.task, "source_file": benchmark.annotations, "record_index": i,
            "media_kind": int(prompt.media_kind), "media_uri": storage.join(root, prompt.media),
            "split_start": window[0] if window else -1, "split_end": window[1] if window else -1,
            "conversations": json.dumps(prompt.conversations, ensure_ascii=False), "variables": prompt.variables,
        })
    return rows


def read_benchmarks(job: EvalJobConfig) -> list[tuple[BenchmarkSection, BenchmarkFile, list[Prompt]]]:
    """Every benchmark of the job read (quarantine applied), cut to `limit`, with its prompts."""
    read = []
    for benchmark in job.benchmarks:
        file = read_benchmark(benchmark.task, benchmark.annotations, job.storage)
        if file.quarantined:
            log.warning("%s: %d record(s) quarantined: %s", benchmark.annotations, len(file.quarantined),
                        file.quarantined_by_reason)
        samples = file.samples[:job.generation.limit] if job.generation.limit else file.samples
        if not samples:
            raise DataError(f"{benchmark.annotations}: no usable {benchmark.task} sample "
                            f"(quarantined: {file.quarantined_by_reason or 'none'})")
        read.append((benchmark, file, build_prompts(samples, job.generation.seed)))
    return read


def run_eval(job: EvalJobConfig, source: ModelSource, secrets: SecretEnv | None = None,
             on_progress: Callable[[int, int], None] | None = None) -> EvalRun:
    """Answer and score every benchmark of `job` with the model of `source` on the current Ray cluster; write
    the results under `job.out`. `on_progress(done, total)` is called as answers arrive."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="llavast-eval-driver-") as tmp:
        config, tokenizer = load_config_for_eval(source, Path(tmp))
    bins = CoordinateBins(config.m_t, config.m_h, config.m_w)
    read = read_benchmarks(job)
    rows = [row for benchmark, _, prompts in read for row in prompt_rows(prompts, benchmark)]
    total = len(rows)
    compute = job.compute
    resources: dict[str, Any] = {"num_cpus": compute.cpus_per_actor}
    if compute.gpus_per_actor:
        resources["num_gpus"] = compute.gpus_per_actor
    if compute.accelerator_type:
        resources["accelerator_type"] = compute.accelerator_type
    dataset = build_dataset(pa.Table.from_pylist(rows, schema=SCHEMA), job.decode, job.storage, config, tokenizer,
                            secrets).map_batches(
        GenerateAnswers, batch_size=job.generation.batch_size, batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=compute.num_actors), udf_modifying_row_count=False,
        fn_constructor_kwargs={"source": source, "max_new_tokens": job.generation.max_new_tokens,
                               "use_gpu": compute.gpus_per_actor > 0, "secrets": secrets}, **resources)
    answers: dict[str, dict[str, Any]] = {}
    if on_progress:
        on_progress(0, total)
    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        for row in batch.to_pylist():
            answers[row["uid"]] = row
        if on_progress:
            on_progress(len(answers), total)
    missing = total - len(answers)
    if missing:
        raise DataError(f"{missing} of {total} prompts came back without an answer row (a Ray Data error?)")
    tasks = []
    for benchmark, file, prompts in read:
        prefix = f"{benchmark.label}/{benchmark.task}/"
        mine = {p.id: answers[prefix + p.id] for p in prompts}
        scored = score_answers(benchmark, prompts, mine, bins, config.num_frames)
        for row, prompt in zip(scored.rows, prompts, strict=True):
            row["prompt"] = prompt.text
            row["new_tokens"] = mine[prompt.id]["new_tokens"]
            row["detail"] = mine[prompt.id]["detail"]
        tasks.append(TaskRun(benchmark, file, prompts, scored, dict(Counter(a["status"] for a in mine.values()))))
    run = EvalRun(source, tasks, job.out, time.perf_counter() - started, bins, config.num_frames, config.image_size)
    write_results(run, job)
    return run


def score_answers(benchmark: BenchmarkSection, prompts: list[Prompt], answers: dict[str, dict[str, Any]],
                  bins: CoordinateBins, num_frames: int) -> Scored:
    """Score one benchmark's answer rows (prompt id -> ANSWER_SCHEMA row); an undecoded sample is a miss."""
    outputs = {i: a["output"] for i, a in answers.items() if a["status"] == OK}
    failed = {i: a["status"] for i, a in answers.items() if a["status"] != OK}
    return score(benchmark.task, [p.sample for p in prompts], outputs, bins, num_frames, failed)


def write_results(run: EvalRun, job: EvalJobConfig) -> None:
    """results.parquet per task, summary.json (the tables), run.json (what was evaluated, counts, timing)."""
    for task in run.tasks:
        storage.write_parquet(results_uri(run.out, task), task.scored.rows, job.storage)
    storage.write_text(storage.join(run.out, "summary.json"), json.dumps(run.summary(), indent=2), job.storage)
    info = {"model": run.source.name, "version": run.source.version, "artifact": run.source.artifact,
            "base": run.source.base, "coordinate_bins": [run.bins.temporal, run.bins.height, run.bins.width],
            "num_frames": run.num_frames, "seconds": round(run.seconds, 1),
            "max_new_tokens": job.generation.max_new_tokens, "limit": job.generation.limit,
            "benchmarks": {f"{t.benchmark.label}/{t.benchmark.task}": {
                "annotations": t.benchmark.annotations, "samples": len(t.prompts),
                "quarantined": t.file.quarantined_by_reason, "answers": t.statuses} for t in run.tasks}}
    storage.write_text(storage.join(run.out, "run.json"), json.dumps(info, indent=2), job.storage)


def results_uri(out: str, task: TaskRun) -> str:
    return storage.join(out, task.benchmark.label, task.benchmark.task, "results.parquet")


