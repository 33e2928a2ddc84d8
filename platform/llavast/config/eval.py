"""The eval job (`kind: eval`): score one model on the paper's benchmarks, with the release's prompts.

    kind: eval
    name: demo-eval
    model: {version: models:/llava-st-demo@stage3}        # or node:stage3 inside a pipeline
    benchmarks:
      - {task: stvg, annotations: st-align/benchmark/stvg.json, media_root: st-align}
    out: eval/stage3                                      # results.parquet per task, summary.json
    tracking: {uri: http://127.0.0.1:5055, experiment: llava-st-demo}

`llavast eval EVAL.yaml` (or `llavast run EVAL.yaml`) runs it; in a pipeline, an `eval` node evaluates a stage
node's registered output and is skipped by fingerprint like any node. docs/evaluation.md has the details.
"""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from llavast import storage
from llavast.config.base import Section
from llavast.config.common import JobCommon, ModelChoice, TrackingBase, check_model_ref
from llavast.config.data import DecodeSection
from llavast.storage import StorageOptions

Task = Literal["stvg", "svg", "elc", "tvg", "rec"]
DEFAULT_BENCHMARK_NAMES = {"stvg": "st-align", "svg": "st-align", "elc": "st-align", "tvg": "charades-sta",
                           "rec": "refcoco"}


class EvalModelSection(ModelChoice):
    """The model to evaluate.

    `version`: a registered version (`models:/<name>/<version>`, `models:/<name>@<alias>`), a stage artifact's
    URI, or `node:<stage node>` in a pipeline; null evaluates `base` alone (a converted release checkpoint, or
    an untrained baseline). `base`: the checkpoint the version was trained on; default: the one its artifact
    records. `overrides` set model config fields, as in a stage job.
    """

    version: str | None = None
    base: str | None = None

    _version_is_a_ref = field_validator("version")(check_model_ref)

    @model_validator(mode="after")
    def _something_to_load(self) -> EvalModelSection:
        if self.version is None and self.base is None:
            raise ValueError("give model.version (a registered version or artifact) or model.base (a checkpoint)")
        return self


class BenchmarkSection(Section):
    """One benchmark file and the task it is scored as.

    `annotations`: the file (ST-Align benchmark JSON for stvg/svg/elc, Charades-STA JSON for tvg, RefCOCO JSON
    for rec). `media_root`: the folder its video/image paths are relative to (default: the file's folder).
    `name`: how metrics and version tags call it (default: st-align, charades-sta or refcoco).
    """

    task: Task
    annotations: str
    media_root: str | None = None
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")

    @property
    def label(self) -> str:
        return self.name or DEFAULT_BENCHMARK_NAMES[self.task]

    @property
    def media_folder(self) -> str:
        """The folder the file's media paths are relative to."""
        return self.media_root or storage.dirname(self.annotations)


class GenerationSection(Section):
    """Greedy decoding, as the release: at most `max_new_tokens` new tokens (the release: 1024), stopping at
    `<|im_end|>`. `batch_size`: prompts decoded together (left-padded). `seed` fixes the prompt phrase the
    release draws at random. `limit`: the first N samples of each benchmark only (quick runs)."""

    max_new_tokens: PositiveInt = 1024
    batch_size: PositiveInt = 1
    seed: int = 0
    limit: PositiveInt | None = None


class EvalComputeSection(Section):
    """The inference actors: each holds one model. One per GPU on a cluster (`gpus_per_actor: 1`)."""

    num_actors: PositiveInt = 1
    cpus_per_actor: PositiveFloat = 1.0
    gpus_per_actor: NonNegativeFloat = 0.0
    accelerator_type: str | None = None


class EvalTrackingSection(TrackingBase):
    """The MLflow run of the evaluation, and what else it writes.

    The run (in `experiment`, nested under `parent_run_id`) holds the metrics as `<benchmark>/<task>/<key>`,
    the results files and `pictures` pictures per task. With `tag_version`, the evaluated registered version
    gets a tag `eval.<benchmark>.<task>.<key>` per metric, so versions compare side by side in the registry.
    """

    pictures: NonNegativeInt = 4
    tag_version: bool = True


class EvalJobConfig(JobCommon):
    """Evaluate `model` on `benchmarks`; write results under `out`; log to `tracking` when given."""

    kind: Literal["eval"] = "eval"
    model: EvalModelSection
    benchmarks: tuple[BenchmarkSection, ...] = Field(min_length=1)
    out: str
    storage: StorageOptions = Field(default_factory=StorageOptions)
    generation: GenerationSection = Field(default_factory=GenerationSection)
    decode: DecodeSection = Field(default_factory=DecodeSection)
    compute: EvalComputeSection = Field(default_factory=EvalComputeSection)
    tracking: EvalTrackingSection | None = None

    @model_validator(mode="after")
    def _benchmarks_distinct(self) -> EvalJobConfig:
        seen = [(b.label, b.task) for b in self.benchmarks]
        twice = sorted({f"{label}/{task}" for label, task in seen if seen.count((label, task)) > 1})
        if twice:
            raise ValueError(f"benchmarks: {', '.join(twice)} appear(s) twice; give each a distinct `name`")
        return self
