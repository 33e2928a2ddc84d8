"""MLflow tracking and registry: the only package that imports mlflow."""

from llavast.tracking.client import MetricsLogger, Tracker, check_reachable, flatten_params
from llavast.tracking.registry import (
    ResolvedInit,
    download_artifact,
    is_registry_uri,
    register_stage_artifact,
    resolve_init_from,
)
from llavast.tracking.retry import Backoff
from llavast.tracking.system_metrics import node_description, system_metrics
from llavast.tracking.unsent import UNSENT_DIR, replay_unsent, save_unsent

__all__ = [
    "UNSENT_DIR", "Backoff", "MetricsLogger", "ResolvedInit", "Tracker", "check_reachable",
    "download_artifact", "flatten_params", "is_registry_uri", "node_description", "register_stage_artifact",
    "replay_unsent", "resolve_init_from", "save_unsent", "system_metrics",
]
