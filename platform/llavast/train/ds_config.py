"""The DeepSpeed config of a stage, generated from the job config (never hand-written JSON).

Precision `auto` is bf16 on GPU and fp32 on CPU (DeepSpeed's CPU accelerator trains in fp32 here).
The optimizer and scheduler are torch objects passed to `deepspeed.initialize`, so they are not in it.
"""

from __future__ import annotations

import copy
from typing import Any

from llavast.config.stage import DeepSpeedSection, TrainSection

DEFAULT_BUCKET = 500_000_000  # DeepSpeed's default bucket size, in elements
MIN_BUCKET = 1_000_000


def resolved_precision(ds: DeepSpeedSection, use_gpu: bool) -> str:
    if ds.precision != "auto":
        return ds.precision
    return "bf16" if use_gpu else "fp32"


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else copy.deepcopy(value)
    return out


def deepspeed_config(ds: DeepSpeedSection, train: TrainSection, use_gpu: bool,
                     trainable_numel: int | None = None) -> dict[str, Any]:
    """`trainable_numel` caps the communication buckets: DeepSpeed allocates them whole (5e8 elements,
    2 GB in fp32, by default), which is waste when a stage trains fewer parameters (LoRA + STP + LAPE)."""
    precision = resolved_precision(ds, use_gpu)
    zero: dict[str, Any] = {"stage": ds.zero_stage, "contiguous_gradients": True, "overlap_comm": use_gpu}
    if trainable_numel is not None:
        bucket = int(min(DEFAULT_BUCKET, max(trainable_numel, MIN_BUCKET)))
        zero.update(reduce_bucket_size=bucket, allgather_bucket_size=bucket)
        if ds.zero_stage == 3:
            zero.update(stage3_prefetch_bucket_size=bucket)
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": use_gpu}
    if ds.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": use_gpu}
    if ds.zero_stage == 3:
        # Gathered 16-bit weights at save time are not needed: artifacts gather explicitly.
        zero["stage3_gather_16bit_weights_on_model_save"] = False
        if ds.param_persistence_threshold is not None:
            zero["stage3_param_persistence_threshold"] = ds.param_persistence_threshold
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": train.micro_batch_size,
        "gradient_accumulation_steps": train.grad_accum_steps,
        "gradient_clipping": train.max_grad_norm or 0.0,
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    return deep_merge(config, ds.overrides)
