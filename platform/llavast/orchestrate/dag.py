"""The job DAG: validate the graph, then run nodes in dependency order, independent ones concurrently.

The runner knows nothing about training. An `Executor` (one per node kind) says how to fingerprint a
node, how to find an output that already carries a fingerprint, and how to run the node; the runner
decides what runs, what is skipped as up to date, and what is blocked by a failed dependency.

`Node` and `check_graph` live in `llavast.config.graph` (loading a pipeline checks its graph without the
runner) and are re-exported here.

A node's fingerprint covers its resolved config and its inputs' fingerprints, so changing one stage's
config changes its fingerprint and those of everything downstream: exactly those nodes re-run.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

from llavast.config.graph import Node, check_graph
from llavast.errors import ConfigError
from llavast.failures import FailureReport, describe

log = logging.getLogger(__name__)


class Status(enum.StrEnum):
    SUCCEEDED = "succeeded"  # ran now
    SKIPPED = "skipped"  # an output with this fingerprint already exists
    FAILED = "failed"
    BLOCKED = "blocked"  # a dependency failed or was blocked
    PENDING = "pending"  # would run (plan only)
    WAITING = "waiting"  # for another runner that holds the node's lease (never a final status)
    RUNNING = "running"  # started (never a final status)


@dataclass
class NodeResult:
    name: str
    status: Status
    fingerprint: str
    output: str | None = None  # the URI of the node's registered output
    error: str | None = None  # one line: why the node failed or is blocked
    failure: FailureReport | None = None  # a failed node's root cause: type, message, file:line, log
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


class Executor(Protocol):
    def fingerprint(self, node: Node, upstream: Mapping[str, NodeResult]) -> str: ...

    def find_output(self, node: Node, fingerprint: str) -> str | None:
        """The URI of an existing output of `node` with this fingerprint, or None."""

    def run(self, node: Node, upstream: Mapping[str, NodeResult], fingerprint: str) -> NodeResult: ...


def forced_nodes(nodes: Iterable[Node], from_node: str | None, only: str | None) -> set[str]:
    """Nodes that run regardless of existing outputs: `--only N` is N; `--from N` is N and its descendants."""
    nodes = list(nodes)
    names = {n.name for n in nodes}
    for flag, value in (("--from", from_node), ("--only", only)):
        if value is not None and value not in names:
            raise ConfigError(f"{flag} {value}: no such node (nodes: {', '.join(sorted(names))})")
    if only is not None:
        return {only}
    if from_node is None:
        return set()
    forced = {from_node}
    changed = True
    while changed:
        changed = False
        for node in nodes:
            if node.name not in forced and forced.intersection(node.depends_on):
                forced.add(node.name)
                changed = True
    return forced


def run_dag(
    nodes: list[Node],
    executor: Executor,
    *,
    from_node: str | None = None,
    only: str | None = None,
    max_parallel: int = 4,
    dry_run: bool = False,
    on_update: Callable[[NodeResult], None] | None = None,
) -> dict[str, NodeResult]:
    """Run (or, with `dry_run`, plan) the DAG; returns every node's result, in dependency order.

    Up-to-date nodes are skipped; with `only`, the other nodes must already have outputs (they are
    inputs) and are never run. A failure blocks the failed node's descendants and nothing else.
    """
    order = check_graph(nodes)
    by_name = {n.name: n for n in nodes}
    forced = forced_nodes(nodes, from_node, only)
    results: dict[str, NodeResult] = {}
    notify = on_update or (lambda result: None)

    def settle(node: Node) -> NodeResult | None:
        """Decide a node whose dependencies are settled without running it, or None if it must run."""
        upstream = {d: results[d] for d in node.depends_on}
        if any(r.status in (Status.FAILED, Status.BLOCKED) for r in upstream.values()):
            bad = [d for d, r in upstream.items() if r.status in (Status.FAILED, Status.BLOCKED)]
            return NodeResult(node.name, Status.BLOCKED, "", error=f"dependency {', '.join(bad)} did not succeed")
        fp = executor.fingerprint(node, upstream)
        existing = None if node.name in forced else executor.find_output(node, fp)
        if existing is not None:
            return NodeResult(node.name, Status.SKIPPED, fp, output=existing)
        if only is not None and node.name != only:
            return NodeResult(node.name, Status.FAILED, fp,
                              error=f"--only {only} needs {node.name}'s output, and none has fingerprint {fp[:12]}")
        if dry_run:
            return NodeResult(node.name, Status.PENDING, fp)
        return None

    def execute(node: Node) -> NodeResult:
        upstream = {d: results[d] for d in node.depends_on}
        fp = executor.fingerprint(node, upstream)
        start = time.monotonic()
        try:
            result = executor.run(node, upstream, fp)
        except Exception as err:  # noqa: BLE001 - a failed node is reported, and blocks only its dependents
            log.exception("node %s failed", node.name)
            failure = describe(err)
            result = NodeResult(node.name, Status.FAILED, fp, error=failure.summary, failure=failure)
        result.seconds = time.monotonic() - start
        return result

    waiting = list(order)
    running: dict[Future[NodeResult], str] = {}
    with ThreadPoolExecutor(max_workers=max(1, max_parallel), thread_name_prefix="dag") as pool:
        while waiting or running:
            progressed = False
            for name in list(waiting):
                node = by_name[name]
                if not all(d in results for d in node.depends_on):
                    continue
                waiting.remove(name)
                progressed = True
                decided = settle(node)
                if decided is not None:
                    results[name] = decided
                    notify(decided)
                elif len(running) < max(1, max_parallel):
                    log.info("node %s: running", name)
                    notify(NodeResult(name, Status.RUNNING, ""))
                    running[pool.submit(execute, node)] = name
                else:
                    waiting.insert(0, name)
                    progressed = False
                    break
            if running and not progressed:
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    results[running.pop(future)] = result = future.result()
                    notify(result)
    return {name: results[name] for name in order}
