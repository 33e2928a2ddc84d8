"""Fields every job kind shares, modelled on Ray Jobs / Anyscale job conventions.

`working_dir`, `env_vars` and `pip`/`requirements` become the Ray runtime_env when a job is submitted
(`llavast submit`); `name` names runs, storage paths and registry entries.
"""

from __future__ import annotations

import re

from pydantic import Field, PositiveFloat, field_validator, model_validator

from llavast.config.base import Section

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class TrackingBase(Section):
    """The MLflow fields every job kind's `tracking` has: the server, the experiment, the run to nest under
    (a pipeline's or a sweep's, set by the platform), and how long one MLflow call may take."""

    uri: str
    experiment: str
    parent_run_id: str | None = None
    timeout_s: PositiveFloat = 10.0


class JobCommon(Section):
    """name, description and the runtime environment of a job."""

    name: str
    description: str | None = None
    working_dir: str | None = None
    env_vars: dict[str, str] = Field(default_factory=dict)
    pip: tuple[str, ...] | None = None
    requirements: str | None = None

    @field_validator("name")
    @classmethod
    def _name_is_a_slug(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must be 1-100 letters, digits, '_', '.', '-' (it names runs and storage paths)")
        return value

    @field_validator("env_vars")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [k for k in value if not _ENV_NAME.match(k)]
        if bad:
            raise ValueError(f"not valid environment variable names: {bad}")
        return value

    @model_validator(mode="after")
    def _one_dependency_list(self) -> JobCommon:
        if self.pip is not None and self.requirements is not None:
            raise ValueError("give either pip (a list of packages) or requirements (a requirements.txt path), not both")
        return self
