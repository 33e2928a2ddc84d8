"""Fields every job kind shares, modelled on Ray Jobs / Anyscale job conventions.

`working_dir`, `env_vars` and `pip`/`requirements` become the Ray runtime_env when a job is submitted
(`llavast submit`); `name` names runs, storage paths and registry entries.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, PositiveFloat, ValidationInfo, field_validator, model_validator

from llavast.config.base import Section
from llavast.config.secrets import ENV_REF

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_model_settings(name: str, overrides: dict[str, Any]) -> None:
    """`model.name` is a registered model and `overrides` are its settings (`model_zoo.settings`: declared
    types and ranges, the rules between them); a ValueError names each problem."""
    import model_zoo

    try:
        settings = model_zoo.settings(name)
    except KeyError as err:
        raise ValueError(str(err).strip('"')) from None
    problems = settings.check(overrides)
    if problems:
        raise ValueError("; ".join(problems))


INIT_REF_FORMS = ("models:/<name>@<alias>, models:/<name>/<version>, an artifact URI (s3://..., file://..., "
                  "mlflow-artifacts:/...), an absolute path, or node:<stage node> in a pipeline")


def check_model_ref(ref: str | None) -> str | None:
    """A stage artifact reference: a registry ref, a URI, an absolute path, or a pipeline node."""
    if ref is None or ref.startswith(("models:/", "node:", "/")) or re.match(r"^[a-z][a-z0-9+.-]*:/", ref):
        return ref
    raise ValueError(f"{ref!r} is not {INIT_REF_FORMS}")


class ModelChoice(Section):
    """Which model of the zoo (`name`), and the settings a job changes (`overrides`: the model's declared
    settings, such as `m_t`, `num_frames`, `k1` for LLaVA-ST: docs/training.md, "Model settings")."""

    name: str = "llava_st"
    overrides: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        check_model_settings(name, {})
        return name

    @field_validator("overrides")
    @classmethod
    def _settings_of_the_model(cls, overrides: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "name" in info.data:  # else the name's own error says what is wrong
            check_model_settings(info.data["name"], overrides)
        return overrides


TRACKING_SCHEMES = ("http", "https", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks", "databricks-uc")


def check_tracking_uri(uri: str | None) -> str | None:
    """An MLflow tracking URI with a scheme MLflow knows, a `${env:NAME}` reference, or None (from the
    environment: `config.loader.resolve_tracking_uri`)."""
    if uri is None or ENV_REF.match(uri):
        return uri
    scheme = uri.split(":", 1)[0].lower()
    if scheme in TRACKING_SCHEMES:
        return uri
    if "://" not in uri:
        raise ValueError(f"{uri!r} has no scheme: give http(s)://host:port for an MLflow server (or a local "
                         "store: file:, sqlite:, postgresql:, ...)")
    raise ValueError(f"{uri!r}: scheme {scheme} is not one MLflow tracks to ({', '.join(TRACKING_SCHEMES)})")


class TrackingBase(Section):
    """The MLflow fields every job kind's `tracking` has: the server, the experiment, the run to nest under
    (a pipeline's or a sweep's, set by the platform), and how long one MLflow call may take.

    `uri` left out: the MLFLOW_TRACKING_URI of the process that loads the job (the driver), as MLflow itself,
    HF Trainer and accelerate do; `${env:NAME}` reads another variable.
    """

    uri: str | None = None
    experiment: str
    parent_run_id: str | None = None
    timeout_s: PositiveFloat = 10.0

    _uri_has_a_scheme = field_validator("uri")(check_tracking_uri)


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
