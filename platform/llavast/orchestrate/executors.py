"""Node kinds of a pipeline: how each fingerprints, finds an existing output, and runs.

- `synth` and `index` write to storage; their output is the folder they wrote, marked with a small JSON
  file holding the node fingerprint, so a re-run with the same inputs finds it and skips. They write under
  a lease in that folder (`llavast/lease.py`), so two runners never write it at once.
- `eval` scores a model on benchmarks (its `model.version` may name a stage node: `node:<name>`); its output is
  its results folder, marked like synth's and index's.
- `sweep` runs Ray Tune trials (`tune/`); its output is its best trial's parameters (best.json in its storage),
  which a stage node with `tuned_by: <sweep node>` runs with.
- `stage` trains on Ray and registers a model version; the version is tagged with the node fingerprint as
  it is created, so the registry itself answers "is this stage already done?". The stage takes its own
  lease (`train/run.py`).
A node fingerprint is the job's config fingerprint combined with its dependencies' fingerprints.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from llavast import storage
from llavast.config.data_jobs import IndexJobConfig, SynthJobConfig
from llavast.config.eval import EvalJobConfig
from llavast.config.loader import fingerprint
from llavast.config.pipeline import NODE_REF
from llavast.config.stage import StageJobConfig
from llavast.config.sweep import SweepJobConfig
from llavast.errors import ConfigError, StorageError
from llavast.lease import Holder, Lease, LeaseWait
from llavast.orchestrate.dag import Node, NodeResult, Status

log = logging.getLogger(__name__)
MARKER = "_llavast_node.json"
LEASE = "_llavast_node.lease.json"  # held while a runner writes the folder (llavast/lease.py)


def node_fingerprint(job: BaseModel, upstream: Mapping[str, NodeResult]) -> str:
    parts = [fingerprint(job)] + [f"{name}={upstream[name].fingerprint}" for name in sorted(upstream)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


class _JobNode:
    """A node whose spec is a job config: every kind fingerprints the same way (`node_fingerprint`)."""

    def fingerprint(self, node: Node, upstream: Mapping[str, NodeResult]) -> str:
        return node_fingerprint(node.spec, upstream)


@dataclass(frozen=True)
class NodeWait:
    """How long a node's runner waits for another runner's lease (0: refused at once), and whom it tells, with
    the node's name, that it waits."""

    timeout_s: float = 0.0
    on_wait: Callable[[str, Holder], None] | None = None

    def for_node(self, name: str) -> LeaseWait:
        return LeaseWait(self.timeout_s, None if self.on_wait is None else functools.partial(self.on_wait, name))


class _StorageMarked(_JobNode, ABC):
    """Output = the job's `out` folder, valid when its marker holds the node fingerprint. A runner works under
    a lease in that folder (waiting for another runner's as `wait` says); one that gets the lease after another
    runner finished finds the marker and skips."""

    def __init__(self, wait: NodeWait = NodeWait()) -> None:
        self.wait = wait

    def find_output(self, node: Node, fingerprint: str) -> str | None:
        job = node.spec
        try:
            marker = json.loads(storage.read_text(storage.join(job.out, MARKER), job.storage))
        except (StorageError, FileNotFoundError, ValueError):
            return None
        return job.out if marker.get("fingerprint") == fingerprint else None

    def resolve(self, node: Node, upstream: Mapping[str, NodeResult]) -> Any:
        """The job as it runs (references to other nodes' outputs filled in)."""
        return node.spec

    def run(self, node: Node, upstream: Mapping[str, NodeResult], fingerprint: str) -> NodeResult:
        job = self.resolve(node, upstream)
        with Lease(storage.join(job.out, LEASE), job.storage, what=f"{job.kind} node {node.name} ({job.out})",
                   wait=self.wait.for_node(node.name)):
            if self.find_output(node, fingerprint) is not None:
                return NodeResult(node.name, Status.SKIPPED, fingerprint, output=job.out)
            details = self.produce(job)
            storage.write_text(storage.join(job.out, MARKER),
                               json.dumps({"fingerprint": fingerprint, "job": job.name, **details}, sort_keys=True),
                               job.storage)
        return NodeResult(node.name, Status.SUCCEEDED, fingerprint, output=job.out, details=details)

    @abstractmethod
    def produce(self, job: Any) -> dict[str, Any]:
        """Write the node's output under `job.out`; return the details its marker and table row show."""


class SynthExecutor(_StorageMarked):
    def produce(self, job: SynthJobConfig) -> dict[str, Any]:
        from llavast.data.synth import SynthSpec, synthesize

        result = synthesize(job.out, job.storage, SynthSpec(**job.synth.model_dump()))
        return {"samples": result.total, "media_bytes": result.media_bytes}


class IndexExecutor(_StorageMarked):
    def produce(self, job: IndexJobConfig) -> dict[str, Any]:
        from llavast.data.index import build_index

        summary = build_index(job.mixture, job.out, job.storage, seed=job.seed, strict=job.strict,
                              check_media=job.check_media, validation=job.validation)
        return {"samples": summary["total"], "quarantined": summary["quarantined"],
                "tolerated": sum(summary["tolerated"].values())}


class EvalExecutor(_StorageMarked):
    """Scores a model; `model.version: node:X` -> X's registered version; its run nests under the pipeline's."""

    def __init__(self, parent_run_id: str | None = None, wait: NodeWait = NodeWait()) -> None:
        super().__init__(wait)
        self.parent_run_id = parent_run_id

    def resolve(self, node: Node, upstream: Mapping[str, NodeResult]) -> EvalJobConfig:
        job: EvalJobConfig = node.spec
        version = job.model.version
        if version and version.startswith(NODE_REF):
            output = upstream[version[len(NODE_REF):]].output
            if not output:
                raise ConfigError(f"nodes.{node.name}: model.version {version} has no output yet")
            job = job.model_copy(update={"model": job.model.model_copy(update={"version": output})})
        return job

    def produce(self, job: EvalJobConfig) -> dict[str, Any]:
        from llavast.evaluate.job import run_eval_job

        return run_eval_job(job, parent_run_id=self.parent_run_id).details()


