"""The AWS cluster-launcher YAML passes Ray's own validation and describes the paper's 6 x p4d run.

`ray up` runs `prepare_config` (merge with the AWS defaults) and then `validate_config` (Ray's
ray-schema.json plus its cross-field checks) before it talks to AWS; the tests run the same two
functions from the installed Ray, offline.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

LAUNCHER = Path(__file__).resolve().parents[2] / "cluster" / "aws" / "p4d-cluster.yaml"


def load() -> dict[str, Any]:
    return yaml.safe_load(LAUNCHER.read_text())


def prepared(config: dict[str, Any]) -> dict[str, Any]:
    """What `ray up` validates: the YAML merged with Ray's AWS defaults."""
    return prepare_config(copy.deepcopy(config))


def test_launcher_yaml_passes_rays_validation():
    validate_config(prepared(load()))


@pytest.mark.parametrize("mutate, error, match", [
    (lambda c: c.__setitem__("max_worker", c.pop("max_workers")), jsonschema.ValidationError, "'max_worker'"),
    (lambda c: c["available_node_types"]["a100"].__setitem__("min_worker", 6), jsonschema.ValidationError,
     "'min_worker'"),
    (lambda c: c["available_node_types"]["a100"]["resources"].__setitem__("GPU", "8"),
     jsonschema.ValidationError, "'8' is not of type 'integer'"),
    (lambda c: c["docker"].__setitem__("imagee", "x"), jsonschema.ValidationError, "'imagee'"),
    (lambda c: c.__setitem__("head_node_type", "ray.head.default"), ValueError, "head_node_type"),
    (lambda c: c.__setitem__("max_workers", 5), ValueError, "sum of `min_workers`"),
], ids=["misspelled-max_workers", "misspelled-min_workers", "gpu-count-as-string",
        "misspelled-docker-key", "unknown-head-type", "max-below-min-workers"])
def test_rays_validation_rejects_broken_configs(mutate, error, match):
    config = load()
    mutate(config)
    with pytest.raises(error, match=match):
        validate_config(prepared(config))


def test_head_has_no_gpus_and_schedules_nothing():
    config = prepared(load())
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"] == {"CPU": 0, "GPU": 0}
    assert not head["node_config"]["InstanceType"].startswith(("p", "g"))  # not a GPU instance family


def test_six_p4d_workers_with_eight_a100_each():
    config = prepared(load())
    workers = {k: v for k, v in config["available_node_types"].items() if k != config["head_node_type"]}
    assert list(workers) == ["a100"]
    a100 = workers["a100"]
    assert a100["node_config"]["InstanceType"] == "p4d.24xlarge"
    assert a100["min_workers"] == a100["max_workers"] == config["max_workers"] == 6
    assert a100["resources"]["GPU"] == 8
    assert a100["resources"]["accelerator_type:A100"] == 1


def test_nodes_install_the_platform_with_the_same_ray():
    config = prepared(load())
    assert config["docker"]["image"] == f"rayproject/ray:{ray.__version__}-py311-gpu"
    setup = " && ".join(config["setup_commands"])
    assert "torch==2.13.0" in setup and "-r /tmp/requirements-gpu.lock" in setup
    assert "grep -v '^torch==' ~/llava-st-platform/requirements.lock" in setup  # the lock, less its CPU torch
    assert "--no-deps --no-build-isolation ~/llava-st-platform" in setup  # nothing outside the lock
    assert config["file_mounts"] == {"~/llava-st-platform": "."}
    # Ray merges the common setup into each node kind's: both kinds get the platform.
    assert config["head_setup_commands"] == config["worker_setup_commands"] == config["setup_commands"]


def test_workers_start_with_nccl_env():
    start = " ".join(prepared(load())["worker_start_ray_commands"])
    env = dict(re.findall(r"\b(NCCL_[A-Z_]+)=(\S+?);?(?=\s|$)", start))
    assert env["NCCL_DEBUG"] == "WARN"
    assert env["NCCL_SOCKET_IFNAME"] and env["NCCL_IB_DISABLE"] in {"0", "1"}
    assert start.index("NCCL_SOCKET_IFNAME") < start.index("ray start")  # set before Ray starts
