"""The learning benchmark's margin: a paired bootstrap over samples of the model's lead over a baseline."""

from __future__ import annotations

import pytest

from benchmarks.learning import margin


def test_margin_is_the_mean_paired_difference_with_its_bootstrap_interval():
    model = {str(i): 1.0 for i in range(50)}
    baseline = {str(i): 0.0 for i in range(50)}
    assert margin(model, baseline, "mean") == {"margin": 100.0, "ci_low": 100.0, "ci_high": 100.0, "samples": 50,
                                               "beats": True}
    mixed = {str(i): 0.6 if i % 2 else 0.4 for i in range(200)}  # half the samples pass the 0.5 bar
    result = margin(mixed, {str(i): 0.45 for i in range(200)}, ">=0.5")
    assert result["margin"] == pytest.approx(50.0) and result["beats"]
    assert 40.0 < result["ci_low"] < 50.0 < result["ci_high"] < 60.0  # +-1.96 sd of a share of 200: about 7 points
    tied = margin({"a": 0.3, "b": 0.7}, {"a": 0.7, "b": 0.3}, "mean")
    assert tied["margin"] == pytest.approx(0.0) and not tied["beats"]
