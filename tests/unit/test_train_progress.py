"""The stage's progress lines: when rank 0 says something, and what."""

from __future__ import annotations

import logging

from llavast.train.progress import PROGRESS_LOGGER, StageProgress, duration

METRICS = {"loss": 1.23456, "samples_per_s": 3.2, "data_wait_fraction": 0.125}


def test_a_line_says_step_loss_throughput_data_wait_and_eta():
    line = StageProgress("stage 2 (demo)", total=100, every_s=30, first_step=20, clock=lambda: 0.0)
    # 10 steps of this attempt in 50 s: 5 s a step, 70 steps left
    assert line.line(30, METRICS, now=50.0) == ("stage 2 (demo): step 30/100, loss 1.2346, 3.20 samples/s, "
                                                "data wait 12%, ETA 5:50")
    assert line.line(20, METRICS, now=1.0).endswith("ETA -")  # nothing done yet: no estimate
    assert duration(3725) == "1:02:05" and duration(59.6) == "1:00"


def test_lines_come_every_interval_and_at_the_last_step(caplog):
    clock = iter([0.0, 10.0, 31.0, 35.0, 40.0, 41.0])
    line = StageProgress("stage 1 (demo)", total=5, every_s=30, clock=lambda: next(clock))  # started at 0
    with caplog.at_level(logging.INFO, logger=PROGRESS_LOGGER):
        for step in range(1, 6):
            line.step_end(step, METRICS)
    steps = [r.getMessage().split("step ")[1].split(",")[0] for r in caplog.records]
    assert steps == ["2/5", "5/5"]  # 31 s after the start, then the last step whatever the time


def test_zero_turns_them_off(caplog):
    line = StageProgress("stage 1 (demo)", total=1, every_s=0.0)
    with caplog.at_level(logging.INFO, logger=PROGRESS_LOGGER):
        line.step_end(1, METRICS)
    assert caplog.records == []
