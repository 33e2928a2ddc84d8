"""One micro-step, the same for every ZeRO stage: `out = engine(**batch); engine.backward(out.loss); engine.step()`.

DeepSpeed assumes every rank runs the same graph: ZeRO-1/2 reduce gradients in buckets filled in the
order the gradients become ready, ZeRO-3 also gathers parameters module by module. Ranks see different
data, so the platform makes the graph independent of it:
- the plan makes every global micro-step hold one media kind on every rank (`data/plan.py`): the same
  modules run everywhere (STP only for videos);
- a sample that could not be delivered arrives as a target-less stand-in of its media kind
  (`data/pipeline.py`): the micro-batch keeps its size and kind;
- the model runs its heads and coordinate tables whatever the batch holds (no target, no coordinate):
  zero terms keep them in the graph (`LlavaSTForCausalLM.loss`, `_participation`).
tests/integration/test_train_step.py checks the result against a single-process reference, under ZeRO-2
and ZeRO-3, with mixed media, ranks with and without coordinates, and a lost sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from llavast.data.collate import StreamBatch


class EngineRoot(nn.Module):
    """What DeepSpeed wraps: the model as a submodule. ZeRO-3 gathers a root module's external parameters
    for its forward only; as a submodule the model gets them gathered for the backward too."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, **batch: Any) -> Any:
        return self.model(**batch)


@dataclass
class StepOutput:
    loss: float
    target_tokens: int
    tokens: int


def micro_step(engine: Any, batch: StreamBatch) -> StepOutput:
    """Forward, backward and (every grad_accum_steps-th call, DeepSpeed decides) the optimizer step."""
    out = engine(**batch.inputs)
    engine.backward(out.loss)
    engine.step()
    return StepOutput(out.loss.item(), int(out.num_target_tokens), int(batch.inputs["attention_mask"].sum()))


def register_external_parameters(model: nn.Module) -> int:
    """ZeRO-3: make the model itself coordinate the parameters ZeRO-3 could otherwise lose track of.

    ZeRO-3 gathers a module's parameters for its forward and again for its backward, the latter through
    hooks on the tensors the forward returns. Parameters read outside their module's forward, or by a
    module returning a non-tensor object (LAPE returns its tables as an object), are then missing in the
    backward. Registering them as external parameters of the model keeps them gathered through its
    forward and backward: every trainable parameter (LoRA, STP, LAPE: a small share of the model) and
    the parameters of modules without a forward of their own. The frozen bulk stays partitioned.
    """
    import deepspeed

    chosen = {id(p): p for p in model.parameters() if p.requires_grad}
    for module in model.modules():
        if type(module).forward is nn.Module.forward:
            chosen.update({id(p): p for p in module.parameters(recurse=False)})
    for param in chosen.values():
        deepspeed.zero.register_external_parameter(model, param)
    return len(chosen)
