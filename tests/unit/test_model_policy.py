"""Stage-policy hooks: parameter groups, per-stage trainables, LoRA targets (every LLM Linear, nothing else)."""

import re

import pytest
import torch
from peft import LoraConfig, inject_adapter_in_model

import model_zoo
from model_zoo.llava_st import policy


def test_every_parameter_has_exactly_one_group(tiny_model):
    groups = policy.parameter_groups(tiny_model)
    assert sum(len(v) for v in groups.values()) == len(list(tiny_model.parameters()))
    assert all(groups[g] for g in ("vision", "projector", "llm", "stp", "lape")) and groups["lora"] == []
    assert [n for n, _ in groups["embed_tokens"]] == ["language_model.model.embed_tokens.weight"]
    assert {n for n, _ in groups["lape"]} == {f"lape.{a}_{k}" for a in ("temporal", "height", "width")
                                              for k in ("input", "output")}


def test_lora_targets_every_llm_linear_and_nothing_else(tiny_model):
    pattern = policy.lora_target_modules(tiny_model)
    linears = {n for n, m in tiny_model.named_modules() if isinstance(m, torch.nn.Linear)}
    targeted = {n for n in linears if re.fullmatch(pattern, n)}
    layers = tiny_model.config.text_config.num_hidden_layers
    assert len(targeted) == 7 * layers
    assert all(n.startswith("language_model.model.layers.") for n in targeted)
    assert not any(n.startswith(("vision_tower", "mm_projector", "stp")) or "lm_head" in n for n in targeted)
    model = inject_adapter_in_model(LoraConfig(r=4, lora_alpha=8, target_modules=pattern), tiny_model)
    groups = policy.parameter_groups(model)
    assert len(groups["lora"]) == 2 * 7 * layers


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_apply_stage_freezes_all_but_the_policy(tiny_model, stage):
    model = inject_adapter_in_model(LoraConfig(r=4, lora_alpha=8,
                                               target_modules=policy.lora_target_modules(tiny_model)), tiny_model)
    policy.apply_stage(model, policy.STAGE_TRAINABLE[stage], policy.lape_enabled_for_stage(stage))
    for group, params in policy.parameter_groups(model).items():
        assert all(p.requires_grad == (group in policy.STAGE_TRAINABLE[stage]) for _, p in params), group
    assert model.config.lape_enabled == (stage != 1)


def test_canonical_names_strip_wrappers():
    assert policy.group_of("module.base_model.model.stp.step1.to_q.0.weight") == "stp"
    assert policy.group_of("language_model.model.layers.0.mlp.up_proj.lora_B.default.weight") == "lora"
    with pytest.raises(KeyError, match="no LLaVA-ST parameter group"):
        policy.group_of("mystery.weight")


def test_registry_builds_by_name_and_rejects_unknown(tiny_model):
    assert "llava_st" in model_zoo.names()
    assert model_zoo.spec("llava_st").name == "llava_st"
    model = model_zoo.build("llava_st", tiny_model.config)
    assert type(model) is type(tiny_model)
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        model_zoo.build("nope", tiny_model.config)


def test_trainable_state_dict_holds_only_the_groups(tiny_model):
    state = policy.trainable_state_dict(tiny_model, {"stp", "lape"})
    assert state and all(k.startswith(("stp.", "lape.")) for k in state)
    assert all(not t.requires_grad for t in state.values())
