"""Optimizer groups, the cosine-with-warmup schedule and the generated DeepSpeed config."""

from __future__ import annotations

import math

import pytest
import torch

import model_zoo
from llavast.config.stage import DeepSpeedSection, TrainSection
from llavast.train.ds_config import deepspeed_config
from llavast.train.lora import LoraSpec, add_lora
from llavast.train.optim import build_optimizer, cosine_factor, cosine_with_warmup, optimizer_groups, warmup_steps
from llavast.train.policy import resolve_policy
from model_zoo.llava_st import LlavaSTForCausalLM, tiny_config

CONTRACT = model_zoo.spec("llava_st")


def test_one_adamw_group_per_trainable_group_with_its_lr() -> None:
    torch.manual_seed(0)
    model = LlavaSTForCausalLM(tiny_config())
    add_lora(model, LoraSpec(r=2, alpha=4, dropout=0.0, target_modules=CONTRACT.lora_target_modules(model)))
    train = TrainSection(stage=2, lr=2e-5, group_lr={"lora": 2e-4}, weight_decay=0.01)
    policy = resolve_policy(train, CONTRACT)
    CONTRACT.apply_stage(model, policy.trainable, policy.lape)
    groups = optimizer_groups(model, CONTRACT, policy, train)
    assert {g["name"]: g["lr"] for g in groups} == {"lora": 2e-4, "stp": 2e-5, "lape": 2e-5}
    in_optimizer = {id(p) for g in groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in model.parameters() if p.requires_grad}
    assert all(g["weight_decay"] == 0.01 for g in groups)
    assert isinstance(build_optimizer(groups), torch.optim.AdamW)


def test_the_release_recipe_trains_the_text_embedding_at_its_own_lr() -> None:
    """Stages 2-3 of the authors' release also train Qwen2's input embedding (2e-5): `train.trainable` adds
    the embed_tokens group, which holds exactly that matrix; the rest of the LLM stays frozen."""
    torch.manual_seed(0)
    model = LlavaSTForCausalLM(tiny_config())
    add_lora(model, LoraSpec(r=2, alpha=4, dropout=0.0, target_modules=CONTRACT.lora_target_modules(model)))
    train = TrainSection(stage=2, lr=2e-4, trainable=("lora", "stp", "lape", "embed_tokens"),
                         group_lr={"stp": 2e-5, "lape": 2e-5, "embed_tokens": 2e-5})
    policy = resolve_policy(train, CONTRACT)
    CONTRACT.apply_stage(model, policy.trainable, policy.lape)
    groups = {g["name"]: g for g in optimizer_groups(model, CONTRACT, policy, train)}
    assert {name: g["lr"] for name, g in groups.items()} == {"lora": 2e-4, "stp": 2e-5, "lape": 2e-5,
                                                             "embed_tokens": 2e-5}
    embedding = model.language_model.model.embed_tokens.weight
    assert [id(p) for p in groups["embed_tokens"]["params"]] == [id(embedding)]
    assert not model.language_model.lm_head.weight.requires_grad  # untied in Qwen2-7B and the tiny preset
    frozen_llm = [p for _, p in CONTRACT.parameter_groups(model)["llm"]]
    assert frozen_llm and not any(p.requires_grad for p in frozen_llm)


def test_cosine_schedule_warms_up_then_decays_to_zero() -> None:
    total, ratio = 100, 0.03
    warm = warmup_steps(total, ratio)
    assert warm == 3
    factors = [cosine_factor(s, total, warm) for s in range(total + 1)]
    assert factors[0] > 0  # the first step already learns
    assert factors[:warm + 1] == sorted(factors[:warm + 1]) and factors[warm] == 1.0
    assert factors[warm:] == sorted(factors[warm:], reverse=True) and factors[total] == pytest.approx(0.0)
    mid = warm + (total - warm) // 2
    assert factors[mid] == pytest.approx(0.5 * (1 + math.cos(math.pi * (mid - warm) / (total - warm))))
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = cosine_with_warmup(opt, total, ratio)
    for _ in range(warm):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_decay_ratio_holds_the_lr_constant_then_decays_the_last_share() -> None:
    """train.decay_ratio 0.25 of 100 steps: warmup 3 steps, the full lr up to step 75, then a cosine to 0 at 100."""
    total = 100
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = cosine_with_warmup(opt, total, 0.03, decay_ratio=0.25)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[3:76] == [pytest.approx(1e-3)] * 73
    assert lrs[75:] == sorted(lrs[75:], reverse=True) and lrs[99] < 1e-5
    assert lrs[88] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 13 / 25)))
    assert TrainSection(stage=2).decay_ratio == 1.0  # the default: the whole stage after the warmup decays
    with pytest.raises(ValueError, match="decay_ratio"):
        TrainSection(stage=2, decay_ratio=0.0)


def test_deepspeed_config_follows_the_job() -> None:
    train = TrainSection(stage=1, micro_batch_size=2, grad_accum_steps=3, max_grad_norm=0.5)
    cpu = deepspeed_config(DeepSpeedSection(), train, use_gpu=False)
    assert cpu["train_micro_batch_size_per_gpu"] == 2 and cpu["gradient_accumulation_steps"] == 3
    assert cpu["gradient_clipping"] == 0.5 and cpu["zero_optimization"]["stage"] == 2
    assert not cpu["bf16"]["enabled"] and not cpu["fp16"]["enabled"]  # fp32 on CPU
    gpu = deepspeed_config(DeepSpeedSection(zero_stage=3, param_persistence_threshold=0, offload_optimizer=True,
                                            overrides={"zero_optimization": {"reduce_bucket_size": 1000}}),
                           train, use_gpu=True)
    zero = gpu["zero_optimization"]
    assert gpu["bf16"]["enabled"] and zero["stage"] == 3 and zero["stage3_param_persistence_threshold"] == 0
    assert zero["offload_optimizer"]["device"] == "cpu" and zero["reduce_bucket_size"] == 1000
    assert zero["contiguous_gradients"] is True  # overrides merge, they do not replace the section
