"""The eval job kind: paths, what it refuses, how a pipeline's eval node names a stage, what it asks of the cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from llavast.cli import app
from llavast.config.eval import EvalJobConfig
from llavast.config.loader import load_job
from llavast.config.resources import job_resources
from llavast.errors import ConfigError
from llavast.orchestrate.dag import Node, NodeResult, Status
from llavast.orchestrate.executors import EvalExecutor
from tests.unit.test_config_jobs import STAGE

EVAL = """\
kind: eval
name: e
model: {version: "models:/m@stage3"}
benchmarks:
  - {task: stvg, annotations: bench/stvg.json, media_root: bench}
  - {task: rec, name: refcoco-val, annotations: s3://b/refcoco_val.json}
out: results
"""



def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_eval_job_paths_are_relative_to_its_file_and_uris_stay(tmp_path):
    job = load_job(_write(tmp_path, "eval.yaml", EVAL))
    assert isinstance(job, EvalJobConfig)
    stvg, rec = job.benchmarks
    assert stvg.annotations == str(tmp_path / "bench" / "stvg.json") and stvg.media_root == str(tmp_path / "bench")
    assert rec.annotations == "s3://b/refcoco_val.json" and rec.media_root is None
    assert job.out == str(tmp_path / "results") and job.model.version == "models:/m@stage3"  # not a path
    assert (stvg.label, rec.label) == ("st-align", "refcoco-val")
    assert job.generation.max_new_tokens == 1024 and job.tracking is None


@pytest.mark.parametrize(("change", "message"), [
    ("model: {name: llava_st}", "give model.version"),
    ("benchmarks: []", "benchmarks: Tuple should have at least 1 item"),
    ("benchmarks: [{task: tvg, annotations: a.json}, {task: tvg, annotations: b.json}]",
     "charades-sta/tvg appear\\(s\\) twice"),
    ("benchmarks: [{task: vqa, annotations: a.json}]", "benchmarks.0.task"),
    ("generation: {max_new_tokens: 0}", "generation.max_new_tokens"),
])
def test_eval_job_refuses(tmp_path, change, message):
    key = change.split(":")[0]
    lines = [line for line in EVAL.splitlines() if not line.startswith((key, "  - "))] if key == "benchmarks" else \
        [line for line in EVAL.splitlines() if not line.startswith(key)]
    with pytest.raises(ConfigError, match=message):
        load_job(_write(tmp_path, "eval.yaml", "\n".join([*lines, change]) + "\n"))


def _pipeline(tmp_path, node_line: str) -> Path:
    _write(tmp_path, "stage1.yaml", STAGE)
    _write(tmp_path, "eval.yaml", EVAL)
    _write(tmp_path, "index.yaml", "kind: index\nname: i\nmixture: m.yaml\nout: idx\n")
    return _write(tmp_path, "pipeline.yaml", f"""\
kind: pipeline
name: p
nodes:
  - {{name: index, job: index.yaml}}
  - {{name: stage1, job: stage1.yaml, depends_on: [index]}}
  - {node_line}
""")


def test_an_eval_node_evaluates_a_stage_node_it_depends_on(tmp_path):
    pipeline = load_job(_pipeline(tmp_path, '{name: eval, job: eval.yaml, depends_on: [stage1], '
                                            'set: {model.version: "node:stage1"}}'))
    node = Node("eval", ("stage1",), pipeline.jobs["eval"])
    upstream = {"stage1": NodeResult("stage1", Status.SUCCEEDED, "fp", output="models:/m/7")}
    assert EvalExecutor().resolve(node, upstream).model.version == "models:/m/7"
    for line, message in [
        ('{name: eval, job: eval.yaml, set: {model.version: "node:stage1"}}', "must also be in depends_on"),
        ('{name: eval, job: eval.yaml, depends_on: [index], set: {model.version: "node:index"}}',
         "a index node; only a stage node has a registered model"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_job(_pipeline(tmp_path, line))


def test_eval_resources_are_its_actors_and_decoders(tmp_path):
    job = load_job(_write(tmp_path, "eval.yaml", EVAL + "compute: {num_actors: 4, gpus_per_actor: 1, "
                                                        "cpus_per_actor: 2}\ndecode: {decode_concurrency: 2}\n"))
    assert job_resources(job) == {"CPU": 4 * 2 + 2 * 1.0, "GPU": 4}


def test_llavast_eval_takes_a_job_file_as_its_default_command(tmp_path):
    stage = _write(tmp_path, "stage.yaml", STAGE)
    result = CliRunner().invoke(app, ["eval", str(stage)])  # refused before any Ray starts
    assert result.exit_code == 1 and "kind: expected 'eval', got 'stage'" in result.output
    missing = CliRunner().invoke(app, ["eval", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 1 and "cannot read the job YAML" in missing.output
