"""`llavast data synth` + `llavast data index` as a user runs them: the installed console script, s3://."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llavast import storage

pytestmark = pytest.mark.integration
LLAVAST = str(Path(sys.executable).with_name("llavast"))


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([LLAVAST, *args], capture_output=True, text=True, env=env, timeout=300)


def test_cli_synth_and_index_over_s3(s3_server, s3_bucket: str) -> None:
    env = {**os.environ, "AWS_ENDPOINT_URL_S3": s3_server.endpoint_url}
    root = storage.join(s3_bucket, "st")
    synth = run("data", "synth", "--out", root, "--videos", "3", "--images", "2", env=env)
    assert synth.returncode == 0, synth.stderr
    out = storage.join(s3_bucket, "index")
    index = run("data", "index", storage.join(root, "mixtures", "stage2.yaml"), "--out", out, "--num-cpus", "1",
                env=env)
    assert index.returncode == 0, index.stderr
    summary = json.loads(storage.read_text(storage.join(out, "summary.json"), s3_server.options))
    assert f"{summary['total']} samples indexed" in index.stdout
    assert set(summary["by_task"]) == {"TVG", "DVC", "TR", "REC", "DGC", "RC"}

    bad = run("data", "index", storage.join(root, "mixtures", "nope.yaml"), "--out", out, "--num-cpus", "1", env=env)
    assert bad.returncode == 1 and bad.stderr.splitlines()[-1].startswith("error: ") and "does not exist" in bad.stderr
    assert "Traceback" not in bad.stderr
