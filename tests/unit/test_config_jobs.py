"""The job YAML schema: every shipped job validates; broken ones fail naming file, key path and problem."""

from pathlib import Path

import pytest

from llavast.config.loader import ResolvedPipeline, load_job
from llavast.config.stage import StageJobConfig
from llavast.errors import ConfigError

JOBS = Path(__file__).resolve().parents[2] / "jobs"
ALL_YAMLS = sorted(JOBS.rglob("*.yaml"))


def test_jobs_folder_has_the_demo_and_the_paper_pipelines():
    names = {p.relative_to(JOBS).as_posix() for p in ALL_YAMLS}
    assert {"demo/pipeline.yaml", "llava_st_7b/pipeline.yaml"} <= names


@pytest.mark.parametrize("path", ALL_YAMLS, ids=lambda p: p.relative_to(JOBS).as_posix())
def test_every_shipped_job_validates(path):
    job = load_job(path)
    assert job.kind in ("stage", "synth", "index", "eval", "sweep", "pipeline")
    if job.kind == "sweep":  # its base stage jobs validate too
        from llavast.config.loader import load_sweep_stages

        assert all(stage.kind == "stage" for stage in load_sweep_stages(job))


def test_paper_run_shapes():
    pipeline = load_job(JOBS / "llava_st_7b" / "pipeline.yaml")
    assert isinstance(pipeline, ResolvedPipeline)
    stages = {n: j for n, j in pipeline.jobs.items() if isinstance(j, StageJobConfig)}
    global_batch = {j.train.stage: j.compute.num_workers * j.train.micro_batch_size * j.train.grad_accum_steps
                    for j in stages.values()}
    assert global_batch == {1: 384, 2: 192, 3: 192}
    for job in stages.values():
        assert job.compute.num_workers == 48 and job.compute.gpus_per_worker == 1
        assert job.compute.accelerator_type == "A100" and job.deepspeed.zero_stage == 2
        assert job.storage.root.startswith("s3://") and job.data.manifest.startswith("s3://")
    assert stages["stage1"].train.lr == 1e-3
    release_lr = {"stp": 2e-5, "lape": 2e-5, "embed_tokens": 2e-5}
    assert stages["stage2"].train.lr == 2e-4 and stages["stage2"].train.group_lr == release_lr
    for job in stages.values():  # the release's recipe details, each an option (docs/training.md)
        assert job.data.label_mask == "release" and job.data.frame_resize == "exact"
        assert job.model.overrides["lape_init"] == "release"
        assert "embed_tokens" in (job.train.trainable or ()) or job.train.stage == 1
    assert stages["stage2"].model.init_from == "node:stage1" and stages["stage3"].model.init_from == "node:stage2"


