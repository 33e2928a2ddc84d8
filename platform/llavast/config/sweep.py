"""The sweep job (`kind: sweep`): Ray Tune over the packing and vocabulary sizes, scored by grounding quality.

    kind: sweep
    name: demo-sweep
    base:                                   # the stage jobs every trial runs, in order, from the same base
      - {job: stage1.yaml, set: {train.max_steps: 6}}
    space:
      m_t: {values: [20, 50]}
      k1: {values: [3, 6]}
      lr: {loguniform: [1.0e-4, 1.0e-3]}
    search: {algorithm: random, num_samples: 4}
    scheduler: {kind: asha}
    objective: {metric: auto}               # STVG: mean of m_tIoU and m_sIoU; TVG: mIoU; REC: Acc@0.5
    validation: {task: stvg, annotations: st-align/benchmark/stvg.json, limit: 8, every: 2}
    tracking: {uri: http://127.0.0.1:5055, experiment: llava-st-demo-sweep}
    storage: {root: storage}

`llavast run SWEEP.yaml` runs it (again: it resumes); `llavast plan SWEEP.yaml` shows the valid space and how
many trials run at once. docs/tuning.md has the details.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, field_validator, model_validator

from llavast.config.base import Section
from llavast.config.common import JobCommon, TrackingBase
from llavast.config.stage import StorageSection

MODEL_PARAMETERS = ("m_t", "m_h", "m_w", "k1", "k2", "sigma")  # model.overrides
PARAMETERS = (*MODEL_PARAMETERS, "lr", "lora_r")  # lr -> train.lr, lora_r -> lora.r
CONTINUOUS = ("lr",)  # the parameters that may take a range instead of values
VALIDATION_TASKS = ("stvg", "svg", "tvg", "rec")
AUTO_OBJECTIVE = {"stvg": "mean_tIoU_sIoU", "svg": "m_sIoU", "tvg": "mIoU", "rec": "Acc@0.5"}


class BaseStage(Section):
    """One stage job of the trial: a stage YAML (relative to the sweep file) and fields set on it."""

    job: str
    set: dict[str, Any] = Field(default_factory=dict)


class ParameterSpec(Section):
    """A parameter's range: `values` (a list: grid points or choices), or, for `lr` only, `uniform` or
    `loguniform` as [low, high]."""

    values: tuple[float, ...] | None = Field(default=None, min_length=1)
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ParameterSpec:
        given = [k for k in ("values", "uniform", "loguniform") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of values, uniform or loguniform")
        bounds = self.uniform or self.loguniform
        if bounds is not None and not (bounds[0] < bounds[1] and (self.uniform or bounds[0] > 0)):
            raise ValueError("a range needs low < high (and low > 0 for loguniform)")
        return self

    @property
    def kind(self) -> str:
        return "values" if self.values is not None else ("uniform" if self.uniform is not None else "loguniform")

    @property
    def low(self) -> float:
        return (self.uniform or self.loguniform or (0.0, 0.0))[0]

    @property
    def high(self) -> float:
        return (self.uniform or self.loguniform or (0.0, 0.0))[1]


class SearchSection(Section):
    """`grid`: every valid point once (each `values` list; no ranges). `random`: `num_samples` points drawn
    from the valid ones (ranges sampled). `optuna`: `num_samples` trials chosen by Optuna's TPE sampler among
    the valid points (the constraints are applied before it proposes anything)."""

    algorithm: Literal["grid", "random", "optuna"] = "random"
    num_samples: PositiveInt | None = None
    seed: int = 0


class SchedulerSection(Section):
    """`asha` (default): trials whose objective falls behind at a rung are stopped early; rungs at
    `grace_period` steps (default: validation.every) times powers of `reduction_factor`. `fifo`: none stopped."""

    kind: Literal["asha", "fifo"] = "asha"
    grace_period: PositiveInt | None = None
    reduction_factor: float = Field(default=2.0, gt=1.0)


class ObjectiveSection(Section):
    """What the sweep maximises (`mode: max`) or minimises. `auto`: STVG the mean of m_tIoU and m_sIoU, SVG
    m_sIoU, TVG mIoU, REC Acc@0.5, on the validation subset. Any other key the validation reports can be
    named: a metric of the task's table (m_vIoU, R@0.5, ...), or `loss` (the training loss at that step; it
    does not compare across vocabulary sizes)."""

    metric: str = "auto"
    mode: Literal["max", "min"] = "max"


class ValidationSection(Section):
    """The held-out subset each trial answers every `every` steps (and at its last step) with the eval
    runner's generation and scorer: the first `limit` samples of `annotations`, scored as `task`."""

    task: Literal["stvg", "svg", "tvg", "rec"]
    annotations: str
    media_root: str | None = None
    limit: PositiveInt = 16
    every: PositiveInt = 50
    max_new_tokens: PositiveInt = 256
    batch_size: PositiveInt = 4


