"""Batch inference on Ray Data: benchmark prompts -> the training data path -> greedy answers -> scores.

    driver: read each benchmark (`benchmarks.py`), build its prompts (`prompts.py`), one manifest-shaped row per
            prompt (`prompt_rows`)
    Ray Data: build_dataset (the training decode + tokenise actors, `data/pipeline.py`)
              -> map_batches(GenerateAnswers): an actor pool, one model per actor (per GPU on a cluster),
                 assistant header appended, greedy decoding up to max_new_tokens, answers decoded with
                 special tokens kept
    driver: answers joined to their samples by id, parsed and scored (`score.py`), results written:
            <out>/<benchmark>/<task>/results.parquet (one row per sample), <out>/summary.json (one table per
            task, the keys of `llavast eval score`), <out>/run.json (model, counts, timing)

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
import pyarrow.compute as pc
import ray
import torch

import model_zoo
from llavast import storage
from llavast.config.eval import BenchmarkSection, EvalJobConfig
from llavast.config.secrets import SecretEnv
from llavast.data.collate import LlavaSTCollate
from llavast.data.manifest import SCHEMA
from llavast.data.pipeline import OK, build_dataset
from llavast.errors import DataError
from llavast.evaluate.answers import END_OF_TURN, CoordinateBins
from llavast.evaluate.benchmarks import BenchmarkFile, STSample, TVGSample, read_benchmark
from llavast.evaluate.prompts import Prompt, build_prompts
from llavast.evaluate.score import Scored, score
from llavast.train.artifact import MANIFEST, apply_artifact, read_artifact
from llavast.train.files import download_dir
from llavast.train.lora import has_lora, merge_lora

log = logging.getLogger(__name__)

ASSISTANT_HEADER = "<|im_start|>assistant\n"
ANSWER_SCHEMA = pa.schema([
    pa.field("uid", pa.string()),
    pa.field("status", pa.string()),  # "ok", or why the sample got no answer (its decode status)
    pa.field("detail", pa.string()),
    pa.field("output", pa.string()),
    pa.field("new_tokens", pa.int32()),
])
# Config fields a stage sets when it runs (not part of the artifact's shape check) that inference restores.
RUN_TIME_FIELDS = ("lape_enabled",)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


@dataclass(frozen=True)
class ModelSource:
    """Where the inference actors load the model from, resolved on the driver."""

    name: str  # the model_zoo name
    base: str  # the checkpoint URI (weights, config, tokenizer)
    overrides: dict[str, Any]
    artifact: str | None = None  # a stage artifact's URI (object storage or MLflow's artifact store)
    version: str | None = None  # "<registered model>/<version>" when the artifact is a registered version
    tracking_uri: str | None = None  # where an artifact in MLflow's store is downloaded from
    options: Any = None  # StorageOptions of base and artifact


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


# ---- the model ------------------------------------------------------------------------------------------

def _fetch(uri: str, source: ModelSource, cache: Path, weights: bool) -> Path:
    """A local copy of a checkpoint or artifact folder (all of it, or without weight files)."""
    if source.tracking_uri and uri.startswith(("mlflow-artifacts:", "runs:")):
        from llavast.tracking import Tracker, download_artifact
        from llavast.tracking.registry import ResolvedInit

        return download_artifact(ResolvedInit(uri=uri), Tracker(source.tracking_uri), cache / "artifact")
    return download_dir(uri, source.options, cache, skip_suffixes=() if weights else WEIGHT_SUFFIXES)


def load_model_for_eval(source: ModelSource, cache: Path, device: torch.device) -> tuple[torch.nn.Module, Any]:
    """The model a version holds, ready to answer: base -> its artifact (merged LoRAs, carried weights, the
    active LoRA, merged in for speed) -> the stage's run-time settings (LAPE on or off) -> eval mode."""
    contract = model_zoo.spec(source.name)
    artifact = read_artifact(_fetch(source.artifact, source, cache, True)) if source.artifact else None
    overrides = dict(source.overrides)
    if artifact is not None:
        overrides.update({k: artifact.config[k] for k in RUN_TIME_FIELDS if k in artifact.config})
    base = _fetch(source.base, source, cache, True)
    torch.manual_seed(0)  # what a base checkpoint lacks (a new STP, LAPE) starts the same in every actor and run
    model = contract.build(str(base), **overrides) if overrides else contract.build(str(base))
    tokenizer = contract.load_tokenizer(str(base), model.config)
    if artifact is not None:
        apply_artifact(model, artifact, contract)
        if has_lora(model):
            merge_lora(model)
    model.requires_grad_(False)
    return model.to(device).eval(), tokenizer


