"""Run a resolved pipeline: the parent MLflow run, the capacity check, then the DAG runner."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from llavast.config.loader import ResolvedPipeline, canonical_json
from llavast.config.resources import job_resources
from llavast.lease import Holder
from llavast.orchestrate.dag import Node, NodeResult, Status, check_graph, run_dag
from llavast.orchestrate.executors import KindExecutor, NodeWait

log = logging.getLogger(__name__)


def pipeline_nodes(pipeline: ResolvedPipeline) -> list[Node]:
    return [Node(n.name, n.depends_on, pipeline.jobs[n.name], job_resources(pipeline.jobs[n.name]))
            for n in pipeline.config.nodes]


def pipeline_key(pipeline: ResolvedPipeline) -> str:
    """Stable for the same pipeline and jobs: a re-run continues the same parent run (and so its stages resume)."""
    text = canonical_json(pipeline.config) + "".join(canonical_json(pipeline.jobs[n]) for n in sorted(pipeline.jobs))
    return f"pipeline-{pipeline.name}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def run_pipeline(
    pipeline: ResolvedPipeline,
    *,
    capacity: Mapping[str, float] | None = None,
    from_node: str | None = None,
    only: str | None = None,
    dry_run: bool = False,
    on_update: Callable[[NodeResult], None] | None = None,
    wait_s: float = 0.0,
) -> dict[str, NodeResult]:
    """Plan (`dry_run`) or run every node; `capacity` (the cluster's resources) is checked first.

    A node another runner holds (a second pipeline that shares it) is waited for up to `wait_s`, its status
    WAITING meanwhile; then it is skipped if that runner produced it, and run if not.
    """
    nodes = pipeline_nodes(pipeline)
    check_graph(nodes, capacity)
    parent_run_id = None
    tracker = None
    tracking = pipeline.config.tracking
    if tracking is not None and not dry_run:
        from llavast.tracking import Tracker, tags

        tracker = Tracker(tracking.uri, timeout_s=tracking.timeout_s)
        key = pipeline_key(pipeline)
        parent_run_id = tracker.ensure_run(tracking.experiment, run_key=key, run_name=pipeline.name,
                                           parent_run_id=tracking.parent_run_id,
                                           tags={tags.KIND: "pipeline", tags.SOURCE: pipeline.source})
    tuned_by = {n.name: n.tuned_by for n in pipeline.config.nodes if n.tuned_by}
    started = datetime.now(UTC)

    def waiting(name: str, holder: Holder) -> None:
        if on_update is not None:
            on_update(NodeResult(name, Status.WAITING, "", details={"holder": f"{holder.host} pid {holder.pid}"}))

    executor = KindExecutor(parent_run_id, tuned_by, NodeWait(wait_s, waiting))
    results = run_dag(nodes, executor, from_node=from_node, only=only,
                      max_parallel=pipeline.config.max_parallel, dry_run=dry_run, on_update=on_update)
    if tracker is not None and parent_run_id is not None:
        failed = any(r.status in (Status.FAILED, Status.BLOCKED) for r in results.values())
        # every attempt keeps its own record (a re-run that skips a node does not hide the attempt that ran
        # it); the tags say how the latest attempt left each node
        record = attempt_record(results, started)
        tracker.call("log_text", tracker.client.log_text, parent_run_id, json.dumps(record, indent=1, default=str),
                     f"{ATTEMPTS_DIR}/{started:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}.json")
        tracker.set_tags(parent_run_id, {f"{tags.NODE_STATE_PREFIX}{name}": r.status.value
                                         for name, r in results.items()})
        tracker.end_run(parent_run_id, "FAILED" if failed else "FINISHED")
    return results


ATTEMPTS_DIR = "attempts"  # in the pipeline's parent run: one JSON per `llavast run` of it


def attempt_record(results: Mapping[str, NodeResult], started: datetime) -> dict[str, Any]:
    """One run of the pipeline as its parent run keeps it: who ran it, when, and each node's outcome."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": started.isoformat(),
            "ended": datetime.now(UTC).isoformat(),
            "nodes": {name: {"status": r.status.value, "output": r.output, "error": r.error,
                             "seconds": round(r.seconds, 1), **r.details} for name, r in results.items()}}
