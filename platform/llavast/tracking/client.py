"""MLflow access: the driver's `Tracker` (fails loudly) and rank 0's `MetricsLogger` (never fails a run).

Two failure policies on purpose: a stage must not start when its tracking server is unreachable (the
user would lose the run's record), but once training runs, a flaky server must cost neither GPU hours
nor metric points: what it does not take is kept in storage and replayed later (`tracking.unsent`).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from mlflow.entities import Metric, Param, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

from llavast.errors import TrackingError
from llavast.tracking.datasets import dataset_input
from llavast.tracking.retry import Backoff, retry
from llavast.tracking.tags import RUN_KEY

log = logging.getLogger(__name__)

# MLflow 3's UI shows an experiment in its GenAI view (traces) unless told otherwise: the kind tag says "model
# training" (the UI may ignore it), and `experiment_url` carries the view in the link, which the UI does honour.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
PARENT_RUN_TAG = "mlflow.parentRunId"


def require_uri(uri: str | None) -> str:
    """The tracking URI of a job, which must have resolved on the driver: left out, or `${env:NAME}` with the
    variable unset here, is a TrackingError that says how to give it."""
    if uri and not uri.startswith("${env:"):
        return uri
    name = uri[6:-1] if uri else "MLFLOW_TRACKING_URI"
    said = f"tracking.uri is {uri}" if uri else "the job gives no tracking.uri"
    raise TrackingError(f"no MLflow server: {said} and {name} is not set in the environment of this process; "
                        f"export {name}=http://<host>:<port> (or set tracking.uri in the job)")


def check_reachable(uri: str | None, timeout_s: float) -> None:
    """Raise TrackingError unless an HTTP tracking server answers; local stores need no server."""
    uri = require_uri(uri)
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s):
            return
    except urllib.error.HTTPError:
        return  # it answered: a proxy without /health is still a server
    except (urllib.error.URLError, OSError) as err:
        raise TrackingError(
            f"MLflow tracking server {uri} is unreachable ({err}); start it (e.g. `llavast services "
            f"up`) or point at the right one: `tracking.uri` in a job YAML, `--tracking-uri` (or "
            f"MLFLOW_TRACKING_URI) for the registry commands") from err


def flatten_params(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> {"train.lr": "0.0002", ...}; lists as JSON; values cut to MLflow's limit."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            flat[name] = text[:MAX_PARAM_VAL_LENGTH]
    return flat


class Tracker:
    """Driver-side MLflow: experiments, one resumable run per stage, params, tags, run status.

    Construction checks the server; later calls retry with backoff and raise TrackingError when the
    server stays down.
    """

    def __init__(self, uri: str | None, *, timeout_s: float = 10.0, backoff: Backoff | None = None) -> None:
        self.uri = require_uri(uri)
        check_reachable(self.uri, timeout_s)
        self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        self._backoff = backoff or Backoff(attempts=4, base_s=1.0)

    def call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one client call with retries; a final failure becomes a TrackingError naming it."""
        try:
            return retry(lambda: fn(*args, **kwargs), self._backoff, what)
        except TrackingError:
            raise
        except Exception as err:
            raise TrackingError(f"MLflow {what} failed at {self.uri}: {err}") from err

    def experiment_id(self, name: str) -> str:
        """The id of experiment `name`, created when missing (a model-training experiment: `EXPERIMENT_KIND`).
        Two runners may create it at once: the one that loses the race (MLflow answers RESOURCE_ALREADY_EXISTS)
        reads the winner's."""
        exp = self.call("get_experiment_by_name", self.client.get_experiment_by_name, name)
        if exp is not None:
            return str(exp.experiment_id)
        try:
            return str(self.client.create_experiment(name, tags=EXPERIMENT_KIND))
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                return str(self.call("create_experiment", self.client.create_experiment, name, tags=EXPERIMENT_KIND))
        exp = self.call("get_experiment_by_name", self.client.get_experiment_by_name, name)
        if exp is None:
            raise TrackingError(f"MLflow says experiment {name!r} exists but does not return it ({self.uri})")
        return str(exp.experiment_id)

    def ensure_run(self, experiment: str, run_key: str, run_name: str, *,
                   parent_run_id: str | None = None, tags: Mapping[str, str] | None = None) -> str:
        """The id of the run tagged `run_key` (set RUNNING again), or of a new one.

        A retried or resumed stage has the same run key, so it continues the same MLflow run.
        """
        exp_id = self.experiment_id(experiment)
        found = self.call("search_runs", self.client.search_runs, [exp_id],
                          filter_string=f"tags.`{RUN_KEY}` = '{run_key}'", max_results=1)
        if found:
            run_id = str(found[0].info.run_id)
            self.call("update_run", self.client.update_run, run_id, status="RUNNING")
            log.info("continuing MLflow run %s (%s)", run_id, run_key)
            return run_id
        all_tags = {RUN_KEY: run_key, **(tags or {})}
        if parent_run_id:
            all_tags[PARENT_RUN_TAG] = parent_run_id
        run = self.call("create_run", self.client.create_run, exp_id, run_name=run_name, tags=all_tags)
        log.info("created MLflow run %s (%s)", run.info.run_id, run_key)
        return str(run.info.run_id)

    def log_params(self, run_id: str, params: Mapping[str, str]) -> None:
        items = [Param(k, v) for k, v in sorted(params.items())]
        for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            self.call("log_batch(params)", self.client.log_batch, run_id,
                      params=items[i:i + MAX_PARAMS_TAGS_PER_BATCH])

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.call("set_tag", self.client.set_tag, run_id, key, value)

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self.log_points(run_id, [Metric(k, float(v), now, step) for k, v in metrics.items()])

    def log_points(self, run_id: str, points: Sequence[Metric]) -> None:
        """Log metric points as they are (their own timestamps and steps), in batches MLflow accepts."""
        for i in range(0, len(points), MAX_METRICS_PER_BATCH):
            self.call("log_batch(metrics)", self.client.log_batch, run_id,
                      metrics=list(points[i:i + MAX_METRICS_PER_BATCH]))

    def log_dataset(self, run_id: str, source_uri: str, *, name: str, digest: str, profile: Mapping[str, Any],
                    schema: Any = None, context: str = "training") -> bool:
        """Log the dataset at `source_uri` as an input of the run (metadata only: `schema` is an Arrow schema,
        `profile` a JSON-able summary); True when logged, False when the run holds it already (same name and
        digest), as on a re-run of the same stage. MLflow's SQL store would not double it either; the check
        makes that hold on any store."""
        run = self.call("get_run", self.client.get_run, run_id)
        held = run.inputs.dataset_inputs if run.inputs else []
        if any(d.dataset.name == name and d.dataset.digest == digest for d in held):
            return False
        entry = dataset_input(source_uri, name=name, digest=digest, profile=profile, schema=schema, context=context)
        self.call("log_inputs", self.client.log_inputs, run_id, datasets=[entry])
        log.info("logged dataset %s (%s) from %s as an input of MLflow run %s", name, digest, source_uri, run_id)
        return True

    def end_run(self, run_id: str, status: str = RunStatus.to_string(RunStatus.FINISHED)) -> None:
        self.call("set_terminated", self.client.set_terminated, run_id, status)