class ConstraintsSection(Section):
    """Budgets a point must meet (besides W1 % k1, k1 % k2, N % sigma): visual tokens per video, and the
    estimated activation memory of one training worker (GiB; docs/tuning.md gives the formula)."""

    max_visual_tokens: PositiveInt | None = None
    max_activation_gib: PositiveFloat | None = None


class SweepComputeSection(Section):
    """`max_concurrent_trials`: default, what the cluster's resources allow (each trial: its largest stage's
    workers and decoders, plus its driver's `driver_cpus`)."""

    max_concurrent_trials: PositiveInt | None = None
    driver_cpus: NonNegativeFloat = 0.25
    max_failures: int = Field(default=0, ge=0)


class SweepTracking(TrackingBase):
    """The sweep's parent MLflow run (nested under `parent_run_id`: a pipeline's run), with one child run per
    trial (each stage's run nested under it)."""


class SweepJobConfig(JobCommon):
    """A Ray Tune sweep over `space`; every trial runs `base` from the same base checkpoint."""

    kind: Literal["sweep"] = "sweep"
    base: tuple[BaseStage, ...] = Field(min_length=1)
    space: dict[str, ParameterSpec] = Field(min_length=1)
    search: SearchSection = Field(default_factory=SearchSection)
    scheduler: SchedulerSection = Field(default_factory=SchedulerSection)
    objective: ObjectiveSection = Field(default_factory=ObjectiveSection)
    validation: ValidationSection
    constraints: ConstraintsSection = Field(default_factory=ConstraintsSection)
    compute: SweepComputeSection = Field(default_factory=SweepComputeSection)
    tracking: SweepTracking
    storage: StorageSection

    @field_validator("space")
    @classmethod
    def _known_parameters(cls, value: dict[str, ParameterSpec]) -> dict[str, ParameterSpec]:
        for name, spec in value.items():
            if name not in PARAMETERS:
                raise ValueError(f"unknown parameter {name!r}; a sweep tunes {', '.join(PARAMETERS)}")
            if spec.values is None and name not in CONTINUOUS:
                raise ValueError(f"{name}: give a list of values (only {', '.join(CONTINUOUS)} takes a range)")
            if spec.values is not None and name != "lr" and any(v != int(v) or v <= 0 for v in spec.values):
                raise ValueError(f"{name}: values must be positive integers, got {list(spec.values)}")
        return value

    @model_validator(mode="after")
    def _search_fits_space(self) -> SweepJobConfig:
        ranged = [n for n, s in self.space.items() if s.values is None]
        if self.search.algorithm == "grid":
            if ranged:
                raise ValueError(f"search.algorithm grid needs values for every parameter; {ranged} are ranges")
            if self.search.num_samples not in (None, 1):
                raise ValueError("search.algorithm grid runs every valid point once: leave out num_samples")
        elif self.search.num_samples is None:
            raise ValueError(f"search.algorithm {self.search.algorithm} needs num_samples (how many trials)")
        return self

    @property
    def objective_metric(self) -> str:
        """The reported key the sweep optimises."""
        return AUTO_OBJECTIVE[self.validation.task] if self.objective.metric == "auto" else self.objective.metric

    @property
    def model_parameters(self) -> tuple[str, ...]:
        return tuple(n for n in MODEL_PARAMETERS if n in self.space)
