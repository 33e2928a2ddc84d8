"""The model registry: stage artifacts as model versions, stage aliases, lineage, `init_from` resolution.

Layout: one registered model per pipeline (`tracking.registered_model`); each finished stage adds a
version whose source is the stage artifact's URI on object storage, moves the alias `stage<k>` to it,
and tags it with its lineage (stage, parent artifact, base model, data manifest, config fingerprint).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from mlflow.exceptions import MlflowException

from llavast.errors import TrackingError
from llavast.tracking.catalog import find_version, tag_version
from llavast.tracking.client import Tracker
from llavast.tracking.tags import RUN_NAME

log = logging.getLogger(__name__)

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")
_MLFLOW_SCHEMES = ("mlflow-artifacts", "runs")
ARTIFACT_SUBDIR = "stage_artifact"


@dataclass(frozen=True)
class ResolvedInit:
    """What an `init_from` reference points at: the artifact URI, and the model version if registered."""

    uri: str
    model_name: str | None = None
    version: str | None = None

    @property
    def needs_mlflow_download(self) -> bool:
        """True when the artifact lives in MLflow's artifact store rather than on object storage."""
        return urlparse(self.uri).scheme in _MLFLOW_SCHEMES


def is_registry_uri(ref: str) -> bool:
    return ref.startswith("models:/")


def resolve_init_from(ref: str, tracker: Tracker | None) -> ResolvedInit:
    """`models:/name@alias`, `models:/name/3` or a plain URI -> the artifact the stage starts from."""
    if not is_registry_uri(ref):
        return ResolvedInit(uri=ref)
    match = _MODELS_URI.match(ref)
    if match is None:
        raise TrackingError(f"init_from {ref!r} is not a registry URI: write models:/<name>@<alias> or "
                            f"models:/<name>/<version>")
    if tracker is None:
        raise TrackingError(f"init_from {ref!r} needs a tracking server: set tracking.uri in the job YAML")
    name, alias, version = match["name"], match["alias"], match["version"]
    try:
        if alias is not None:
            mv = tracker.client.get_model_version_by_alias(name, alias)
        else:
            mv = tracker.client.get_model_version(name, version)
    except Exception as err:  # MLflow raises its own types for 404s and transport errors
        raise TrackingError(f"init_from {ref!r} cannot be resolved at {tracker.uri}: {err}; list versions "
                            f"with the MLflow UI or `llavast run` a previous stage first") from err
    log.info("init_from %s -> version %s at %s", ref, mv.version, mv.source)
    return ResolvedInit(uri=str(mv.source), model_name=name, version=str(mv.version))


def download_artifact(resolved: ResolvedInit, tracker: Tracker, dst_dir: Path) -> Path:
    """Fetch an artifact kept in MLflow's own artifact store to `dst_dir`; return the local directory."""
    from mlflow.artifacts import download_artifacts

    dst_dir.mkdir(parents=True, exist_ok=True)
    local = tracker.call("download_artifacts", download_artifacts, artifact_uri=resolved.uri,
                         dst_path=str(dst_dir), tracking_uri=tracker.uri)
    return Path(local)


def register_stage_artifact(tracker: Tracker, model_name: str, source_uri: str, *, alias: str, run_id: str,
                            tags: Mapping[str, str]) -> str:
    """Add a model version for `source_uri`, move `alias` to it, tag its lineage; return the version.

    Idempotent per stage run: the tags travel with the version when it is created, and when a version
    tagged with the same `llavast.run_name` exists (a driver killed after registering, a re-run of a
    finished stage), that version is returned, with any missing tag added, instead of a second one.
    An MLflow server accepts only remote URIs as sources; an artifact on a local path (the embedded
    default) is first copied into the run's artifacts and registered from there.
    """
    run_name = tags.get(RUN_NAME)
    existing = find_version(tracker, model_name, RUN_NAME, run_name) if run_name else None
    if existing is not None:
        tag_version(tracker, model_name, existing.version,
                    {k: v for k, v in tags.items() if existing.tags.get(k) != v})
        tracker.call("set_registered_model_alias", tracker.client.set_registered_model_alias, model_name, alias,
                     existing.version)
        log.info("%s version %s already holds run %s: alias %s moved to it", model_name, existing.version,
                 run_name, alias)
        return existing.version
    source = source_uri
    if urlparse(source_uri).scheme in ("", "file"):
        local_dir = urlparse(source_uri).path if source_uri.startswith("file:") else source_uri
        tracker.call("log_artifacts", tracker.client.log_artifacts, run_id, local_dir, ARTIFACT_SUBDIR)
        run = tracker.call("get_run", tracker.client.get_run, run_id)
        source = f"{run.info.artifact_uri.rstrip('/')}/{ARTIFACT_SUBDIR}"
    try:
        tracker.client.get_registered_model(model_name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise TrackingError(f"MLflow get_registered_model({model_name!r}) failed at {tracker.uri}: {err}") from err
        tracker.call("create_registered_model", tracker.client.create_registered_model, model_name)
    mv = tracker.call("create_model_version", tracker.client.create_model_version, model_name, source,
                      run_id=run_id, tags=dict(tags), await_creation_for=0)  # a plain source is READY at once
    tracker.call("set_registered_model_alias", tracker.client.set_registered_model_alias, model_name, alias,
                 str(mv.version))
    log.info("registered %s version %s (alias %s) from %s", model_name, mv.version, alias, source)
    return str(mv.version)
