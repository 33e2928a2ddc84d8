"""AdamW over the trainable parameter groups (one lr per group) and the schedule: warmup, constant, cosine decay.

A torch optimizer is handed to DeepSpeed (not a DeepSpeed-built one) so the per-group learning rates
and the same code path work on CPU (gloo) and GPU.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from llavast.config.stage import TrainSection
from llavast.train.policy import StagePolicy
from model_zoo.contract import ModelContract


def optimizer_groups(model: nn.Module, contract: ModelContract, policy: StagePolicy,
                     train: TrainSection) -> list[dict[str, Any]]:
    """One AdamW param group per trainable model group, named, with that group's lr."""
    groups = []
    for name, params in contract.parameter_groups(model).items():
        if name not in policy.trainable:
            continue
        trainable = [p for _, p in params if p.requires_grad]
        if trainable:
            groups.append({"params": trainable, "lr": train.group_lr.get(name, train.lr),
                           "weight_decay": train.weight_decay, "name": name})
    if not groups:
        raise ValueError(f"stage {policy.stage} has no trainable parameters in groups {sorted(policy.trainable)}")
    return groups


def build_optimizer(groups: list[dict[str, Any]]) -> torch.optim.AdamW:
    return torch.optim.AdamW(groups, betas=(0.9, 0.999), eps=1e-8)


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    return math.ceil(total_steps * warmup_ratio)


def decay_start(total_steps: int, warmup: int, decay_ratio: float) -> int:
    """The step the cosine decay starts at: the last `decay_ratio` of the steps, never inside the warmup."""
    return max(warmup, total_steps - math.ceil(total_steps * decay_ratio))


def cosine_factor(step: int, total_steps: int, warmup: int, decay_from: int | None = None) -> float:
    """Linear warmup from 0 over `warmup` steps, the full lr until `decay_from` (default: the warmup's end), then
    cosine decay to 0 at `total_steps`."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    decay_from = warmup if decay_from is None else decay_from
    if step < decay_from:
        return 1.0
    progress = (step - decay_from) / max(1, total_steps - decay_from)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def cosine_with_warmup(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float,
                       decay_ratio: float = 1.0) -> LambdaLR:
    """`train.warmup_ratio` of the steps warm up; the last `train.decay_ratio` decay (1.0: all after the warmup)."""
    warmup = warmup_steps(total_steps, warmup_ratio)
    decay_from = decay_start(total_steps, warmup, decay_ratio)
    return LambdaLR(optimizer, lambda step: cosine_factor(step, total_steps, warmup, decay_from))
