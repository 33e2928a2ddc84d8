"""Training callbacks named in the job YAML: resolved by import path, refused in one line when they cannot be."""

from __future__ import annotations

import pytest

from llavast.config.loader import parse_job
from llavast.errors import ConfigError
from llavast.train import callbacks
from tests.fixtures.callbacks import SampleLog, spec


def _train(**extra: object) -> dict:
    return {"kind": "stage", "name": "cb", "model": {"base": "/m"}, "data": {"manifest": "/d"},
            "train": {"stage": 1, **extra}, "tracking": {"uri": "http://h", "experiment": "e", "registered_model": "m"},
            "storage": {"root": "/r"}}


def test_a_spec_builds_its_class_with_its_args() -> None:
    job = parse_job(_train(callbacks=[spec("SampleLog", directory="/tmp/samples")]))
    (built,) = callbacks.build(job.train.callbacks)
    assert isinstance(built, SampleLog) and str(built.directory) == "/tmp/samples"


@pytest.mark.parametrize(("path", "message"), [
    ("no_such_package.audit:SampleAudit", "train.callbacks: cannot import no_such_package.audit:SampleAudit"),
    ("tests.fixtures.callbacks:NoSuchClass", "train.callbacks: cannot import tests.fixtures.callbacks:NoSuchClass"),
    ("llavast.errors:ConfigError", "train.callbacks: llavast.errors:ConfigError is not a subclass of "
                                   "llavast.train.callbacks.Callback"),
])
def test_a_callback_that_cannot_be_used_is_one_line(path: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        callbacks.resolve(path)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_a_path_without_a_class_is_refused_when_the_job_loads() -> None:
    with pytest.raises(ConfigError, match=r"train\.callbacks\.0\.path"):
        parse_job(_train(callbacks=[{"path": "mypackage.audit"}]))
