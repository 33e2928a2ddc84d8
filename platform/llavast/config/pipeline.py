"""The pipeline kind: named nodes, each a job (synth, index, stage, eval, sweep), with dependencies.

    kind: pipeline
    name: demo
    defaults: {stage: {tracking: ..., storage: ...}}   # merged under every node of that kind
    nodes:
      - {name: stage1, job: stage1.yaml, depends_on: [index1]}
      - {name: stage2, job: stage2.yaml, depends_on: [stage1], set: {model.init_from: "node:stage1"}}

A node's job is a YAML path (relative to the pipeline file) or an inline `spec`. `init_from: node:<name>`
names another node's registered output; the runner substitutes the concrete version when it runs.
`tuned_by: <sweep node>` runs a stage node with that sweep's best parameters (model overrides, lr, LoRA rank):

      - {name: sweep, job: sweep.yaml}
      - {name: stage1, job: stage1.yaml, depends_on: [sweep], tuned_by: sweep}
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PositiveInt, field_validator, model_validator

from llavast.config.base import Section
from llavast.config.common import JobCommon, TrackingBase

NODE_REF = "node:"


class PipelineNode(Section):
    name: str
    job: str | None = None
    spec: dict[str, Any] | None = None
    depends_on: tuple[str, ...] = ()
    set: dict[str, Any] = Field(default_factory=dict)
    tuned_by: str | None = None  # a sweep node: this stage node runs with its best trial's parameters

    @model_validator(mode="after")
    def _job_or_spec(self) -> PipelineNode:
        if (self.job is None) == (self.spec is None):
            raise ValueError("give exactly one of job (a job YAML path) or spec (an inline job)")
        return self


class PipelineTracking(TrackingBase):
    """Where the pipeline's parent run lives; each stage node's run is nested under it."""


class PipelineConfig(JobCommon):
    """A DAG of jobs; `tracking` (optional) holds the pipeline's MLflow parent run."""

    kind: Literal["pipeline"] = "pipeline"
    nodes: tuple[PipelineNode, ...]
    defaults: dict[str, dict[str, Any]] = Field(default_factory=dict)
    max_parallel: PositiveInt = 2
    tracking: PipelineTracking | None = None

    @field_validator("nodes")
    @classmethod
    def _not_empty(cls, value: tuple[PipelineNode, ...]) -> tuple[PipelineNode, ...]:
        if not value:
            raise ValueError("a pipeline needs at least one node")
        return value
