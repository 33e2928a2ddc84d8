"""The project's exception types: errors a user can cause, each with a message naming what and where.

The CLI prints these in one line without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llavast.failures import FailureReport


class LlavastError(Exception):
    """Base of every user-caused error (bad YAML, bad data, unreachable services, missing checkpoints)."""


class ConfigError(LlavastError):
    """A job YAML or config value is invalid; the message names the file and the key path."""


class DataError(LlavastError):
    """An annotation, manifest or media file cannot be used; the message names the record."""


class StorageError(LlavastError):
    """A URI cannot be resolved or read/written (bad scheme, missing object, missing credentials)."""


class TrackingError(LlavastError):
    """MLflow is unreachable at start, or a registry lookup (models:/name@alias) cannot be resolved."""


class RegistrationPending(TrackingError):
    """A stage trained and wrote its artifact, but MLflow was unreachable to register it: running the same job
    again registers it without training again."""


class TrainError(LlavastError):
    """A training stage cannot start or finish (missing checkpoint, incompatible artifact, failed run).

    `failure`, when a run failed, is the root cause's report (type, message, file:line, the worker's log)."""

    def __init__(self, message: str, failure: FailureReport | None = None):
        super().__init__(message)
        self.failure = failure


class ServiceError(LlavastError):
    """A local service (the embedded MLflow server) did not start: port taken, missing executable, crash."""
