"""Fault injection and observation points for the integration tests; all off by default.

They exist so tests can prove resume and policy behaviour on the real distributed path: kill a worker
process mid-stage (once, guarded by a marker file), record which samples each step trained on, and
dump every parameter before and after a stage. Production jobs never set them (the job YAML cannot).
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import save_file
from torch import Tensor

KILL_AFTER_POLL_S = 5.0


@dataclass(frozen=True)
class TestHooks:
    __test__ = False  # not a pytest test class

    kill_rank: int | None = None
    kill_at_step: int | None = None
    kill_marker: str | None = None  # the kill happens only while this file does not exist (then creates it)
    sample_log_dir: str | None = None  # each rank appends {"pid", "step", "uids"} lines to rank<r>.jsonl
    param_dump_dir: str | None = None  # rank 0 writes before.safetensors / after.safetensors

    def maybe_kill(self, rank: int, step: int) -> None:
        """SIGKILL this worker process at `kill_at_step` on `kill_rank`, once per marker file."""
        if self.kill_at_step is None or self.kill_marker is None:
            return
        if rank != self.kill_rank or step != self.kill_at_step:
            return
        marker = Path(self.kill_marker)
        if marker.exists():
            return
        marker.write_text(f"killed rank {rank} at step {step} (pid {os.getpid()})\n")
        # Ray Train V2's controller collects each worker's reports (checkpoints included) when it polls the
        # workers, every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s); a worker killed sooner after its last report
        # takes that report with it. Outlive one poll, so the kill lands after the latest checkpoint counts.
        time.sleep(KILL_AFTER_POLL_S)
        os.kill(os.getpid(), signal.SIGKILL)

    def log_samples(self, rank: int, step: int, uids: list[str]) -> None:
        if self.sample_log_dir is None:
            return
        line = json.dumps({"pid": os.getpid(), "step": step, "uids": uids})
        with open(Path(self.sample_log_dir) / f"rank{rank}.jsonl", "a") as out:
            out.write(line + "\n")

    def dump_params(self, name: str, tensors: dict[str, Tensor]) -> None:
        if self.param_dump_dir is None:
            return
        directory = Path(self.param_dump_dir)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(directory / f"{name}.safetensors"))

    @property
    def wants_params(self) -> bool:
        return self.param_dump_dir is not None
