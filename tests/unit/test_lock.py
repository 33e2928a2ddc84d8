"""requirements.lock: exact pins for everything `make` installs, consistent with pyproject.toml's ranges, and
(under `make test`) the very set this venv holds."""

from __future__ import annotations

import re
import sysconfig
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$")


def locked() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"requirements.lock: not an exact pin: {line!r}"
        pins[canonicalize_name(match[1])] = Version(match[2])
    return pins


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["dev"]]]


def test_every_declared_dependency_is_locked_within_its_range():
    pins = locked()
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is in pyproject.toml but not in requirements.lock: run make lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, outside pyproject.toml's {requirement}: run make lock")


def test_torch_is_the_same_release_everywhere_it_is_installed():
    torch = locked()["torch"]
    assert torch.public == "2.13.0"  # the CPU wheel on these machines' disk: 2.13.0+cpu
    for path in ("cluster/image/Dockerfile", "cluster/aws/p4d-cluster.yaml", "constraints.txt"):
        assert f"torch=={torch.public}" in (ROOT / path).read_text(), path


@pytest.mark.installed_from_lock
def test_this_venv_holds_exactly_the_locked_set():
    """`make install` installs the lock and the project with --no-deps: nothing more, nothing else."""
    site = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})  # not Ray's vendored copies
    installed = {canonicalize_name(d.metadata["Name"]): Version(d.version) for d in metadata.distributions(path=site)}
    installed.pop("llava-st-platform")
    pins = locked()
    assert {n: str(v) for n, v in installed.items() if pins.get(n) != v} == {}
    assert sorted(set(pins) - set(installed)) == []
