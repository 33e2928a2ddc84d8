"""Secrets: literal credentials refused by name and by shape, `${env:NAME}` resolved once on the driver and
handed to the workers, and nothing logged or printed with a credential in it."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import yaml

from llavast.config.loader import load_job
from llavast.config.secrets import (
    REDACTED,
    check_secrets,
    redact,
    redact_config,
    referenced_names,
    resolve_env,
    secret_shape,
    split_env,
)
from llavast.errors import ConfigError
from llavast.train.trainer import run_config

AWS_KEY_ID = "AKIAZ3QWERTYUIOP4XYZ"
TOKEN = "tk_9fQ2xLm7Rb4Vn8Kp1Zs6Hd3Wj0Yc5Ge"
PASSWORD = "Pw-0rd-7h1s"


def _write(tmp_path: Path, job: dict) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def _stage(**top: object) -> dict:
    job = {"kind": "stage", "name": "s", "model": {"base": "/m"}, "data": {"manifest": "/d"}, "train": {"stage": 1},
           "tracking": {"uri": "http://127.0.0.1:5000", "experiment": "e", "registered_model": "m"},
           "storage": {"root": "/tmp/r"}}
    for section, values in top.items():
        job[section] = {**job.get(section, {}), **values} if isinstance(values, dict) else values
    return job


@pytest.mark.parametrize(("section", "values", "path", "shape"), [
    ("env_vars", {"MY_SERVICE_CONF": AWS_KEY_ID}, "env_vars.MY_SERVICE_CONF", "an AWS access key id"),
    ("env_vars", {"DATABASE_URL": f"postgresql://app:{PASSWORD}@db:5432/runs"}, "env_vars.DATABASE_URL",
     "a URL with a password"),
    ("env_vars", {"SERVICE_CONF": TOKEN}, "env_vars.SERVICE_CONF", "a high-entropy token"),
    ("tracking", {"uri": f"https://alice:{PASSWORD}@mlflow.example.com"}, "tracking.uri", "a URL with a password"),
    ("storage", {"endpoint_url": f"http://minio:{PASSWORD}@10.0.0.5:9000"}, "storage.endpoint_url",
     "a URL with a password"),
    ("env_vars", {"API_KEY": "short"}, "env_vars.API_KEY", "a secret written as a literal"),  # by name, as before
    ("env_vars", {"HF_TOKEN": "short"}, "env_vars.HF_TOKEN", "a secret written as a literal"),
    ("env_vars", {"token": "short"}, "env_vars.token", "a secret written as a literal"),
])
def test_literal_secrets_are_refused_by_shape_and_by_name(section, values, path, shape, tmp_path):
    job_file = _write(tmp_path, _stage(**{section: values}))
    with pytest.raises(ConfigError) as caught:
        load_job(job_file, [])
    message = str(caught.value)
    assert message.startswith(f"{job_file}: {path}: ") and shape in message and "${env:NAME}" in message
    assert not any(secret in message for secret in (AWS_KEY_ID, TOKEN, PASSWORD))  # the error never repeats it


@pytest.mark.parametrize("value", [
    "${env:AWS_SECRET_ACCESS_KEY}", "cpu", "1", "s3://bucket/st-align/index/stage1", "/data/models/llava-ov-7b-si",
    "https://mlflow.example.com:5000", "llava-st-7b-stage2-0123abcd", "INFO", "eu-central-1",
])
def test_ordinary_values_and_references_pass(value):
    check_secrets({"env_vars": {"SOME_SETTING": value}, "tracking": {"uri": "http://u@host:5000"}}, "job.yaml")
    assert secret_shape(value, env_value=True) is None


def test_keys_that_only_contain_the_word_tokens_are_not_secrets():
    """Counts and modules named after tokens are settings, not credentials."""
    check_secrets({"train": {"group_lr": {"embed_tokens": 2e-5}}, "eval": {"max_new_tokens": 1024},
                   "model": {"tokenizer": "/m/tok"}}, "job.yaml")


def test_resolve_env_reads_each_reference_from_the_given_environment():
    env_vars = {"AWS_SECRET_ACCESS_KEY": "${env:PROBE_SECRET}", "MODE": "fast"}
    assert resolve_env(env_vars, "job.yaml", {"PROBE_SECRET": "v1"}) == {"AWS_SECRET_ACCESS_KEY": "v1", "MODE": "fast"}
    assert referenced_names(env_vars) == ["PROBE_SECRET"]
    # the job's own variable set in the environment is no substitute for the one it references
    with pytest.raises(ConfigError, match=r"job.yaml: env_vars.AWS_SECRET_ACCESS_KEY: references "
                                          r"\$\{env:PROBE_SECRET\} but PROBE_SECRET is not set here"):
        resolve_env(env_vars, "job.yaml", {"AWS_SECRET_ACCESS_KEY": "the user's own"})


def test_references_travel_as_a_secret_env_never_in_rays_runtime_env(tmp_path, monkeypatch):
    job = load_job(_write(tmp_path, _stage(env_vars={"AWS_SECRET_ACCESS_KEY": "${env:PROBE_SECRET}",
                                                     "NCCL_DEBUG": "WARN"})), [])
    plain, secrets = split_env(job.env_vars, "job.yaml", {"PROBE_SECRET": "the-real-value"})
    env = run_config(job, "run", plain).worker_runtime_env["env_vars"]
    assert env == {"NCCL_DEBUG": "WARN", "DS_ACCELERATOR": "cpu"}  # Ray logs runtime envs: no value of a reference
    assert secrets.values == {"AWS_SECRET_ACCESS_KEY": "the-real-value"}
    assert "the-real-value" not in repr(secrets) + str(secrets) + repr({"secrets": secrets})  # Ray Train records str()
    assert pickle.loads(pickle.dumps(secrets)) == secrets  # it crosses to the workers as an argument
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    secrets.apply()
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == "the-real-value"
    assert job.env_vars["AWS_SECRET_ACCESS_KEY"] == "${env:PROBE_SECRET}"  # the config never holds the value


def test_logged_config_has_env_names_only_and_no_url_passwords():
    dump = {"env_vars": {"AWS_SECRET_ACCESS_KEY": "${env:X}", "MODE": "fast"},
            "tracking": {"uri": f"https://alice:{PASSWORD}@mlflow.example.com/x"}, "train": {"lr": 1e-4}}
    logged = redact_config(dump)
    assert logged["env_vars"] == {"AWS_SECRET_ACCESS_KEY": REDACTED, "MODE": REDACTED}
    assert logged["tracking"]["uri"] == f"https://alice:{REDACTED}@mlflow.example.com/x"
    assert logged["train"] == {"lr": 1e-4}
    assert redact(f"MLflow at https://alice:{PASSWORD}@h:5000 and s3://b/k") == \
        f"MLflow at https://alice:{REDACTED}@h:5000 and s3://b/k"
