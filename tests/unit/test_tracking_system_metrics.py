"""System metrics never fail a run: a monitor that cannot start is a warning, and 0 turns them off."""

from __future__ import annotations

import logging
import sys

import pytest

from llavast.tracking import node_description, system_metrics

UNREACHABLE = "http://127.0.0.1:9"  # never asked: the monitor fails before it talks to a server


def test_a_monitor_that_cannot_start_only_warns(monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """psutil missing: MLflow's monitor cannot be imported; the block runs and ends as if nothing happened."""
    for module in ("psutil", "mlflow.system_metrics.metrics.cpu_monitor",
                   "mlflow.system_metrics.system_metrics_monitor"):
        monkeypatch.setitem(sys.modules, module, None)  # `import` of it raises ImportError
    ran = False
    with caplog.at_level(logging.WARNING, logger="llavast.tracking.system_metrics"):
        with system_metrics(UNREACHABLE, "run-id", "node0", interval_s=1.0,
                            description=node_description()) as node:
            assert node is not None and not node.wait_started(30)
            ran = True
    assert ran
    assert any("no system metrics for node node0 in MLflow run run-id" in r.getMessage() for r in caplog.records)


def test_an_interval_of_zero_turns_them_off() -> None:
    with system_metrics(UNREACHABLE, "run-id", "node0", interval_s=0) as node:
        assert node is None


def test_a_failing_block_still_stops_the_monitor_and_raises_its_own_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow.system_metrics.system_metrics_monitor", None)
    with pytest.raises(ValueError, match="training failed"):
        with system_metrics(UNREACHABLE, "run-id", "node0", interval_s=1.0):
            raise ValueError("training failed")


def test_the_node_description_names_host_cpus_memory_and_gpus() -> None:
    text = node_description(["NVIDIA H100 80GB HBM3"] * 8)
    assert text.startswith("host=") and "cpus=" in text and "memory_gb=" in text
    assert "gpus=8x NVIDIA H100 80GB HBM3" in text
    assert "gpus=0" in node_description()
