"""Preflight: a stage with one bad reference fails in one line that names the field, within seconds, before a
Ray cluster starts and before an MLflow run exists."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from llavast.config.loader import load_stage_job
from llavast.errors import LlavastError
from llavast.services import MlflowServer, free_port
from llavast.train.preflight import preflight
from model_zoo.llava_st import build_tiny_checkpoint

pytestmark = pytest.mark.integration
LLAVAST = str(Path(sys.executable).with_name("llavast"))
RAY_SESSIONS = Path("/tmp/ray")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real base checkpoint and a finished index, made the way a user makes them."""
    tmp = tmp_path_factory.mktemp("preflight")
    base = build_tiny_checkpoint(tmp / "base")
    for args in (["data", "synth", "--out", str(tmp / "st"), "--videos", "2", "--images", "2",
                  "--benchmark-videos", "0"],
                 ["data", "index", str(tmp / "st" / "mixtures" / "stage1.yaml"), "--out", str(tmp / "index"),
                  "--num-cpus", "1"]):
        done = subprocess.run([LLAVAST, *args], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    (tmp / "a-file").write_text("not a directory\n")
    return {"base": base, "index": tmp / "index", "tmp": tmp}


def _job(inputs: dict[str, Path], mlflow: MlflowServer, name: str, **changes: object) -> dict:
    job = {"kind": "stage", "name": name, "model": {"base": str(inputs["base"])},
           "data": {"manifest": str(inputs["index"])}, "train": {"stage": 1, "max_steps": 2},
           "tracking": {"uri": mlflow.uri, "experiment": f"{name}-exp", "registered_model": name},
           "storage": {"root": str(inputs["tmp"] / "runs" / name)}}
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        job[section][key] = value
    return job


CASES = {
    "tracking.uri": lambda i: {"tracking__uri": f"http://127.0.0.1:{free_port()}"},
    "model.base": lambda i: {"model__base": str(i["tmp"] / "no-such-model")},
    "model.overrides": lambda i: {"model__overrides": {"k1": 5}},  # the tiny checkpoint's W1 is 27
    "data.manifest": lambda i: {"data__manifest": str(i["tmp"] / "st")},  # a dataset, not a finished index
    "model.init_from": lambda i: {"model__init_from": "models:/no-such-model@stage1"},
    "storage.root": lambda i: {"storage__root": str(i["tmp"] / "a-file" / "runs")},
    "train.callbacks": lambda i: {"train__callbacks": [{"path": "no_such_package.audit:SampleAudit"}]},
}
EXPECTED = {"tracking.uri": "tracking.uri", "model.base": "model.base: ", "data.manifest": "data.manifest: ",
            "model.overrides": "model.overrides: k1 must divide the feature grid W1: W1=27 is not divisible by k1=5",
            "model.init_from": "init_from 'models:/no-such-model@stage1' cannot be resolved",
            "storage.root": "storage.root: ",
            "train.callbacks": "train.callbacks: cannot import no_such_package.audit:SampleAudit"}


@pytest.mark.parametrize("field", list(CASES))
def test_one_bad_reference_fails_fast_in_one_line_before_ray(field: str, inputs: dict[str, Path],
                                                             mlflow_server: MlflowServer, tmp_path: Path) -> None:
    name = f"pf-{field.replace('.', '-').replace('_', '-')}"
    path = tmp_path / "stage.yaml"
    path.write_text(yaml.safe_dump(_job(inputs, mlflow_server, name, **CASES[field](inputs))))

    started = time.monotonic()
    with pytest.raises(LlavastError) as caught:
        preflight(load_stage_job(path))
    assert time.monotonic() - started < 5.0
    assert EXPECTED[field] in str(caught.value) and "\n" not in str(caught.value)

    sessions = set(RAY_SESSIONS.glob("session_2*"))
    result = subprocess.run([LLAVAST, "run", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    probe = re.compile(r"\.llavast-preflight-[0-9a-f]+")  # each run writes its own probe object
    lines = [probe.sub("PROBE", line) for line in result.stderr.splitlines() if line.strip()]
    assert lines == [probe.sub("PROBE", f"error: {caught.value}")]
    assert "Traceback" not in result.stdout + result.stderr
    assert set(RAY_SESSIONS.glob("session_2*")) == sessions  # no Ray was started
    from llavast.tracking import Tracker

    client = Tracker(mlflow_server.uri).client
    experiment = client.get_experiment_by_name(f"{name}-exp")
    assert experiment is None or client.search_runs([experiment.experiment_id]) == []  # no run left RUNNING


def test_a_sound_job_passes_and_leaves_nothing_behind(inputs: dict[str, Path], mlflow_server: MlflowServer,
                                                     tmp_path: Path) -> None:
    path = tmp_path / "stage.yaml"
    path.write_text(yaml.safe_dump(_job(inputs, mlflow_server, "pf-sound")))
    checked = preflight(load_stage_job(path))
    assert checked.parent is None and checked.tracker.uri == mlflow_server.uri
    assert list((inputs["tmp"] / "runs" / "pf-sound").iterdir()) == []  # the write probe was removed
