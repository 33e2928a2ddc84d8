"""Job YAML -> config object, with errors that name the file and the key path; config fingerprints.

Loading is: read YAML (`yaml_file.py`) -> apply `extends:` -> apply `--set` overrides -> refuse literal secrets ->
validate against the model of the job's `kind` (`JOB_KINDS`). A pipeline additionally resolves each
node's job the same way and checks the graph, so `llavast validate` catches every error before a run.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from llavast.config.compose import apply_sets, deep_merge, resolve_extends, with_fields
from llavast.config.data_jobs import IndexJobConfig, SynthJobConfig
from llavast.config.eval import EvalJobConfig
from llavast.config.graph import Node, check_graph
from llavast.config.pipeline import NODE_REF, PipelineConfig
from llavast.config.secrets import ENV_REF, check_secrets
from llavast.config.stage import StageJobConfig
from llavast.config.sweep import SweepJobConfig
from llavast.config.yaml_file import read_yaml
from llavast.errors import ConfigError

JOB_KINDS: dict[str, type[BaseModel]] = {
    "stage": StageJobConfig,
    "synth": SynthJobConfig,
    "index": IndexJobConfig,
    "eval": EvalJobConfig,
    "sweep": SweepJobConfig,
    "pipeline": PipelineConfig,
}


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


# Fields holding local paths or URIs; a relative plain path is relative to the YAML file that holds it.
# `*` stands for every item of a list.
PATH_FIELDS: dict[str, tuple[str, ...]] = {
    "stage": ("model.base", "data.manifest", "storage.root"),
    "synth": ("out",),
    "index": ("mixture", "out"),
    "eval": ("model.base", "out", "benchmarks.*.annotations", "benchmarks.*.media_root"),
    "sweep": ("base.*.job", "validation.annotations", "validation.media_root", "storage.root"),
}
COMMON_PATH_FIELDS = ("working_dir", "requirements")


def anchor_paths(raw: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """Make the kind's relative plain paths absolute against `base_dir` (URIs and absolute paths stay)."""
    out = copy.deepcopy(raw)

    def anchor(section: Any, keys: list[str]) -> None:
        key, rest = keys[0], keys[1:]
        if key == "*":
            for item in section if isinstance(section, list) else []:
                anchor(item, rest)
        elif isinstance(section, dict) and rest:
            anchor(section.get(key), rest)
        elif isinstance(section, dict):
            value = section.get(key)
            if isinstance(value, str) and value and "://" not in value and not value.startswith("/"):
                section[key] = str((base_dir / value).resolve())

    for dotted in PATH_FIELDS.get(raw.get("kind", "stage"), ()) + COMMON_PATH_FIELDS:
        anchor(out, dotted.split("."))
    return out


def read_job_file(path: str | Path) -> dict[str, Any]:
    """A job YAML after `extends:`, its relative paths anchored at its own folder."""
    path = Path(path).resolve()
    return anchor_paths(resolve_extends(read_yaml(path), path, read_yaml), path.parent)


