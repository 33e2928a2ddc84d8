"""Job YAML -> config object, with errors that name the file and the key path; config fingerprints.

Kinds are looked up in `JOB_KINDS`, so the pipeline kind (a later issue) registers itself beside `stage`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from llavast.config.stage import StageJobConfig
from llavast.errors import ConfigError

JOB_KINDS: dict[str, type[BaseModel]] = {"stage": StageJobConfig}


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Parse a YAML mapping; syntax errors name the file, line and column."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the job YAML ({err.strerror})") from err
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise ConfigError(f"{path}: {where}invalid YAML: {getattr(err, 'problem', None) or err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a job YAML must be a mapping of sections, got {type(raw).__name__}")
    return raw


def validation_message(source: str, err: ValidationError) -> str:
    """One line per problem: `<file>: <key.path>: <what is wrong>`."""
    lines = []
    for problem in err.errors():
        key = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        lines.append(f"{source}: {key}: {problem['msg']}")
    return "\n".join(lines)


def parse_job(raw: dict[str, Any], source: str = "<job>") -> BaseModel:
    """Validate a job mapping into the model of its `kind` (default `stage`)."""
    kind = raw.get("kind", "stage")
    model = JOB_KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise ConfigError(f"{source}: kind: unknown job kind {kind!r}; expected one of {sorted(JOB_KINDS)}")
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(validation_message(source, err)) from err


def load_job(path: str | Path) -> BaseModel:
    return parse_job(read_yaml(path), source=str(path))


def load_stage_job(path: str | Path) -> StageJobConfig:
    """Load a `kind: stage` job YAML; any other kind is a ConfigError naming the file."""
    job = load_job(path)
    if not isinstance(job, StageJobConfig):
        raise ConfigError(f"{path}: kind: expected 'stage' for `llavast train`, got {job.kind!r}")  # type: ignore[attr-defined]
    return job


def canonical_json(config: BaseModel) -> str:
    """The resolved config (defaults filled in) as canonical JSON: sorted keys, no whitespace."""
    return json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def fingerprint(config: BaseModel) -> str:
    """sha256 of the canonical resolved config: equal configs, equal fingerprints, whatever the YAML's
    key order, comments or omitted defaults."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()
