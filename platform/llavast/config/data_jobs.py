"""Data node kinds: `synth` (synthetic ST-Align) and `index` (a stage mixture -> Parquet manifest).

They let a pipeline start from annotations rather than a prepared manifest: the demo pipeline runs
synth -> index -> stage 1 -> stage 2 -> stage 3 as one DAG.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeInt, PositiveInt, field_validator, model_validator

from llavast.config.base import Section
from llavast.config.common import JobCommon
from llavast.storage import StorageOptions


class SynthSection(Section):
    """Size of the synthetic dataset (see `llavast.data.synth.SynthSpec`).

    `num_frames` is the N frames per video of the model the data is for (4: the tiny model's): the STVG, ELC
    and SVG training tubes have boxes on exactly the frames that model samples, the frames the benchmark scores.
    `single_images` adds training images of one still shape of half-size 5 to `single_max_radius` px, asked as
    REC (source rec_single; mixtures/warmup.yaml, and a quarter in stages 2 and 3):
    the spatial warm-up a model trained from scratch needs before it can pick one of two small shapes.
    `single_videos` adds training videos of one moving shape of half-size 8 to 16 px, asked as SVG and STVG
    (sources svg_single, stvg_single; mixtures/warmup_video.yaml, and a part of stage 3): the video warm-up,
    which teaches the same model to box a shape on each of its frames.
    """

    videos: PositiveInt = 40
    images: NonNegativeInt = 20
    benchmark_videos: NonNegativeInt = 6
    benchmark_images: NonNegativeInt = 6
    width: PositiveInt = 96
    height: PositiveInt = 64
    min_frames: PositiveInt = 16
    max_frames: PositiveInt = 48
    fps: PositiveInt = 8
    seed: int = 0
    num_frames: int = 4
    single_images: NonNegativeInt = 0
    single_max_radius: int = Field(default=20, ge=5)
    single_videos: NonNegativeInt = 0

    @field_validator("num_frames")
    @classmethod
    def _at_least_one_frame(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be >= 1 (the frames per video of the model the data is for; the tiny model "
                             f"samples 4), got {value}")
        return value

    @model_validator(mode="after")
    def _single_shapes_fit(self) -> SynthSection:
        limit = min(self.width, self.height) / 2 - 1
        if self.single_max_radius >= limit:
            raise ValueError(f"single_max_radius {self.single_max_radius} does not fit {self.width} x {self.height} "
                             f"frames: a shape of that half-size needs it below {limit:g}")
        return self


class SynthJobConfig(JobCommon):
    """Write a synthetic ST-Align (videos, images, annotations, stage mixtures, benchmark) under `out`."""

    kind: Literal["synth"] = "synth"
    out: str
    storage: StorageOptions = Field(default_factory=StorageOptions)
    synth: SynthSection = Field(default_factory=SynthSection)


class IndexJobConfig(JobCommon):
    """Index a stage mixture YAML into a manifest folder (`llavast data index`)."""

    kind: Literal["index"] = "index"
    mixture: str
    out: str
    storage: StorageOptions = Field(default_factory=StorageOptions)
    seed: int = 0
    strict: bool = False
    check_media: bool = True
    validation: Literal["release", "strict"] = "release"
