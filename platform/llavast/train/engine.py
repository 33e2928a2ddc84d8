"""The DeepSpeed engine around a stage's model: a torch AdamW (one group per trainable part, `optim.py`), the
warmup-cosine schedule and the job's DeepSpeed config (`ds_config.py`). The worker loop and
benchmarks/train_step.py build it here, so what the benchmark times is what a stage trains with."""

from __future__ import annotations

from typing import Any

import deepspeed
from torch import nn

from llavast.config.stage import DeepSpeedSection, TrainSection
from llavast.train.ds_config import deepspeed_config
from llavast.train.optim import build_optimizer, cosine_with_warmup, optimizer_groups
from llavast.train.policy import StagePolicy
from llavast.train.step import EngineRoot, register_external_parameters
from model_zoo.contract import ModelContract


def build_engine(model: nn.Module, contract: ModelContract, policy: StagePolicy, train: TrainSection,
                 ds: DeepSpeedSection, total_steps: int, use_gpu: bool) -> Any:
    """`deepspeed.initialize` of `model` (already on its device) for `total_steps` optimizer steps."""
    groups = optimizer_groups(model, contract, policy, train)
    optimizer = build_optimizer(groups)
    scheduler = cosine_with_warmup(optimizer, total_steps, train.warmup_ratio, train.decay_ratio)
    if ds.zero_stage == 3:
        register_external_parameters(model)
    config = deepspeed_config(ds, train, use_gpu=use_gpu,
                              trainable_numel=sum(p.numel() for g in groups for p in g["params"]))
    engine, _, _, _ = deepspeed.initialize(model=EngineRoot(model), optimizer=optimizer, lr_scheduler=scheduler,
                                           config=config)
    return engine