def read_job(path: str | Path, sets: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    """The raw job mapping after `extends:`, path anchoring and `--set`, checked for literal secrets, its
    tracking URI resolved from the environment where the job asks for it."""
    raw = anchor_paths(apply_sets(read_job_file(path), sets), Path.cwd())  # --set paths: where you type them
    check_secrets(raw, str(path))
    return resolve_tracking_uri(raw, os.environ)


def resolve_tracking_uri(raw: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """`tracking.uri` as the job's driver sees it: `${env:NAME}` -> environ[NAME]; left out ->
    environ["MLFLOW_TRACKING_URI"]. Unset variables leave it as it is: whoever needs the server says so."""
    tracking = raw.get("tracking")
    if not isinstance(tracking, dict):
        return raw
    uri = tracking.get("uri")
    ref = ENV_REF.match(uri) if isinstance(uri, str) else None
    name = ref["name"] if ref else "MLFLOW_TRACKING_URI" if uri is None else None
    if name is not None and environ.get(name):
        return {**raw, "tracking": {**tracking, "uri": environ[name]}}
    return raw


def load_sub_job(raw: dict[str, Any], fields: dict[str, Any], fields_dir: Path, source: str,
                 defaults: dict[str, Any] | None = None) -> BaseModel:
    """A job inside another (a pipeline's node, a sweep's base stage): `defaults` of its kind < its own
    mapping `raw` (paths already anchored) < the `fields` the outer job sets on it, whose relative paths
    are relative to `fields_dir`."""
    if defaults:
        anchored = anchor_paths({"kind": raw.get("kind", "stage"), **defaults}, fields_dir)
        raw = deep_merge({k: v for k, v in anchored.items() if k != "kind"}, raw)
    raw = anchor_paths(with_fields(raw, fields), fields_dir)
    check_secrets(raw, source)
    return parse_job(resolve_tracking_uri(raw, os.environ), source=source)


def load_job(path: str | Path, sets: tuple[str, ...] | list[str] = ()) -> BaseModel:
    """Any job kind; a pipeline comes back as a `ResolvedPipeline` with every node's job validated."""
    raw = read_job(path, sets)
    if raw.get("kind") == "pipeline":
        return resolve_pipeline(parse_job(raw, source=str(path)), Path(path))
    return parse_job(raw, source=str(path))


def load_stage_job(path: str | Path, sets: tuple[str, ...] | list[str] = ()) -> StageJobConfig:
    """Load a `kind: stage` job YAML; any other kind is a ConfigError naming the file."""
    job = load_job(path, sets)
    if not isinstance(job, StageJobConfig):
        raise ConfigError(f"{path}: kind: expected 'stage', got {job.kind!r}")  # type: ignore[attr-defined]
    return job


# How a job is shipped and described, not what it computes: a resubmitted job (whose working_dir is the
# cluster's unpacked copy) must keep its fingerprint, so its stages resume instead of starting over.
NOT_FINGERPRINTED = frozenset({"description", "working_dir", "env_vars", "pip", "requirements"})
# Where a stage's MLflow run is filed and what it observes, not what it trains: two runs of one pipeline (each
# with its own parent run) must meet at the same stage run name, hence the same lease and checkpoints.
NOT_FINGERPRINTED_TRACKING = frozenset({"parent_run_id", "system_metrics_interval_s", "progress_every_s"})


def canonical_json(config: BaseModel) -> str:
    """The resolved config (defaults filled in) as canonical JSON: sorted keys, no whitespace."""
    data = {k: v for k, v in config.model_dump(mode="json").items() if k not in NOT_FINGERPRINTED}
    if isinstance(data.get("tracking"), dict):
        data["tracking"] = {k: v for k, v in data["tracking"].items() if k not in NOT_FINGERPRINTED_TRACKING}
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def fingerprint(config: BaseModel) -> str:
    """sha256 of the canonical resolved config: equal configs, equal fingerprints, whatever the YAML's
    key order, comments or omitted defaults."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


class ResolvedPipeline(BaseModel):
    """A pipeline whose nodes' jobs are loaded and validated: `jobs[name]` is the node's typed config."""

    model_config = {"frozen": True, "arbitrary_types_allowed": True}

    config: PipelineConfig
    source: str
    jobs: dict[str, BaseModel]

    @property
    def kind(self) -> str:
        return "pipeline"

    @property
    def name(self) -> str:
        return self.config.name


def resolve_pipeline(config: PipelineConfig, path: Path) -> ResolvedPipeline:
    """Load every node's job (defaults of its kind < the job YAML < the node's `set`) and check references."""
    jobs: dict[str, BaseModel] = {}
    for node in config.nodes:
        where = f"{path}: nodes.{node.name}"
        if node.job is not None:
            job_path = (path.parent / node.job).resolve()
            if not job_path.is_file():
                raise ConfigError(f"{where}.job: {node.job} does not exist (looked for {job_path})")
            raw, source = read_job_file(job_path), f"{job_path} (node {node.name} of {path})"
        else:
            raw, source = anchor_paths(dict(node.spec or {}), path.resolve().parent), f"{where}.spec"
        if raw.get("kind", "stage") == "pipeline":
            raise ConfigError(f"{where}: a node cannot be a pipeline")
        # a node's `set` paths are relative to the pipeline
        jobs[node.name] = load_sub_job(raw, node.set, path.resolve().parent, source,
                                       config.defaults.get(raw.get("kind", "stage"), {}))
    check_graph([Node(n.name, n.depends_on) for n in config.nodes])
    for node in config.nodes:
        field = "model.version" if jobs[node.name].kind == "eval" else "model.init_from"
        ref = getattr(getattr(jobs[node.name], "model", None), field.split(".")[1], None)
        if isinstance(ref, str) and ref.startswith(NODE_REF):
            target = ref[len(NODE_REF):]
            if target not in node.depends_on:
                raise ConfigError(f"{path}: nodes.{node.name}: {field} names node {target!r}, which must "
                                  f"also be in depends_on (depends_on: {list(node.depends_on)})")
            if jobs[target].kind != "stage":
                raise ConfigError(f"{path}: nodes.{node.name}: {field} names node {target!r}, a "
                                  f"{jobs[target].kind} node; only a stage node has a registered model")
        if node.tuned_by is not None:
            where = f"{path}: nodes.{node.name}.tuned_by"
            if node.tuned_by not in node.depends_on:
                raise ConfigError(f"{where}: {node.tuned_by!r} must also be in depends_on")
            if jobs[node.tuned_by].kind != "sweep" or jobs[node.name].kind != "stage":
                raise ConfigError(f"{where}: a stage node takes its parameters from a sweep node; here "
                                  f"{node.name} is a {jobs[node.name].kind} node and {node.tuned_by} a "
                                  f"{jobs[node.tuned_by].kind} node")
    return ResolvedPipeline(config=config, source=str(path), jobs=jobs)


def load_sweep_stages(job: SweepJobConfig) -> tuple[StageJobConfig, ...]:
    """A sweep's base stage jobs with their `set` fields (paths there are relative to the stage job's folder)."""
    stages = []
    for i, item in enumerate(job.base):
        path = Path(item.job)
        where = f"base.{i}.job"
        if not path.is_file():
            raise ConfigError(f"sweep {job.name}: {where}: {item.job} does not exist")
        stage = load_sub_job(read_job_file(path), item.set, path.resolve().parent,
                             f"{path} ({where} of sweep {job.name})")
        if not isinstance(stage, StageJobConfig):
            raise ConfigError(f"sweep {job.name}: {where}: {item.job} is a {stage.kind} job; a sweep runs stages")
        if i > 0 and stage.model.base != stages[0].model.base:
            raise ConfigError(f"sweep {job.name}: {where}: every stage must start from the same model.base")
        stages.append(stage)
    return tuple(stages)
