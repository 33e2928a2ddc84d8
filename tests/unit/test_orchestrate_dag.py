"""The DAG runner's graph checks and scheduling, with a small in-process node kind.

Real node kinds (data indexing, training stages) are exercised through the same runner in the
integration and end-to-end tests; here the node kind is a function of its config, so the runner's own
decisions (order, skip, re-run, block, concurrency) can be checked exactly and fast.
"""

import hashlib
import threading
import time

import pytest

from llavast.errors import ConfigError
from llavast.orchestrate.dag import Node, NodeResult, Status, check_graph, forced_nodes, run_dag


class Recorder:
    """A node kind whose output is a string derived from its spec; outputs persist across runs like a registry."""

    def __init__(self, fail: set[str] = frozenset(), delay: float = 0.0):
        self.registry: dict[str, str] = {}
        self.ran: list[str] = []
        self.fail, self.delay = set(fail), delay
        self.active = self.max_active = 0
        self.lock = threading.Lock()

    def fingerprint(self, node, upstream):
        text = repr(node.spec) + "".join(upstream[d].fingerprint for d in sorted(upstream))
        return hashlib.sha256(text.encode()).hexdigest()

    def find_output(self, node, fingerprint):
        return self.registry.get(fingerprint)

    def run(self, node, upstream, fingerprint):
        with self.lock:
            self.ran.append(node.name)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            time.sleep(self.delay)
            if node.name in self.fail:
                raise RuntimeError(f"{node.name} broke")
            self.registry[fingerprint] = f"out://{node.name}/{fingerprint[:8]}"
            return NodeResult(node.name, Status.SUCCEEDED, fingerprint, output=self.registry[fingerprint])
        finally:
            with self.lock:
                self.active -= 1


def chain(**specs):
    """stage1 -> stage2 -> stage3, plus an independent `eval_a` on stage1."""
    s = {"stage1": 1, "stage2": 2, "stage3": 3, "eval_a": "a", **specs}
    return [Node("stage1", (), s["stage1"]), Node("stage2", ("stage1",), s["stage2"]),
            Node("stage3", ("stage2",), s["stage3"]), Node("eval_a", ("stage1",), s["eval_a"])]


def test_order_respects_dependencies():
    order = check_graph(chain())
    assert order.index("stage1") < order.index("stage2") < order.index("stage3")
    assert order.index("stage1") < order.index("eval_a")


def test_cycle_is_named():
    nodes = [Node("a", ("c",)), Node("b", ("a",)), Node("c", ("b",))]
    with pytest.raises(ConfigError, match="dependency cycle a -> c -> b -> a"):
        check_graph(nodes)


def test_missing_and_duplicate_nodes():
    with pytest.raises(ConfigError, match=r"nodes.b.depends_on: no node named 'x'"):
        check_graph([Node("a"), Node("b", ("x",))])
    with pytest.raises(ConfigError, match="nodes.a: the name is used twice"):
        check_graph([Node("a"), Node("a")])


def test_oversized_resource_request_is_refused_before_anything_runs():
    nodes = [Node("a", resources={"GPU": 48}), Node("b", ("a",), resources={"GPU": 64})]
    with pytest.raises(ConfigError, match="nodes.b: needs 64 GPU but the cluster has 48"):
        check_graph(nodes, capacity={"GPU": 48, "CPU": 100})


def test_first_run_runs_all_second_run_skips_all():
    executor = Recorder()
    first = run_dag(chain(), executor)
    assert {r.status for r in first.values()} == {Status.SUCCEEDED}
    executor.ran.clear()
    second = run_dag(chain(), executor)
    assert executor.ran == [] and {r.status for r in second.values()} == {Status.SKIPPED}
    assert second["stage3"].output == first["stage3"].output


def test_changed_config_reruns_the_node_and_its_dependents_only():
    executor = Recorder()
    run_dag(chain(), executor)
    executor.ran.clear()
    results = run_dag(chain(stage2="2-with-a-new-learning-rate"), executor)
    assert sorted(executor.ran) == ["stage2", "stage3"]
    assert results["stage1"].status == results["eval_a"].status == Status.SKIPPED


def test_failure_blocks_dependents_and_nothing_else_then_resume_runs_the_rest():
    executor = Recorder(fail={"stage2"})
    results = run_dag(chain(), executor)
    assert results["stage2"].status == Status.FAILED and results["stage2"].error == "RuntimeError: stage2 broke"
    failure = results["stage2"].failure  # the full report: where it was raised
    assert failure is not None and failure.location.rsplit(":", 1)[0] == __file__
    assert results["stage3"].failure is None  # blocked, not failed: its one-line reason says why
    assert results["stage3"].status == Status.BLOCKED and "stage2" in results["stage3"].error
    assert results["stage1"].status == results["eval_a"].status == Status.SUCCEEDED
    executor.fail.clear()
    executor.ran.clear()
    resumed = run_dag(chain(), executor)  # the interrupted pipeline continues where it stopped
    assert executor.ran == ["stage2", "stage3"]
    assert resumed["stage1"].status == Status.SKIPPED and resumed["stage3"].status == Status.SUCCEEDED


def test_independent_nodes_run_concurrently():
    executor = Recorder(delay=0.3)
    nodes = [Node("root"), *(Node(f"leaf{i}", ("root",), i) for i in range(3))]
    run_dag(nodes, executor, max_parallel=4)
    assert executor.max_active == 3
    executor2 = Recorder(delay=0.05)
    run_dag([Node("root"), *(Node(f"leaf{i}", ("root",), i) for i in range(3))], executor2, max_parallel=1)
    assert executor2.max_active == 1


def test_from_forces_the_node_and_its_descendants():
    executor = Recorder()
    run_dag(chain(), executor)
    executor.ran.clear()
    run_dag(chain(), executor, from_node="stage2")
    assert executor.ran == ["stage2", "stage3"]
    assert forced_nodes(chain(), "stage1", None) == {"stage1", "stage2", "stage3", "eval_a"}


def test_only_runs_one_node_and_needs_its_inputs():
    executor = Recorder()
    results = run_dag(chain(), executor, only="stage2")
    assert executor.ran == [] and results["stage1"].status == Status.FAILED
    assert "--only stage2 needs stage1's output" in results["stage1"].error
    assert results["stage2"].status == Status.BLOCKED
    run_dag(chain(), executor)
    executor.ran.clear()
    run_dag(chain(), executor, only="stage2")
    assert executor.ran == ["stage2"]
    with pytest.raises(ConfigError, match="--only nope: no such node"):
        run_dag(chain(), executor, only="nope")


def test_dry_run_plans_without_running():
    executor = Recorder()
    run_dag(chain(), executor)
    executor.ran.clear()
    plan = run_dag(chain(stage3="changed"), executor, dry_run=True)
    assert executor.ran == []
    assert [plan[n].status for n in ("stage1", "stage2", "stage3", "eval_a")] == [
        Status.SKIPPED, Status.SKIPPED, Status.PENDING, Status.SKIPPED]


def test_updates_say_running_before_each_run_and_never_for_a_skip():
    kind, seen = Recorder(), []
    run_dag(chain(), kind, max_parallel=1)
    run_dag(chain(stage3="changed"), kind, max_parallel=1, on_update=lambda r: seen.append((r.name, r.status)))
    assert seen.index(("stage3", Status.RUNNING)) < seen.index(("stage3", Status.SUCCEEDED))
    assert ("stage1", Status.RUNNING) not in seen and ("stage1", Status.SKIPPED) in seen