def _write(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


STAGE = """\
kind: stage
name: s1
model: {base: /models/base}
data: {manifest: s3://b/index}
train: {stage: 1}
tracking: {uri: http://127.0.0.1:5000, experiment: e, registered_model: m}
storage: {root: s3://b/runs}
"""


@pytest.mark.parametrize("patch, message", [
    ("trian: {stage: 1}\n", r"job.yaml: trian: Extra inputs are not permitted"),
    ("train: {stage: 4}\n", r"job.yaml: train.stage: Input should be 1, 2 or 3"),
    ("train: {stage: 1, lr: fast}\n", r"job.yaml: train.lr: Input should be a valid number"),
    ("train: {stage: 2}\n", r"set model.init_from"),
    ("compute: {num_workers: 0}\n", r"job.yaml: compute.num_workers: Input should be greater than 0"),
    ("deepspeed: {zero_stage: 2, offload_params: true}\n", r"offload_params needs zero_stage: 3"),
    ("env_vars: {AWS_SECRET_ACCESS_KEY: hunter2}\n", r"env_vars.AWS_SECRET_ACCESS_KEY: looks like a secret"),
    ("tracking: {uri: http://x, experiment: e, registered_model: m, token: abc}\n", r"tracking.token: looks like"),
    ("kind: tune\n", r"kind: unknown job kind 'tune'"),
    ("name: 'has space'\n", r"job.yaml: name: Value error, must be 1-100 letters"),
    ("pip: [torch]\nrequirements: req.txt\n", r"either pip .* or requirements"),
])
def test_broken_stage_yaml_fails_with_file_key_and_problem(tmp_path, patch, message):
    lines = STAGE.splitlines(keepends=True)
    for line in patch.splitlines(keepends=True):  # a patched top-level key replaces the job's own line
        at = [i for i, old in enumerate(lines) if old.startswith(line.split(":")[0] + ":")]
        if at:
            lines[at[0]] = line
        else:
            lines.append(line)
    text = "".join(lines)
    with pytest.raises(ConfigError, match=message):
        load_job(_write(tmp_path, text))


def test_secrets_as_env_references_are_accepted(tmp_path):
    job = load_job(_write(tmp_path, STAGE + "env_vars: {HF_TOKEN: '${env:HF_TOKEN}', NCCL_DEBUG: WARN}\n"))
    assert job.env_vars["HF_TOKEN"] == "${env:HF_TOKEN}"


def test_extends_and_set_overrides(tmp_path):
    _write(tmp_path, STAGE, "base.yaml")
    child = _write(tmp_path, "extends: base.yaml\nname: s1b\ntrain: {lr: 0.5}\n", "child.yaml")
    job = load_job(child, ["train.max_steps=7", "compute.num_workers=2", "model.overrides={sigma: 4}"])
    assert (job.name, job.train.stage, job.train.lr, job.train.max_steps) == ("s1b", 1, 0.5, 7)
    assert job.compute.num_workers == 2 and job.model.overrides == {"sigma": 4}
    with pytest.raises(ConfigError, match=r"--set train: expected key.path=value"):
        load_job(child, ["train"])
    with pytest.raises(ConfigError, match=r"child.yaml: train.max_steps: Input should be greater than 0"):
        load_job(child, ["train.max_steps=0"])


def test_extends_cycle_and_missing_parent(tmp_path):
    _write(tmp_path, "extends: b.yaml\n", "a.yaml")
    _write(tmp_path, "extends: a.yaml\n", "b.yaml")
    with pytest.raises(ConfigError, match="extends: cycle"):
        load_job(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match="extends: nope.yaml does not exist"):
        load_job(_write(tmp_path, "extends: nope.yaml\n", "c.yaml"))


def test_relative_paths_are_relative_to_the_yaml(tmp_path):
    (tmp_path / "sub").mkdir()
    job = load_job(_write(tmp_path / "sub", STAGE.replace("/models/base", "../models/base")))
    assert job.model.base == str(tmp_path / "models" / "base")
    assert job.data.manifest == "s3://b/index"


PIPELINE = """\
kind: pipeline
name: p
nodes:
  - {name: a, job: stage.yaml}
  - {name: b, job: stage.yaml, depends_on: [a], set: {train.stage: 2, model.init_from: "node:a"}}
"""


def test_pipeline_resolves_nodes_with_defaults_and_sets(tmp_path):
    _write(tmp_path, STAGE, "stage.yaml")
    text = PIPELINE + "defaults:\n  stage: {compute: {num_workers: 3}}\n"
    pipeline = load_job(_write(tmp_path, text, "pipeline.yaml"), ["nodes.b.set.train.max_steps=5"])
    assert pipeline.jobs["a"].compute.num_workers == pipeline.jobs["b"].compute.num_workers == 3
    assert pipeline.jobs["b"].train.stage == 2 and pipeline.jobs["b"].train.max_steps == 5


@pytest.mark.parametrize("nodes, message", [
    ("  - {name: a, job: stage.yaml, depends_on: [b]}\n  - {name: b, job: stage.yaml, depends_on: [a]}\n",
     "dependency cycle"),
    ("  - {name: a, job: stage.yaml, depends_on: [zz]}\n", "nodes.a.depends_on: no node named 'zz'"),
    ("  - {name: a, job: missing.yaml}\n", "nodes.a.job: missing.yaml does not exist"),
    ("  - {name: a, job: stage.yaml, spec: {kind: stage}}\n", "exactly one of job"),
    ("  - {name: a, job: stage.yaml}\n  - {name: b, job: stage.yaml, set: {train.stage: 2, "
     "model.init_from: 'node:a'}}\n", "names node 'a', which must also be in depends_on"),
    ("  - {name: a, job: stage.yaml, set: {train.stgae: 1}}\n", r"node a of .*: train.stgae: Extra inputs"),
])
def test_broken_pipelines(tmp_path, nodes, message):
    _write(tmp_path, STAGE, "stage.yaml")
    with pytest.raises(ConfigError, match=message):
        load_job(_write(tmp_path, "kind: pipeline\nname: p\nnodes:\n" + nodes, "pipeline.yaml"))


def test_docs_jobs_md_holds_the_current_generated_reference():
    from llavast.config.reference import reference

    docs = (Path(__file__).resolve().parents[2] / "docs" / "jobs.md").read_text()
    assert reference() in docs, "docs/jobs.md is stale: regenerate it with python -m llavast.config.reference"


def test_runtime_env_fields_do_not_change_the_fingerprint(tmp_path):
    from llavast.config.loader import fingerprint

    base = load_job(_write(tmp_path, STAGE))
    shipped = load_job(_write(tmp_path, STAGE + "working_dir: /tmp/ray/pkg\nenv_vars: {A: b}\ndescription: x\n",
                              "shipped.yaml"))
    assert fingerprint(base) == fingerprint(shipped)
    assert fingerprint(base) != fingerprint(load_job(_write(tmp_path, STAGE, "s.yaml"), ["train.lr=0.5"]))


def test_the_parent_run_a_stage_is_filed_under_does_not_change_its_fingerprint(tmp_path):
    """Two runs of one pipeline nest their stages under two parent runs: the stage must be the same run."""
    from llavast.config.loader import fingerprint

    base = load_job(_write(tmp_path, STAGE))
    nested = base.model_copy(update={"tracking": base.tracking.model_copy(update={"parent_run_id": "abc123"})})
    assert fingerprint(base) == fingerprint(nested)
    renamed = base.model_copy(update={"tracking": base.tracking.model_copy(update={"registered_model": "other"})})
    assert fingerprint(base) != fingerprint(renamed)