class MetricsLogger:
    """Rank 0's metrics, shipped to one run by a background thread.

    `log` never blocks and never raises: points queue up, and a batch is retried with backoff while the
    server is down. `close` waits for the queue to drain, at most `timeout_s`, and returns the points MLflow
    did not take (given up after retries, or still queued or in flight at the deadline), for the caller to
    keep (`tracking.unsent`). Only a full queue loses points; they are counted in `dropped_points`.
    """

    def __init__(self, uri: str, run_id: str, *, backoff: Backoff | None = None,
                 max_queue: int = 100_000) -> None:
        self.run_id = run_id
        self.dropped_points = 0
        self._client = MlflowClient(tracking_uri=uri)
        self._backoff = backoff or Backoff(attempts=8, base_s=1.0, max_s=30.0)
        self._queue: queue.Queue[Metric | None] = queue.Queue(maxsize=max_queue)
        self._lock = threading.Lock()
        self._unsent: list[Metric] = []
        self._in_flight: list[Metric] = []
        self._thread = threading.Thread(target=self._drain, name="mlflow-metrics", daemon=True)
        self._thread.start()

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        for key, value in metrics.items():
            try:
                self._queue.put_nowait(Metric(key, float(value), now, step))
            except queue.Full:
                self.dropped_points += 1

    def close(self, timeout_s: float = 60.0) -> list[Metric]:
        """Flush queued points (waiting at most `timeout_s`), stop the thread, and return the points MLflow
        did not take."""
        deadline = time.monotonic() + timeout_s
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            pass  # the deadline passed with the queue full: its points are collected below
        self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._lock:
            unsent = [*self._unsent, *self._in_flight]
            self._unsent, self._in_flight = [], []
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    unsent.append(item)
        if unsent:
            log.warning("MLflow did not take %d metric points within %.0fs", len(unsent), timeout_s)
        if self.dropped_points:
            log.warning("%d metric points were lost to a full queue (MLflow run %s)", self.dropped_points,
                        self.run_id)
        return unsent

    def _drain(self) -> None:
        stop = False
        while not stop:
            batch: list[Metric] = []
            item = self._queue.get()
            while True:
                if item is None:
                    stop = True
                    break
                batch.append(item)
                if len(batch) == MAX_METRICS_PER_BATCH:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._send(batch)

    def _send(self, batch: list[Metric]) -> None:
        with self._lock:
            self._in_flight = batch
        try:
            retry(lambda: self._client.log_batch(self.run_id, metrics=batch), self._backoff,
                  f"logging {len(batch)} metric points")
        except Exception as err:  # noqa: BLE001 - mid-run tracking failures never stop training
            log.warning("MLflow did not take %d metric points after retries: %s", len(batch), err)
            with self._lock:
                self._unsent.extend(batch)
        finally:
            with self._lock:
                self._in_flight = []


def experiment_url(tracking_uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """The MLflow UI's link to an experiment's runs, or to one of them, in its training view (not the GenAI
    one)."""
    run = f"/runs/{run_id}" if run_id else ""
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}{run}?workflowType=machine_learning"
