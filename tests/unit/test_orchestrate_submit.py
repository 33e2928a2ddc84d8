"""What `llavast submit` sends to the Ray Jobs API, built before any cluster is contacted: the entrypoint (the
same `llavast run` a user types), the runtime_env (working dir, env refs resolved here, pip), the job's name."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from llavast.config.loader import parse_job
from llavast.errors import ConfigError
from llavast.orchestrate.submit import EXCLUDES, prepare


def _job(working_dir: Path, **common: object) -> object:
    return parse_job({"kind": "stage", "name": "shipped", "model": {"base": "/m"}, "data": {"manifest": "/d"},
                      "train": {"stage": 1}, "storage": {"root": "/tmp/r"},
                      "tracking": {"uri": "http://127.0.0.1:5000", "experiment": "e", "registered_model": "m"},
                      "working_dir": str(working_dir), **common})


def test_entrypoint_runtime_env_and_resolved_env_refs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", "s3cr3t value")
    job_file = tmp_path / "jobs" / "stage1.yaml"
    job = _job(tmp_path, env_vars={"AWS_SECRET_ACCESS_KEY": "${env:MY_KEY}", "LEVEL": "debug"}, pip=["einops"])
    sub = prepare(job, job_file, ["train.lr=1e-4", "name=with space"], from_node="stage2")
    assert shlex.split(sub.entrypoint) == ["llavast", "run", "jobs/stage1.yaml", "--set", "train.lr=1e-4",
                                           "--set", "name=with space", "--from", "stage2"]
    assert sub.name == "shipped" and sub.source == job_file
    assert sub.runtime_env == {
        "working_dir": str(tmp_path.resolve()), "excludes": EXCLUDES, "pip": ["einops"],
        "env_vars": {"PYTHONPATH": "platform:.", "AWS_SECRET_ACCESS_KEY": "s3cr3t value", "LEVEL": "debug",
                     "MY_KEY": "s3cr3t value"}}  # the referenced name too: the cluster's driver resolves the YAML


def test_requirements_file_is_resolved_in_the_working_dir(tmp_path: Path) -> None:
    sub = prepare(_job(tmp_path, requirements="reqs.txt"), tmp_path / "j.yaml", [], only="stage3")
    assert sub.runtime_env["pip"] == str((tmp_path / "reqs.txt").resolve())
    assert shlex.split(sub.entrypoint)[-2:] == ["--only", "stage3"]


def test_an_unset_env_ref_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_HERE", raising=False)
    job = _job(tmp_path, env_vars={"AWS_ACCESS_KEY_ID": "${env:NOT_SET_HERE}"})
    with pytest.raises(ConfigError, match=r"j\.yaml: env_vars\.AWS_ACCESS_KEY_ID: .*NOT_SET_HERE is not set"):
        prepare(job, tmp_path / "j.yaml", [])


def test_the_job_file_must_be_inside_the_shipped_working_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be inside the working dir"):
        prepare(_job(tmp_path / "wd"), tmp_path / "elsewhere" / "j.yaml", [])