def load_config_for_eval(source: ModelSource, cache: Path) -> tuple[Any, Any]:
    """(model config, tokenizer) without any weights: what the driver needs to tokenise prompts."""
    contract = model_zoo.spec(source.name)
    base = _fetch(source.base, source, cache, False)
    config = contract.load_config(str(base), **source.overrides)
    return config, contract.load_tokenizer(str(base), config)


class AnswerGenerator:
    """Greedy answers of a model that is ready (eval mode): the inference actors' and a sweep trial's
    validation (`tune/validation.py`, on the model being trained)."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, max_new_tokens: int, device: torch.device) -> None:
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.collate = LlavaSTCollate(tokenizer.pad_token_id, model.config.image_size)
        self.header = tokenizer.encode(ASSISTANT_HEADER, add_special_tokens=False)
        self.eos = tokenizer.convert_tokens_to_ids(END_OF_TURN)
        self.max_new_tokens = max_new_tokens

    def answer(self, batch: pa.Table) -> pa.Table:
        """Decoded sample rows -> answer rows (ANSWER_SCHEMA); a sample that was not decoded gets no answer."""
        answered = batch.filter(pc.equal(batch["status"], OK))
        outputs: dict[str, tuple[str, int]] = {}
        if answered.num_rows:
            outputs = dict(zip(answered.column("uid").to_pylist(), self.generate(answered), strict=True))
        rows = []
        for row in batch.select(["uid", "status", "detail"]).to_pylist():
            output, new_tokens = outputs.get(row["uid"], ("", 0))
            rows.append({**row, "output": output, "new_tokens": new_tokens})
        return pa.Table.from_pylist(rows, schema=ANSWER_SCHEMA)

    @torch.no_grad()
    def generate(self, batch: pa.Table) -> list[tuple[str, int]]:
        """(answer text with special tokens, new tokens) per decoded sample, in order."""
        inputs = self.collate(batch).inputs
        lengths = inputs["attention_mask"].sum(1).tolist()
        prompts = [inputs["input_ids"][i, :n].tolist() + self.header for i, n in enumerate(lengths)]
        values = [inputs["coord_values"][i, :n].tolist() + [0.0] * len(self.header) for i, n in enumerate(lengths)]
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        coord_values = torch.zeros((len(prompts), width), dtype=torch.float64)
        for i, (ids, vals) in enumerate(zip(prompts, values, strict=True)):  # left-padded: answers start aligned
            input_ids[i, width - len(ids):] = torch.tensor(ids)
            attention[i, width - len(ids):] = 1
            coord_values[i, width - len(ids):] = torch.tensor(vals, dtype=torch.float64)
        pixels = inputs["pixel_values"].to(self.device, self.model.dtype)
        new = self.model.generate(input_ids.to(self.device), attention.to(self.device), coord_values.to(self.device),
                                  pixels, inputs["media_kind"].to(self.device), max_new_tokens=self.max_new_tokens,
                                  eos_token_id=self.eos).cpu()
        answers = []
        for row in new.tolist():
            if self.eos in row:
                row = row[:row.index(self.eos) + 1]
            answers.append((self.tokenizer.decode(row, skip_special_tokens=False), len(row)))
        return answers


class GenerateAnswers:
    """Ray Data actor: decoded sample rows -> answers. Holds one model (on its GPU, or the CPU)."""

    def __init__(self, source: ModelSource, max_new_tokens: int, use_gpu: bool,
                 secrets: SecretEnv | None = None) -> None:
        if secrets is not None:
            secrets.apply()
        device = torch.device("cuda") if use_gpu else torch.device("cpu")
        model, tokenizer = load_model_for_eval(source, Path(tempfile.mkdtemp(prefix="llavast-eval-")), device)
        self.generator = AnswerGenerator(model, tokenizer, max_new_tokens, device)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.generator.answer(batch)


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
    config, tokenizer = load_config_for_eval(source, Path(tempfile.mkdtemp(prefix="llavast-eval-driver-")))
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


def figures(run: EvalRun, job: EvalJobConfig, per_task: int) -> list[tuple[str, Any]]:
    """Pictures of the first `per_task` samples of each task, as (artifact path, matplotlib Figure): ST-Align
    tasks a strip of the frames the model saw (decoded again, the same way) with the true and predicted boxes
    and spans; TVG the spans on a timeline; REC the boxes on the image."""
    from llavast.data.media import decode_image, decode_video
    from llavast.evaluate import pictures
    from llavast.evaluate.answers import parse_answer
    from llavast.evaluate.benchmarks import RECSample
    from llavast.evaluate.metrics import sampled_frames, truth_frames, tube_frames

    size = run.image_size
    out = []
    for task in run.tasks:
        root = task.benchmark.media_folder
        for prompt, row in list(zip(task.prompts, task.scored.rows, strict=True))[:per_task]:
            sample, answer = prompt.sample, parse_answer(row["output"], run.bins)
            title = f"{task.benchmark.label}/{task.benchmark.task} {prompt.id}: {row['parse_status']}"
            if isinstance(sample, TVGSample):
                fig = pictures.tvg_figure(sample.span, answer.span, title)
            else:
                data = storage.read_bytes(storage.join(root, prompt.media), job.storage)
                if isinstance(sample, RECSample):
                    fig = pictures.rec_figure(decode_image(data, size)[0], sample.truth, answer.box, title)
                else:
                    truth = sample.truth
                    frames = decode_video(data, run.num_frames, size, truth.split, job.decode.frame_resize)
                    span = truth.span() if truth.start is not None and truth.end is not None else None
                    predicted = {"stvg": answer.span, "svg": None,
                                 "elc": (span[0], answer.end) if span and answer.end is not None else None}
                    fig = pictures.st_figure(
                        frames, sampled_frames(truth.split, run.num_frames), (truth.width, truth.height),
                        truth_frames(truth, run.num_frames), tube_frames(answer.tube, truth.split, truth.width,
                                                                         truth.height),
                        span if sample.task != "svg" else None, predicted[sample.task], title)
            out.append((f"pictures/{task.benchmark.label}/{task.benchmark.task}/{prompt.id}.png", fig))
    return out


def resolve_source(job: EvalJobConfig, tracker: Any | None) -> ModelSource:
    """What `job.model` names, resolved on the driver: a registered version (through `tracker`) or an artifact
    URI -> the artifact, and the base and overrides its manifest records (the job's own win); no version ->
    the base alone."""
    from llavast.tracking import download_artifact, is_registry_uri, resolve_init_from
    from llavast.tracking.registry import ResolvedInit

    model = job.model
    if model.version is None:
        return ModelSource(model.name, model.base, dict(model.overrides), options=job.storage)  # type: ignore[arg-type]
    if is_registry_uri(model.version) and tracker is None:
        raise DataError(f"model.version {model.version} is a registered version: give the job a tracking section "
                        "(uri, experiment) so it can be resolved")
    resolved = resolve_init_from(model.version, tracker)
    if resolved.needs_mlflow_download:
        local = download_artifact(ResolvedInit(uri=f"{resolved.uri.rstrip('/')}/{MANIFEST}"), tracker,
                                  Path(tempfile.mkdtemp(prefix="llavast-eval-manifest-")))
        manifest = json.loads(Path(local).read_text())
    else:
        manifest = json.loads(storage.read_text(storage.join(resolved.uri, MANIFEST), job.storage))
    base = model.base or manifest.get("base")
    if not base:
        raise DataError(f"the artifact {resolved.uri} records no base checkpoint: set model.base")
    version = f"{resolved.model_name}/{resolved.version}" if resolved.version else None
    return ModelSource(manifest.get("model", model.name), base, dict(model.overrides or manifest.get("overrides", {})),
                       artifact=resolved.uri, version=version, tracking_uri=tracker.uri if tracker else None,
                       options=job.storage)
