"""The model an eval job scores, on the driver and in the inference actors: what `model` names, resolved once
(`resolve_source`: a registered version, an artifact URI or a base checkpoint), and its local copies loaded
through the stages' own loader (`train/stage_model.py`)."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llavast import storage
from llavast.config.eval import EvalJobConfig
from llavast.errors import DataError
from llavast.train.artifact import MANIFEST, read_artifact
from llavast.train.stage_model import WEIGHT_SUFFIXES, load_config, load_for_inference


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


def _fetch(uri: str, source: ModelSource, cache: Path, weights: bool) -> Path:
    """A local copy of a checkpoint or artifact folder (all of it, or without weight files)."""
    if source.tracking_uri and uri.startswith(("mlflow-artifacts:", "runs:")):
        from llavast.tracking import Tracker, download_artifact
        from llavast.tracking.registry import ResolvedInit

        return download_artifact(ResolvedInit(uri=uri), Tracker(source.tracking_uri), cache / "artifact")
    return storage.download_dir(uri, source.options, cache, skip_suffixes=() if weights else WEIGHT_SUFFIXES)


def load_model_for_eval(source: ModelSource, cache: Path, device: torch.device) -> tuple[torch.nn.Module, Any]:
    """The model `source` names, ready to answer (`train.stage_model.load_for_inference`)."""
    artifact = read_artifact(_fetch(source.artifact, source, cache, True)) if source.artifact else None
    return load_for_inference(source.name, _fetch(source.base, source, cache, True), dict(source.overrides),
                              artifact, device)


def load_config_for_eval(source: ModelSource, cache: Path) -> tuple[Any, Any]:
    """(model config, tokenizer) without any weights: what the driver needs to tokenise prompts."""
    return load_config(source.name, _fetch(source.base, source, cache, False), dict(source.overrides))


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
        with tempfile.TemporaryDirectory(prefix="llavast-eval-manifest-") as tmp:
            local = download_artifact(ResolvedInit(uri=f"{resolved.uri.rstrip('/')}/{MANIFEST}"), tracker, Path(tmp))
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
