"""The platform's layers as a rule: a package imports only the layers below it, never a sibling of its own layer,
and no module imports itself back through others. docs/architecture.md draws the same table. Read from the
source (ast), every import counted, the ones inside functions too."""

from __future__ import annotations

import ast
import graphlib
import re
from pathlib import Path

PLATFORM = Path(__file__).resolve().parents[2] / "platform"

# Bottom to top. A package may import any package of a lower row; packages of one row do not import each other.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("failures",),  # a failure's root cause as a person reads it
    ("errors",),  # the user-facing exception types
    ("storage", "services"),  # URIs -> filesystems; local MLflow/moto processes
    ("config", "lease"),  # job models; the storage lease
    ("data", "tracking"),  # Ray Data; MLflow
    ("train",),  # Ray Train + DeepSpeed
    ("evaluate",),  # benchmarks, metrics, generation
    ("tune",),  # Ray Tune sweeps
    ("orchestrate",),  # the job DAG
    ("cli",),  # what a person types
)
# Where a layer reaches into one below it only through named modules (its public entry points).
ENTRY_POINTS = {
    ("evaluate", "train"): {"stage_model", "artifact"},  # the one stage-model loader and the artifact's format
}


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path, known: set[str]) -> set[str]:
    """The platform modules `path` imports: `from a.b import c` is a.b.c when that is a module, else a.b."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            candidates = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found |= {c for c in candidates if c in known and c != name}
    return found


def import_graph(root: Path = PLATFORM) -> dict[str, set[str]]:
    paths = sorted(root.joinpath("llavast").rglob("*.py"))
    known = {module_name(p, root) for p in paths}
    return {module_name(p, root): imported_modules(p, root, known) for p in paths}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


RANK = {package: rank for rank, row in enumerate(LAYERS) for package in row}


def wrong_imports(graph: dict[str, set[str]]) -> list[str]:
    """Imports of a package's own layer or above, and imports past a layer's entry points."""
    offenders = []
    for module, imports in graph.items():
        src = layer_of(module)
        for target in sorted(imports):
            dst = layer_of(target)
            if src is None or dst is None or src == dst:
                continue
            if RANK[dst] >= RANK[src]:
                offenders.append(f"{module} -> {target}")
            elif (src, dst) in ENTRY_POINTS and target.split(".")[2] not in ENTRY_POINTS[src, dst]:
                offenders.append(f"{module} -> {target} (not an entry point of {dst})")
    return offenders


def cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of `graph`, or []."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as err:
        return list(err.args[1])
    return []


def test_every_package_has_a_layer():
    packages = {layer_of(m) for m in import_graph()} - {None}
    assert packages - set(RANK) == set(), "place the new package in LAYERS (and in docs/architecture.md)"


def test_no_import_goes_up_or_sideways():
    assert wrong_imports(import_graph()) == []


def test_no_import_cycle():
    assert cycle(import_graph()) == []


def test_the_rules_catch_what_they_forbid(tmp_path):
    """An upward import, a sideways one, an import past an entry point and a cycle, in a small tree."""
    files = {
        "config/sweep.py": "from llavast.tune.space import PARAMETERS\n",
        "tune/space.py": "from llavast.config import sweep\nPARAMETERS = ()\n",
        "data/synth.py": "import llavast.tracking.client\n",
        "tracking/client.py": "",
        "train/loop.py": "",
        "evaluate/runner.py": "def f():\n    from llavast.train import loop\n",
    }
    for rel, text in files.items():
        path = tmp_path / "llavast" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").touch()
        path.write_text(text)
    graph = import_graph(tmp_path)
    assert wrong_imports(graph) == [
        "llavast.config.sweep -> llavast.tune.space",
        "llavast.data.synth -> llavast.tracking.client",
        "llavast.evaluate.runner -> llavast.train.loop (not an entry point of train)",
    ]
    assert set(cycle(graph)) == {"llavast.config.sweep", "llavast.tune.space"}


def test_every_llavast_tag_is_named_in_one_module():
    """MLflow tags are `llavast.<name>`: only tracking/tags.py spells one out (Ray Jobs' metadata key
    `llavast.job` is not an MLflow tag)."""
    tag = re.compile(r"^llavast\.[a-z_]+\.?$")
    spelled = [(str(path.relative_to(PLATFORM)), node.value)
               for path in sorted(PLATFORM.joinpath("llavast").rglob("*.py")) if path.name != "tags.py"
               for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, ast.Constant) and isinstance(node.value, str) and tag.match(node.value)
               and node.value != "llavast.job"]
    assert spelled == []
