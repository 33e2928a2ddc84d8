"""The job graph a pipeline declares: its nodes and the check that they form a DAG.

Pure data and one check, so that loading a pipeline (`config/loader.py`) validates its graph without
importing the runner; `orchestrate/dag.py` runs the same `Node`s and calls the same `check_graph`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from llavast.errors import ConfigError


@dataclass(frozen=True)
class Node:
    name: str
    depends_on: tuple[str, ...] = ()
    spec: Any = None  # the node's config object, opaque to the runner
    resources: Mapping[str, float] = field(default_factory=dict)  # e.g. {"CPU": 4, "GPU": 8}


def check_graph(nodes: Iterable[Node], capacity: Mapping[str, float] | None = None) -> list[str]:
    """Names in a dependency order; ConfigError for duplicates, missing nodes, cycles, oversized requests."""
    by_name: dict[str, Node] = {}
    for node in nodes:
        if node.name in by_name:
            raise ConfigError(f"nodes.{node.name}: the name is used twice")
        by_name[node.name] = node
    for node in by_name.values():
        for dep in node.depends_on:
            if dep not in by_name:
                raise ConfigError(f"nodes.{node.name}.depends_on: no node named {dep!r} "
                                  f"(nodes: {', '.join(sorted(by_name))})")
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = path[path.index(name):] + [name]
            raise ConfigError(f"nodes: dependency cycle {' -> '.join(cycle)}")
        state[name] = 1
        for dep in by_name[name].depends_on:
            visit(dep, [*path, name])
        state[name] = 2
        order.append(name)

    for name in by_name:
        visit(name, [])
    if capacity is not None:
        for node in by_name.values():
            for resource, amount in node.resources.items():
                if amount > capacity.get(resource, 0.0):
                    raise ConfigError(
                        f"nodes.{node.name}: needs {amount:g} {resource} but the cluster has "
                        f"{capacity.get(resource, 0.0):g}; it could never be scheduled")
    return order
