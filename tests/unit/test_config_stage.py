"""The stage job config: YAML loading, defaults, errors naming file and key path, fingerprints."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from llavast.config.loader import fingerprint, load_stage_job, parse_job
from llavast.config.stage import StageJobConfig
from llavast.errors import ConfigError

STAGE2_YAML = """\
kind: stage
name: demo
model:
  base: /models/llava-onevision-7b
  init_from: models:/llavast-demo@stage1
data:
  manifest: s3://bucket/index
train:
  stage: 2
  lr: 2.0e-5
  group_lr: {lora: 2.0e-4}
  micro_batch_size: 2
  grad_accum_steps: 4
  max_steps: 100
tracking:
  uri: http://127.0.0.1:5000
  experiment: llavast
  registered_model: llavast-demo
storage:
  root: s3://bucket/runs
  endpoint_url: http://127.0.0.1:9000
"""


def _write(tmp_path: Path, text: str, name: str = "stage2.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_stage2_yaml_loads_with_defaults(tmp_path: Path) -> None:
    job = load_stage_job(_write(tmp_path, STAGE2_YAML))
    assert isinstance(job, StageJobConfig)
    assert job.train.stage == 2 and job.alias == "stage2"
    assert job.train.group_lr == {"lora": 2e-4} and job.train.lr == 2e-5
    assert job.train.trainable is None and job.train.lape is None  # the model's policy decides
    assert job.deepspeed.zero_stage == 2 and job.deepspeed.precision == "auto"
    assert (job.lora.r, job.lora.alpha, job.lora.dropout) == (128, 256.0, 0.05)  # the release's LoRA
    assert job.storage.options.endpoint_url == "http://127.0.0.1:9000"
    assert job.compute.use_gpu is False
    with pytest.raises(pydantic.ValidationError):
        job.train.stage = 3  # type: ignore[misc]  # configs are frozen


@pytest.mark.parametrize(("old", "new", "message"), [
    ("  lr: 2.0e-5", "  lrr: 2.0e-5", "train.lrr: Extra inputs are not permitted"),
    ("  micro_batch_size: 2", "  micro_batch_size: two", "train.micro_batch_size: Input should be a valid integer"),
    ("  stage: 2", "  stage: 4", "train.stage: Input should be 1, 2 or 3"),
    ("  init_from: models:/llavast-demo@stage1\n", "", "set model.init_from"),
    ("  endpoint_url: http://127.0.0.1:9000", "  endpoint_url: 127.0.0.1:9000", "storage.endpoint_url"),
    ("name: demo", "name: a/b", "name: Value error, must be 1-100 letters"),
    ("kind: stage", "kind: pipelin", "kind: unknown job kind 'pipelin'"),
])
def test_errors_name_the_file_and_the_key_path(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in STAGE2_YAML
    path = _write(tmp_path, STAGE2_YAML.replace(old, new))
    with pytest.raises(ConfigError) as err:
        load_stage_job(path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


def test_offload_params_needs_zero3(tmp_path: Path) -> None:
    path = _write(tmp_path, STAGE2_YAML + "deepspeed:\n  zero_stage: 2\n  offload_params: true\n")
    with pytest.raises(ConfigError, match="deepspeed: Value error, offload_params needs zero_stage: 3"):
        load_stage_job(path)


def test_yaml_syntax_errors_name_line_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path, STAGE2_YAML.replace("  stage: 2", "  stage: [2"))
    with pytest.raises(ConfigError, match=rf"^{path}: line \d+, column \d+: invalid YAML"):
        load_stage_job(path)
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_stage_job(_write(tmp_path, "- a\n- b\n", "list.yaml"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_stage_job(tmp_path / "missing.yaml")


def test_fingerprint_ignores_layout_and_omitted_defaults(tmp_path: Path) -> None:
    base = load_stage_job(_write(tmp_path, STAGE2_YAML))
    explicit = STAGE2_YAML + "# the default, written out\ndeepspeed:\n  zero_stage: 2\n"
    assert fingerprint(load_stage_job(_write(tmp_path, explicit, "b.yaml"))) == fingerprint(base)
    raw = base.model_dump(mode="json")
    shuffled = {key: raw[key] for key in reversed(list(raw))}
    assert fingerprint(parse_job(shuffled)) == fingerprint(base)
    changed = load_stage_job(_write(tmp_path, STAGE2_YAML.replace("max_steps: 100", "max_steps: 101"), "c.yaml"))
    assert fingerprint(changed) != fingerprint(base)
    assert len(fingerprint(base)) == 64
    observed = {**raw, "tracking": {**raw["tracking"], "system_metrics_interval_s": 1.0}}  # what it observes only
    assert fingerprint(parse_job(observed)) == fingerprint(base)


@pytest.mark.parametrize(("overrides", "message"), [
    ("{M_t: 50}", "model.overrides: Value error, M_t is not a llava_st setting: did you mean m_t?"),
    ("{N: 16}", "model.overrides: Value error, N is not a llava_st setting: did you mean num_frames?"),
    ("{m_t: fifty}", "m_t: must be an integer, got 'fifty'"),
    ("{m_t: 1}", "m_t: must be >= 2"),
    ("{k1: 0}", "k1: must be >= 1"),
    ("{lape_init: bogus}", "lape_init: must be one of 'small', 'release', 'sincos', got 'bogus'"),
    ("{lape_enabled: 1}", "lape_enabled: must be true or false, got 1"),
    ("{k1: 6, k2: 4}", "k2 must divide k1 (k1 % k2 == 0): k1=6, k2=4"),
    ("{num_frames: 16, sigma: 5}", "sigma must divide N (num_frames % sigma == 0): num_frames=16, sigma=5"),
])
def test_model_overrides_are_typed_settings_of_the_model(tmp_path: Path, overrides: str, message: str) -> None:
    """`model.overrides` takes the model's declared settings only, each of its type and range, and the packer's
    rules between the ones given (W1 % k1 needs the checkpoint's W1: the preflight checks it)."""
    path = _write(tmp_path, STAGE2_YAML.replace("  init_from:", f"  overrides: {overrides}\n  init_from:"))
    with pytest.raises(ConfigError) as err:
        load_stage_job(path)
    assert message in str(err.value)


def test_valid_overrides_and_an_unknown_model(tmp_path: Path) -> None:
    path = _write(tmp_path, STAGE2_YAML.replace("  init_from:", "  overrides: {m_t: 50, k1: 9, k2: 3, num_frames: 20, "
                                                               "sigma: 4, lape_init: sincos}\n  init_from:"))
    assert load_stage_job(path).model.overrides["m_t"] == 50
    path = _write(tmp_path, STAGE2_YAML.replace("  base:", "  name: llava_sx\n  base:"))
    with pytest.raises(ConfigError, match="model.name: Value error, unknown model 'llava_sx'; registered models"):
        load_stage_job(path)


@pytest.mark.parametrize("init_from", ["llava-st-demo@stage1", "runs/abc", "llava-st-demo/3"])
def test_init_from_must_be_a_registry_ref_or_a_uri(tmp_path: Path, init_from: str) -> None:
    path = _write(tmp_path, STAGE2_YAML.replace("models:/llavast-demo@stage1", init_from))
    with pytest.raises(ConfigError, match=r"model.init_from: Value error, .*models:/<name>@<alias>"):
        load_stage_job(path)
    for good in ("models:/m@stage1", "models:/m/3", "s3://b/artifacts/run", "file:///runs/a", "/runs/a",
                 "node:stage1", "mlflow-artifacts:/1/abc/artifacts/artifact"):
        assert load_stage_job(_write(tmp_path, STAGE2_YAML.replace("models:/llavast-demo@stage1", good)))


def test_duplicate_yaml_keys_are_refused_with_both_lines(tmp_path: Path) -> None:
    path = _write(tmp_path, STAGE2_YAML.replace("  lr: 2.0e-5\n", "  lr: 2.0e-5\n  lr: 1.0e-4\n"))
    with pytest.raises(ConfigError, match=rf"^{path}: line 11: duplicate key 'lr' \(first on line 10\)"):
        load_stage_job(path)


def test_tracking_uri_comes_from_the_environment_when_the_job_leaves_it_out(tmp_path: Path, monkeypatch) -> None:
    """As MLflow, HF Trainer and accelerate do: no `tracking.uri` -> MLFLOW_TRACKING_URI of the process that loads
    the job (the driver); `${env:NAME}` works in it too."""
    without = STAGE2_YAML.replace("  uri: http://127.0.0.1:5000\n", "")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.cluster:5000")
    assert load_stage_job(_write(tmp_path, without)).tracking.uri == "http://mlflow.cluster:5000"
    monkeypatch.setenv("TEAM_MLFLOW", "https://mlflow.team.example")
    ref = STAGE2_YAML.replace("http://127.0.0.1:5000", "${env:TEAM_MLFLOW}")
    assert load_stage_job(_write(tmp_path, ref)).tracking.uri == "https://mlflow.team.example"
    assert load_stage_job(_write(tmp_path, STAGE2_YAML)).tracking.uri == "http://127.0.0.1:5000"  # literal wins
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    unresolved = load_stage_job(_write(tmp_path, without))  # validates (a submitter need not know the server)
    assert unresolved.tracking.uri is None


@pytest.mark.parametrize(("uri", "message"), [
    ("127.0.0.1:5000", "tracking.uri: Value error, '127.0.0.1:5000' has no scheme"),
    ("mlflow.example.org", "tracking.uri: Value error, 'mlflow.example.org' has no scheme"),
    ("ftp://mlflow.example.org", "tracking.uri: Value error, 'ftp://mlflow.example.org': scheme ftp is not"),
])
def test_a_tracking_uri_without_a_known_scheme_is_refused(tmp_path: Path, uri: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_stage_job(_write(tmp_path, STAGE2_YAML.replace("http://127.0.0.1:5000", uri)))
    assert message in str(err.value) and "\n" not in str(err.value)
