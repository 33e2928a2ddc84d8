"""The best trial: where a finished sweep records it (`best_uri`, best.json next to Tune's state), a stage job
run with its parameters (`tuned_job`, for a pipeline's `tuned_by`), and its parameters as a job YAML
(`llavast run SWEEP.yaml --write-best FILE`).

One base stage: a stage job that `extends:` the base stage YAML and sets what the sweep set on it plus the
best trial's parameters. Several: a pipeline with one node per base stage, each continuing from the last.
Either way the file is loaded back before it is kept, so it validates, and its stage runs with exactly the
best trial's model overrides, learning rate and LoRA rank.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from llavast import storage
from llavast.config.compose import with_fields
from llavast.config.loader import load_job
from llavast.config.stage import StageJobConfig
from llavast.config.sweep import PARAMETERS, SweepJobConfig
from llavast.errors import ConfigError
from llavast.tune.plan import SWEEPS_DIR, sweep_key
from llavast.tune.space import assignments

BEST_FILE = "llavast_best.json"


def _fields(item_set: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """A base item's `set` and the parameters' job fields, dotted key -> value."""
    return {**item_set, **assignments(parameters)}


def best_document(job: SweepJobConfig, parameters: dict[str, Any], out: Path) -> dict[str, Any]:
    """The YAML mapping for `out`: paths to the base jobs are written relative to `out`'s folder."""
    where = out.resolve().parent

    def relative(path: str) -> str:
        return os.path.relpath(Path(path).resolve(), where)

    if len(job.base) == 1:
        item = job.base[0]
        fields = with_fields({}, _fields(item.set, parameters))
        return {"extends": relative(item.job), "name": f"{job.name}-best", **fields}
    nodes = []
    for k, item in enumerate(job.base):
        fields = _fields(item.set, parameters)
        node: dict[str, Any] = {"name": f"stage{k + 1}", "job": relative(item.job), "set": fields}
        if k > 0:
            node["depends_on"] = [f"stage{k}"]
            fields["model.init_from"] = f"node:stage{k}"
        nodes.append(node)
    return {"kind": "pipeline", "name": f"{job.name}-best", "nodes": nodes}


def write_best(job: SweepJobConfig, best: dict[str, Any], parameters: dict[str, Any], out: Path) -> Any:
    """Write the best trial's job YAML to `out`; return the job it loads as (a stage job or a pipeline)."""
    document = best_document(job, parameters, out)
    header = (f"# The best trial ({best.get('trial_id')}) of sweep {job.name}: objective "
              f"({job.objective_metric}, {job.objective.mode}) = {best.get('objective')}.\n"
              f"# Written by `llavast run --write-best`; run it with `llavast run {out.name}`.\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(header + yaml.safe_dump(document, sort_keys=False))
    return load_job(out)


def best_uri(job: SweepJobConfig) -> str:
    """Where a finished sweep keeps its best trial (next to Tune's state)."""
    return storage.join(job.storage.root, SWEEPS_DIR, sweep_key(job), BEST_FILE)


def tuned_job(job: StageJobConfig, uri: str | None, where: str) -> StageJobConfig:
    """`job` with the parameters of the best trial recorded at `uri` (a sweep node's output)."""
    if not uri:
        raise ConfigError(f"{where}: the sweep has no best trial yet")
    best = json.loads(storage.read_text(uri, job.storage.options))["best"]
    return StageJobConfig.model_validate(with_fields(job.model_dump(mode="json"), assignments(best_parameters(best))))


def best_parameters(best: dict[str, Any]) -> dict[str, Any]:
    """The swept parameters of a trial row."""
    return {name: best[name] for name in PARAMETERS if best.get(name) is not None}
