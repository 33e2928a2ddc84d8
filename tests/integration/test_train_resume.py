"""A worker process killed mid-stage: Ray Train restarts the workers, they resume from the latest
checkpoint, keep logging into the same MLflow run, and never train a consumed sample twice."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from llavast.tracking import Tracker
from llavast.train.run import run_stage
from tests.fixtures import callbacks
from tests.fixtures.train import TrainWorld, unique

pytestmark = pytest.mark.integration
STEPS, EVERY, KILL_AT = 8, 3, 5


def _attempts(log_dir: Path) -> dict[int, list[dict[int, list[str]]]]:
    """rank -> [attempt -> {step: uids}], attempts in the order their processes started."""
    out: dict[int, list[dict[int, list[str]]]] = {}
    for rank in (0, 1):
        by_pid: dict[int, dict[int, list[str]]] = defaultdict(dict)
        for line in (log_dir / f"rank{rank}.jsonl").read_text().splitlines():
            entry = json.loads(line)
            by_pid[entry["pid"]][entry["step"]] = entry["uids"]
        out[rank] = list(by_pid.values())
    return out


def test_killed_worker_resumes_without_retraining_samples(train_world: TrainWorld, tmp_path: Path) -> None:
    samples = tmp_path / "samples"
    samples.mkdir()
    marker = tmp_path / "killed"
    watch = [callbacks.spec("SampleLog", directory=str(samples)),  # first: the killed step is logged too
             callbacks.spec("KillOnce", rank=1, at_step=KILL_AT, marker=str(marker))]
    # Stage 1 on the larger stage-3 mixture: one epoch holds all 8 steps, so the resume lands mid-epoch.
    job = train_world.job(1, unique("resume"), unique("llavast-resume"), manifest_stage=3,
                          train={"max_steps": STEPS, "checkpoint_every": EVERY, "async_checkpoint_upload": False,
                                 "callbacks": watch})
    result = run_stage(job)

    assert marker.read_text().startswith(f"killed rank 1 at step {KILL_AT}")
    attempts = _attempts(samples)
    resumed_at = {rank: min(a[1]) - 1 for rank, a in attempts.items()}
    assert all(len(a) == 2 for a in attempts.values())  # one restart, every rank
    assert set(resumed_at.values()) == {EVERY}  # the latest checkpoint before the kill, not step 0
    assert sorted(attempts[1][0]) == list(range(1, KILL_AT + 1))  # killed before its step KILL_AT + 1
    assert set(range(1, KILL_AT + 1)) <= set(attempts[0][0]) <= set(range(1, KILL_AT + 2))  # rank 0 got stuck in it
    for rank, (first, second) in attempts.items():
        assert sorted(second) == list(range(EVERY + 1, STEPS + 1))
        committed = {uid for step, uids in first.items() if step <= EVERY for uid in uids}
        retrained = {uid for uids in second.values() for uid in uids}
        assert committed and not committed & retrained, rank  # nothing consumed before the checkpoint again
    effective = [uid for rank, (first, second) in attempts.items()
                 for uids in [*(first[s] for s in range(1, EVERY + 1)), *second.values()] for uid in uids]
    assert len(effective) == len(set(effective)) == STEPS * 2  # every step, every rank, each sample once

    tracker = Tracker(train_world.mlflow.uri)
    run = tracker.client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    same_key = tracker.client.search_runs([run.info.experiment_id],
                                          filter_string=f"tags.`llavast.run_key` = '{result.run_name}'")
    assert [r.info.run_id for r in same_key] == [result.mlflow_run_id]  # the restart continued the run
    assert [m.value for m in tracker.client.get_metric_history(run.info.run_id, "resumed_from_step")] == [EVERY]
    steps = {m.step for m in tracker.client.get_metric_history(run.info.run_id, "loss")}
    assert steps == set(range(1, STEPS + 1))
    # samples_consumed counts the samples trained on, carried across the restart (the redone steps once)
    consumed = {m.step: m.value for m in tracker.client.get_metric_history(run.info.run_id, "samples_consumed")}
    assert consumed[STEPS] == len(effective)
