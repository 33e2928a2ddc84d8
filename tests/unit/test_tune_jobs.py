"""How a sweep turns into jobs: each trial's stage jobs, the concurrency, the best trial's YAML, the objective,
and a pipeline's stage node tuned by a sweep node."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llavast.config.loader import load_job, load_sweep_stages
from llavast.config.resources import trial_resources
from llavast.errors import ConfigError
from llavast.orchestrate.dag import Node, NodeResult, Status
from llavast.orchestrate.executors import StageExecutor
from llavast.tune.best import write_best
from llavast.tune.plan import concurrency
from llavast.tune.trial import TrialSpec, trial_job, trial_point
from llavast.tune.validation import objective_value

STAGE = """\
kind: stage
name: base-stage{n}
model: {{base: /models/base{init}}}
train: {{stage: {n}, lr: 1.0e-4}}
compute: {{num_workers: 2, cpus_per_worker: 1.5}}
data: {{manifest: s3://b/index{n}, decode_concurrency: 1, decode_num_cpus: 0.5}}
tracking: {{uri: http://127.0.0.1:5000, experiment: e, registered_model: production}}
storage: {{root: s3://b/runs}}
"""


def _write_stages(tmp_path: Path) -> tuple[Path, Path]:
    one = tmp_path / "jobs" / "stage1.yaml"
    two = tmp_path / "jobs" / "stage2.yaml"
    one.parent.mkdir(parents=True, exist_ok=True)
    one.write_text(STAGE.format(n=1, init=""))
    two.write_text(STAGE.format(n=2, init=", init_from: 'models:/production@stage1'"))
    return one, two


def _sweep(tmp_path: Path, base: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(f"""\
kind: sweep
name: sw
base: {base}
space: {{m_t: {{values: [20, 50]}}, k1: {{values: [3, 9]}}, lr: {{loguniform: [1.0e-4, 1.0e-3]}}}}
search: {{algorithm: random, num_samples: 3}}
validation: {{task: stvg, annotations: s3://b/val.json, limit: 4, every: 5}}
tracking: {{uri: http://127.0.0.1:5000, experiment: sweeps}}
storage: {{root: s3://b/sweeps}}
""")
    return path


def _spec(stages, points) -> TrialSpec:
    return TrialSpec("sw", "sw-abc", "http://127.0.0.1:5000", "sweeps", 10.0, "parent-run", stages, points,
                     {"task": "stvg", "annotations": "s3://b/val.json", "objective": "mean_tIoU_sIoU"})


def test_trial_jobs_carry_the_point_the_trial_name_and_nesting(tmp_path):
    _write_stages(tmp_path)
    sweep = load_job(_sweep(tmp_path, "[{job: jobs/stage1.yaml, set: {train.max_steps: 7}}, {job: jobs/stage2.yaml}]"))
    stages = load_sweep_stages(sweep)
    assert stages[0].train.max_steps == 7 and stages[1].train.stage == 2
    spec = _spec(stages, {"k1=3,m_t=20": {"k1": 3, "m_t": 20}})
    point = trial_point({"point": "k1=3,m_t=20", "lr": 3e-4}, spec)
    assert point == {"k1": 3, "m_t": 20, "lr": 3e-4}
    first = trial_job(stages[0], point, spec, "abc_00001", "trial-run", None, validate=False)
    assert first.name == "sw-abc_00001" and first.model.overrides == {"k1": 3, "m_t": 20}
    assert first.train.lr == 3e-4 and first.train.max_steps == 7 and first.model.init_from is None
    assert first.tracking.parent_run_id == "trial-run" and first.tracking.experiment == "sweeps"
    assert first.train.callbacks == ()
    second = trial_job(stages[1], point, spec, "abc_00001", "trial-run", "s3://b/runs/artifacts/x", validate=True)
    assert second.model.init_from == "s3://b/runs/artifacts/x"  # the trial's own stage 1, not production's
    [callback] = second.train.callbacks
    assert callback.path == "llavast.tune.validation:Validation" and callback.args["objective"] == "mean_tIoU_sIoU"


def test_base_stages_must_share_the_base_checkpoint_and_be_stages(tmp_path):
    one, _ = _write_stages(tmp_path)
    other = tmp_path / "jobs" / "other.yaml"
    other.write_text(STAGE.format(n=1, init="").replace("/models/base", "/models/other"))
    with pytest.raises(ConfigError, match="same model.base"):
        load_sweep_stages(load_job(_sweep(tmp_path, "[{job: jobs/stage1.yaml}, {job: jobs/other.yaml}]")))
    synth = tmp_path / "jobs" / "synth.yaml"
    synth.write_text("kind: synth\nname: s\nout: /tmp/x\n")
    with pytest.raises(ConfigError, match="is a synth job; a sweep runs stages"):
        load_sweep_stages(load_job(_sweep(tmp_path, "[{job: jobs/synth.yaml}]")))


def test_concurrency_is_set_by_the_scarcest_resource(tmp_path):
    _write_stages(tmp_path)
    sweep = load_job(_sweep(tmp_path, "[{job: jobs/stage1.yaml}, {job: jobs/stage2.yaml}]"))
    needs = trial_resources(sweep, load_sweep_stages(sweep))
    # the largest stage's workers and decoders, the validation's decoder, the driver
    assert needs == {"CPU": 2 * (1.5 + 0.5) + 0.5 + 0.25}
    assert concurrency(needs, {"CPU": 17.0}, trials=8, name="sw") == 3
    assert concurrency(needs, {"CPU": 100.0}, trials=3, name="sw") == 3
    gpu = {"CPU": 4.0, "GPU": 8.0}
    assert concurrency(gpu, {"CPU": 96.0, "GPU": 48.0}, trials=24, name="sw") == 6
    with pytest.raises(ConfigError, match="one trial needs CPU 4, GPU 8; the cluster has CPU 96, GPU 4"):
        concurrency(gpu, {"CPU": 96.0, "GPU": 4.0}, trials=2, name="sw")


def test_best_yaml_of_one_stage_extends_it_and_validates(tmp_path):
    _write_stages(tmp_path)
    sweep = load_job(_sweep(tmp_path, "[{job: jobs/stage1.yaml, set: {train.max_steps: 7}}]"))
    best = {"trial_id": "abc_00002", "objective": 41.5, "m_t": 50, "k1": 9, "lr": 2e-4}
    out = tmp_path / "promoted" / "best.yaml"
    job = write_best(sweep, best, {"m_t": 50, "k1": 9, "lr": 2e-4}, out)
    assert job.kind == "stage" and job.name == "sw-best"
    assert job.model.overrides == {"m_t": 50, "k1": 9} and job.train.lr == 2e-4 and job.train.max_steps == 7
    assert job.data.manifest == "s3://b/index1"  # everything else from the base stage job
    text = out.read_text()
    assert "abc_00002" in text and "extends: ../jobs/stage1.yaml" in text


def test_best_yaml_of_two_stages_is_a_pipeline_chaining_them(tmp_path):
    _write_stages(tmp_path)
    sweep = load_job(_sweep(tmp_path, "[{job: jobs/stage1.yaml}, {job: jobs/stage2.yaml}]"))
    pipeline = write_best(sweep, {"trial_id": "t", "objective": 1.0}, {"k1": 3, "lr": 5e-4}, tmp_path / "best.yaml")
    assert pipeline.kind == "pipeline"
    one, two = pipeline.jobs["stage1"], pipeline.jobs["stage2"]
    assert one.model.overrides == two.model.overrides == {"k1": 3}
    assert one.train.lr == two.train.lr == 5e-4
    assert two.model.init_from == "node:stage1"


def test_objective_value_reads_the_table_or_averages_two_keys():
    table = {"m_tIoU": 30.0, "m_sIoU": 10.0, "m_vIoU": 4.0, "loss": 2.5}
    assert objective_value(table, "mean_tIoU_sIoU") == 20.0
    assert objective_value(table, "m_vIoU") == 4.0 and objective_value(table, "loss") == 2.5
    with pytest.raises(KeyError, match="'R@0.5' is not among the reported keys"):
        objective_value(table, "R@0.5")


def test_a_stage_node_tuned_by_a_sweep_runs_with_the_best_parameters(tmp_path):
    one, _ = _write_stages(tmp_path)
    best_file = tmp_path / "best.json"
    best_file.write_text(json.dumps({"best": {"trial_id": "t", "objective": 3.0, "m_t": 20, "k1": 9,
                                              "lr": 7e-4, "steps": 10, "stopped_early": False}}))
    stage = load_job(one)
    executor = StageExecutor(parent_run_id="pipeline-run", tuned_by={"stage1": "sweep"})
    upstream = {"sweep": NodeResult("sweep", Status.SUCCEEDED, "fp", output=str(best_file))}
    job = executor.resolve(Node("stage1", ("sweep",), stage), upstream)
    assert job.model.overrides == {"m_t": 20, "k1": 9} and job.train.lr == 7e-4
    assert job.tracking.parent_run_id == "pipeline-run"
    untouched = StageExecutor().resolve(Node("stage1", (), stage), {})
    assert untouched.model.overrides == {} and untouched.train.lr == 1e-4


def test_pipeline_checks_tuned_by(tmp_path):
    _write_stages(tmp_path)
    _sweep(tmp_path, "[{job: jobs/stage1.yaml}]")
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text("kind: pipeline\nname: p\nnodes:\n  - {name: sweep, job: sweep.yaml}\n"
                        "  - {name: stage1, job: jobs/stage1.yaml, tuned_by: sweep}\n")
    with pytest.raises(ConfigError, match="tuned_by: 'sweep' must also be in depends_on"):
        load_job(pipeline)
    pipeline.write_text("kind: pipeline\nname: p\nnodes:\n  - {name: sweep, job: sweep.yaml}\n"
                        "  - {name: stage1, job: jobs/stage1.yaml, depends_on: [sweep], tuned_by: sweep}\n")
    assert load_job(pipeline).config.nodes[1].tuned_by == "sweep"
