"""Reading the registry: versions by tag (pipeline skip-by-fingerprint), listings and lineage for the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field

from mlflow.exceptions import MlflowException

from llavast.errors import TrackingError
from llavast.tracking.client import Tracker


@dataclass(frozen=True)
class VersionInfo:
    model: str
    version: str
    source: str
    run_id: str | None
    aliases: tuple[str, ...]
    tags: dict[str, str] = field(default_factory=dict)
    created_ms: int = 0

    @property
    def uri(self) -> str:
        return f"models:/{self.model}/{self.version}"


def _info(mv: object, aliases: dict[str, str]) -> VersionInfo:
    mine = tuple(sorted(alias for alias, version in aliases.items() if str(version) == str(mv.version)))
    return VersionInfo(model=mv.name, version=str(mv.version), source=str(mv.source), run_id=mv.run_id,
                       aliases=mine, tags=dict(mv.tags or {}), created_ms=int(mv.creation_timestamp or 0))


def list_models(tracker: Tracker) -> list[str]:
    models = tracker.call("search_registered_models", tracker.client.search_registered_models)
    return sorted(m.name for m in models)


def list_versions(tracker: Tracker, model: str) -> list[VersionInfo]:
    """Every version of `model`, oldest first; a missing model is a TrackingError naming it."""
    try:
        registered = tracker.client.get_registered_model(model)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise TrackingError(f"no registered model {model!r} at {tracker.uri}") from err
        raise TrackingError(f"MLflow get_registered_model({model!r}) failed at {tracker.uri}: {err}") from err
    versions = tracker.call("search_model_versions", tracker.client.search_model_versions, f"name = '{model}'")
    # search results carry no aliases: the registered model holds the alias -> version map
    aliases = dict(getattr(registered, "aliases", None) or {})
    return sorted((_info(mv, aliases) for mv in versions), key=lambda v: int(v.version))


def find_version(tracker: Tracker, model: str, tag: str, value: str) -> VersionInfo | None:
    """The newest version of `model` whose tag `tag` equals `value`, or None (also when the model is new)."""
    try:
        versions = list_versions(tracker, model)
    except TrackingError as err:
        if "no registered model" in str(err):
            return None
        raise
    matches = [v for v in versions if v.tags.get(tag) == value]
    return matches[-1] if matches else None


def tag_version(tracker: Tracker, model: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        tracker.call("set_model_version_tag", tracker.client.set_model_version_tag, model, version, key, value)
