"""The stage job: one LLaVA-ST training stage (`kind: stage`), as written in a job YAML.

Defaults follow the paper; where the authors' release did something the paper does not state, the default
and the option that restores the release are in docs/training.md ("Where the defaults differ from the
authors' release"). What a stage trains defaults to the model's stage policy and can be overridden per
stage here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, field_validator, model_validator

from llavast.config.base import Section
from llavast.config.common import JobCommon, ModelChoice, TrackingBase, check_model_ref
from llavast.config.data import DataConfig
from llavast.storage import StorageOptions


class ModelSection(ModelChoice):
    """Where the weights come from.

    `base` is the pretrained checkpoint (a llava-hf LLaVA-OneVision directory, or a LLaVA-ST one) and its
    tokenizer; `init_from` is the stage artifact this stage continues from: `models:/<name>@<alias>`,
    `models:/<name>/<version>` or the artifact's URI. Stage 1 starts from `base` alone.
    """

    base: str
    init_from: str | None = None

    _init_from_is_a_ref = field_validator("init_from")(check_model_ref)


class CallbackSpec(Section):
    """A training callback: `path` is `module:Class` (a subclass of llavast.train.callbacks.Callback), built on
    every worker with `args` as keyword arguments."""

    path: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    args: dict[str, Any] = Field(default_factory=dict)


class TrainSection(Section):
    """The stage, its trainable groups, the optimiser, batch sizes, schedule and checkpointing.

    `trainable`, `lape` and `merge_parent_lora` default (None) to the model's policy for `stage`:
    stage 1 STP only with LAPE off; stages 2/3 LoRA + STP + LAPE; stage 3 merges the parent's LoRA.
    `lr` applies to every group unless `group_lr` names it (the release: 2e-4 LoRA, 2e-5 STP/LAPE).
    One optimiser step consumes micro_batch_size * grad_accum_steps * num_workers samples.
    The lr warms up linearly over the first `warmup_ratio` of the steps, stays at `lr`, and decays to 0 on a
    cosine over the last `decay_ratio` of them (1.0, the default: all the steps after the warmup; 0.25: a
    constant lr for most of the stage, which is what crosses a plateau, then a decay).
    `callbacks` run your own code on every worker at the start, after each step and at the end (see
    `llavast/train/callbacks.py`).
    """

    stage: Literal[1, 2, 3]
    trainable: tuple[str, ...] | None = None
    lape: bool | None = None
    merge_parent_lora: bool | None = None
    lr: PositiveFloat = 1e-4
    group_lr: dict[str, PositiveFloat] = Field(default_factory=dict)
    micro_batch_size: PositiveInt = 1
    grad_accum_steps: PositiveInt = 1
    max_steps: PositiveInt | None = None
    epochs: PositiveFloat = 1.0
    warmup_ratio: float = Field(default=0.03, ge=0.0, lt=1.0)
    decay_ratio: float = Field(default=1.0, gt=0.0, le=1.0)
    weight_decay: NonNegativeFloat = 0.0
    max_grad_norm: PositiveFloat | None = 1.0
    gradient_checkpointing: bool = True
    checkpoint_every: PositiveInt = 500
    keep_checkpoints: PositiveInt = 2
    async_checkpoint_upload: bool = True
    log_every: PositiveInt = 1
    seed: int = 0
    callbacks: tuple[CallbackSpec, ...] = ()


class DeepSpeedSection(Section):
    """ZeRO stage and memory options; `precision: auto` is bf16 on GPU and fp32 on CPU.

    `overrides` is deep-merged into the generated DeepSpeed config last (an escape hatch for options this
    schema does not name).
    """

    zero_stage: Literal[0, 1, 2, 3] = 2
    offload_optimizer: bool = False
    offload_params: bool = False
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    param_persistence_threshold: int | None = Field(default=None, ge=0)
    overrides: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _offload_params_needs_zero3(self) -> DeepSpeedSection:
        if self.offload_params and self.zero_stage != 3:
            raise ValueError("offload_params needs zero_stage: 3 (only ZeRO-3 partitions parameters)")
        return self


class LoraSection(Section):
    """LoRA on every Linear of the LLM (the release: r 128, alpha 256, dropout 0.05)."""

    r: PositiveInt = 128
    alpha: PositiveFloat = 256.0
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)


class ComputeSection(Section):
    """Ray Train workers; `gpus_per_worker: 0` trains on CPU (gloo), otherwise on GPU (NCCL).

    `placement_strategy` is the strategy of the workers' placement group: PACK (default) fills nodes
    first and may spill over, SPREAD prefers distinct nodes, STRICT_SPREAD puts every worker on its own
    node (fails to schedule with fewer nodes), STRICT_PACK puts all workers on one node.
    """

    num_workers: PositiveInt = 1
    gpus_per_worker: NonNegativeFloat = 0.0
    cpus_per_worker: PositiveFloat = 1.0
    accelerator_type: str | None = None
    resources_per_worker: dict[str, NonNegativeFloat] = Field(default_factory=dict)
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_SPREAD", "STRICT_PACK"] = "PACK"
    max_failures: int = Field(default=2, ge=-1)

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0


class TrackingSection(TrackingBase):
    """The MLflow server, the experiment holding one run per stage, and the registered model.

    `system_metrics_interval_s`: every node that trains samples MLflow's system metrics (CPU, memory, disk,
    network; GPU with nvidia-ml-py) this often into the stage's run as `system/node<k>/...`; 0 turns them off.
    `progress_every_s`: rank 0 logs a progress line this often (step / total, loss, samples/s, data wait, ETA;
    the driver's terminal or the Ray job's log shows it); 0 turns it off.
    Like `parent_run_id`, neither is part of the config fingerprint: changing them keeps the stage's run.
    """

    registered_model: str
    system_metrics_interval_s: NonNegativeFloat = 10.0
    progress_every_s: NonNegativeFloat = 30.0


class StorageSection(StorageOptions):
    """Object storage for Ray Train runs, resume checkpoints and stage artifacts (s3://, file://, path): the
    `root`, and how to reach it (`StorageOptions`: endpoint and region, the same fields every job kind has)."""

    root: str

    @property
    def options(self) -> StorageOptions:
        return StorageOptions(endpoint_url=self.endpoint_url, region=self.region)


class StageJobConfig(JobCommon):
    """One training stage: `llavast run STAGE.yaml` runs it as a Ray Train job."""

    kind: Literal["stage"] = "stage"
    model: ModelSection
    data: DataConfig
    train: TrainSection
    deepspeed: DeepSpeedSection = Field(default_factory=DeepSpeedSection)
    lora: LoraSection = Field(default_factory=LoraSection)
    compute: ComputeSection = Field(default_factory=ComputeSection)
    tracking: TrackingSection
    storage: StorageSection

    @model_validator(mode="after")
    def _stage_needs_parent(self) -> StageJobConfig:
        if self.train.stage > 1 and self.model.init_from is None:
            raise ValueError(f"stage {self.train.stage} continues a previous stage: set model.init_from "
                             f"(e.g. models:/{self.tracking.registered_model}@stage{self.train.stage - 1})")
        return self

    @property
    def alias(self) -> str:
        """The registry alias this stage's artifact receives."""
        return f"stage{self.train.stage}"