class SweepExecutor(_JobNode):
    """Runs a sweep under the pipeline's parent run; its output is its best trial's parameters (best.json), which
    a stage node with `tuned_by` takes. A sweep whose best.json exists is done; an interrupted one resumes."""

    def __init__(self, parent_run_id: str | None = None) -> None:
        self.parent_run_id = parent_run_id

    def find_output(self, node: Node, fingerprint: str) -> str | None:
        from llavast.tune.best import best_uri

        job: SweepJobConfig = node.spec
        uri = best_uri(job)
        try:
            return uri if storage.exists(uri, job.storage.options) else None
        except StorageError:
            return None

    def run(self, node: Node, upstream: Mapping[str, NodeResult], fingerprint: str) -> NodeResult:
        from llavast.tune.best import best_parameters
        from llavast.tune.sweep import run_sweep

        job: SweepJobConfig = node.spec
        if self.parent_run_id:
            job = job.model_copy(update={"tracking": job.tracking.model_copy(
                update={"parent_run_id": self.parent_run_id})})
        result = run_sweep(job)
        details = {"trials": len(result.trials), "objective": result.best["objective"],
                   **best_parameters(result.best)}
        return NodeResult(node.name, Status.SUCCEEDED, fingerprint, output=result.best_uri, details=details)


class StageExecutor(_JobNode):
    """Runs a training stage under the pipeline's parent run and tags its version with the node fingerprint.
    A node `tuned_by` a sweep node runs with that sweep's best parameters."""

    def __init__(self, parent_run_id: str | None = None, tuned_by: Mapping[str, str] | None = None,
                 wait: NodeWait = NodeWait()) -> None:
        self.parent_run_id = parent_run_id
        self.tuned_by = dict(tuned_by or {})
        self.wait = wait

    def _tracker(self, job: StageJobConfig) -> Any:
        from llavast.tracking import Tracker

        return Tracker(job.tracking.uri, timeout_s=job.tracking.timeout_s)

    def find_output(self, node: Node, fingerprint: str) -> str | None:
        from llavast.tracking.catalog import find_version
        from llavast.tracking.tags import NODE_FINGERPRINT

        job: StageJobConfig = node.spec
        found = find_version(self._tracker(job), job.tracking.registered_model, NODE_FINGERPRINT, fingerprint)
        return found.uri if found else None

    def resolve(self, node: Node, upstream: Mapping[str, NodeResult]) -> StageJobConfig:
        """The job as it runs: `init_from: node:X` -> X's registered version, nested under the parent run."""
        job: StageJobConfig = node.spec
        model, tracking = job.model, job.tracking
        if model.init_from and model.init_from.startswith(NODE_REF):
            target = model.init_from[len(NODE_REF):]
            output = upstream[target].output
            if not output:
                raise ConfigError(f"nodes.{node.name}: model.init_from {model.init_from} has no output yet")
            model = model.model_copy(update={"init_from": output})
        if self.parent_run_id:
            tracking = tracking.model_copy(update={"parent_run_id": self.parent_run_id})
        job = job.model_copy(update={"model": model, "tracking": tracking})
        sweep = self.tuned_by.get(node.name)
        if sweep is not None:
            from llavast.tune.best import tuned_job

            job = tuned_job(job, upstream[sweep].output, f"nodes.{node.name}.tuned_by")
        return job

    def run(self, node: Node, upstream: Mapping[str, NodeResult], fingerprint: str) -> NodeResult:
        from llavast.tracking.tags import NODE_FINGERPRINT
        from llavast.train.run import run_stage

        job = self.resolve(node, upstream)
        result = run_stage(job, version_tags={NODE_FINGERPRINT: fingerprint},  # tagged as it is created
                           lease_wait=self.wait.for_node(node.name))
        details = {"steps": result.total_steps, "version": result.model_version, "run_id": result.mlflow_run_id,
                   "loss": result.metrics.get("loss"), "trained": result.trained}
        return NodeResult(node.name, Status.SUCCEEDED, fingerprint,
                          output=f"models:/{result.model_name}/{result.model_version}", details=details)


class KindExecutor:
    """Dispatches each node to the executor of its job's kind."""

    def __init__(self, parent_run_id: str | None = None, tuned_by: Mapping[str, str] | None = None,
                 wait: NodeWait = NodeWait()) -> None:
        self.by_kind = {"synth": SynthExecutor(wait), "index": IndexExecutor(wait),
                        "stage": StageExecutor(parent_run_id, tuned_by, wait),
                        "eval": EvalExecutor(parent_run_id, wait),
                        "sweep": SweepExecutor(parent_run_id)}

    def _for(self, node: Node) -> Any:
        kind = getattr(node.spec, "kind", None)
        if kind not in self.by_kind:
            raise ConfigError(f"nodes.{node.name}: kind {kind!r} cannot run in a pipeline "
                              f"(kinds: {sorted(self.by_kind)})")
        return self.by_kind[kind]

    def fingerprint(self, node: Node, upstream: Mapping[str, NodeResult]) -> str:
        return self._for(node).fingerprint(node, upstream)

    def find_output(self, node: Node, fingerprint: str) -> str | None:
        return self._for(node).find_output(node, fingerprint)

    def run(self, node: Node, upstream: Mapping[str, NodeResult], fingerprint: str) -> NodeResult:
        return self._for(node).run(node, upstream, fingerprint)
