"""Per-step training metrics, summed over micro-batches and all-reduced over ranks.

One small collective per optimizer step keeps every number global (loss weighted by target tokens,
throughput of all workers), so rank 0 logs what the whole job did, not what rank 0 saw.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import psutil
import torch
import torch.distributed as dist


@dataclass
class StepMeter:
    """This rank's share of one optimizer step."""

    loss_sum: float = 0.0  # sum over micro-batches of loss x target tokens
    target_tokens: int = 0
    samples: int = 0
    tokens: int = 0  # non-padding input tokens
    data_wait_s: float = 0.0
    dropped: int = 0  # samples the data pipeline could not deliver (fetch/decode errors, too long)
    started: float = field(default_factory=time.perf_counter)

    def add(self, loss: float, target_tokens: int, samples: int, tokens: int, data_wait_s: float,
            dropped: int) -> None:
        self.dropped += dropped
        self.loss_sum += loss * target_tokens
        self.target_tokens += target_tokens
        self.samples += samples
        self.tokens += tokens
        self.data_wait_s += data_wait_s

    def reduce(self, device: torch.device, world_size: int) -> dict[str, float]:
        """Global metrics of the step (a collective: every rank calls it)."""
        elapsed = time.perf_counter() - self.started
        sums = torch.tensor([self.loss_sum, self.target_tokens, self.samples, self.tokens, self.data_wait_s, elapsed,
                             self.dropped], dtype=torch.float64, device=device)
        peak = torch.tensor([memory_gb(device)], dtype=torch.float64, device=device)
        if world_size > 1:
            dist.all_reduce(sums, op=dist.ReduceOp.SUM)
            dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        loss_sum, targets, samples, tokens, wait, elapsed_sum, dropped = sums.tolist()
        step_time = elapsed_sum / world_size
        return {
            "loss": loss_sum / max(targets, 1.0),
            "target_tokens": targets,
            "samples_per_s": samples / step_time,
            "tokens_per_s": tokens / step_time,
            "data_wait_fraction": wait / max(elapsed_sum, 1e-9),
            "memory_gb": peak.item(),
            "step_time_s": step_time,
            "samples": samples,
            "dropped": dropped,
        }


def memory_gb(device: torch.device) -> float:
    """Peak accelerator memory on GPU, resident memory of the worker process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return psutil.Process().memory_info().rss / 2**30
