"""`compute` -> Ray Train V2 `ScalingConfig`: workers, resources and the placement strategy of the worker group.

The placement strategy decides whether the workers' placement group may share a node (PACK, SPREAD) or
must not (STRICT_SPREAD: one worker per node, e.g. one 8-GPU worker per node, or a multi-node test).
"""

from __future__ import annotations

import pytest

from llavast.config.loader import parse_job
from llavast.config.stage import ComputeSection
from llavast.errors import ConfigError
from llavast.train.trainer import scaling_config


def _stage(compute: dict) -> dict:
    return {"kind": "stage", "name": "s", "model": {"base": "/m"}, "data": {"manifest": "/d"},
            "train": {"stage": 1}, "compute": compute,
            "tracking": {"uri": "http://127.0.0.1:5000", "experiment": "e", "registered_model": "m"},
            "storage": {"root": "/tmp/r"}}


def test_placement_strategy_defaults_to_pack() -> None:
    assert ComputeSection().placement_strategy == "PACK"
    assert scaling_config(ComputeSection()).placement_strategy == "PACK"


@pytest.mark.parametrize("strategy", ["PACK", "SPREAD", "STRICT_SPREAD", "STRICT_PACK"])
def test_placement_strategy_reaches_the_scaling_config(strategy: str) -> None:
    compute = ComputeSection(num_workers=2, cpus_per_worker=0.5, placement_strategy=strategy)
    scaling = scaling_config(compute)
    assert scaling.placement_strategy == strategy
    assert scaling.num_workers == 2
    assert scaling.resources_per_worker == {"CPU": 0.5}


def test_unknown_placement_strategy_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"job\.yaml: compute\.placement_strategy: .*STRICT_SPREAD"):
        parse_job(_stage({"num_workers": 2, "placement_strategy": "spread-ish"}), source="job.yaml")
