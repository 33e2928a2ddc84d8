"""One micro-step (forward + backward) that keeps DeepSpeed's collectives identical on every rank.

Ranks see different data: a video on one, an image on another, a batch whose samples all failed to
decode on a third. DeepSpeed assumes they run the same graph: ZeRO-1/2 reduce gradients in buckets
filled in the order the gradients arrive, ZeRO-3 also gathers parameters module by module in forward.
A video-only module (STP) used on one rank and not on the other mismatches those collectives: a gloo
size error, a hang, or silently mis-summed gradients.

- ZeRO 0-2, `ReplayStep`: the forward and backward run outside DeepSpeed's hooks
  (`torch.autograd.grad` on the trainable parameters; unused ones get zeros), then a surrogate
  sum(p * g) over the parameters in a fixed order is back-propagated through the engine, so DeepSpeed
  receives every gradient, exactly, in the same order on every rank, whatever the data.
- ZeRO-3, `Zero3Step`: the data plan makes every global micro-step single-media (`shard.plan_epoch`
  with a group size), samples lost to decoding are replaced by target-less placeholders of the same
  media kind, and the trainable parameters are registered as external parameters of the model
  (`register_external_parameters`), so every rank runs the same modules in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from llavast.data.collate import StreamBatch
from model_zoo.contract import IGNORE_INDEX, MediaKind


class ReplayModule(nn.Module):
    """What DeepSpeed wraps: the model, and (ZeRO 0-2) the replay of precomputed gradients.

    Under ZeRO-3 it is a pass-through root: parameters registered as external parameters of the
    model (a submodule then) are gathered again for the backward pass, which ZeRO-3 does not do for
    the external parameters of its root module.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def forward(self, replay: list[Tensor] | None = None, **batch: Tensor) -> Any:
        """The model's output; with `replay`, sum_i <p_i, g_i> in parameter order (gradient g_i)."""
        if replay is None:
            return self.model(**batch)
        total = torch.zeros((), dtype=torch.float32, device=replay[0].device)
        for param, grad in zip(self.trainable(), replay, strict=True):
            total = total + (param * grad.to(param.dtype)).sum().float()
        return total


@dataclass
class StepOutput:
    loss: float
    target_tokens: int
    tokens: int


def _no_targets_batch(pad_id: int, device: torch.device) -> dict[str, Tensor]:
    return {"input_ids": torch.full((1, 2), pad_id, dtype=torch.long, device=device),
            "attention_mask": torch.ones((1, 2), dtype=torch.long, device=device),
            "labels": torch.full((1, 2), IGNORE_INDEX, dtype=torch.long, device=device)}


class ReplayStep:
    """ZeRO 0-2: exact gradients, in a fixed order, whatever each rank's batch contains."""

    def __init__(self, engine: Any, pad_id: int, device: torch.device) -> None:
        self.engine, self.pad_id, self.device = engine, pad_id, device

    def __call__(self, batch: StreamBatch, kind: int) -> StepOutput:
        inputs = batch.inputs if batch.inputs is not None else _no_targets_batch(self.pad_id, self.device)
        module: ReplayModule = self.engine.module
        params = module.trainable()
        out = module.model(**inputs)
        grads = torch.autograd.grad(out.loss, params, allow_unused=True)
        replay = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
        self.engine.backward(self.engine(replay=replay))
        self.engine.step()
        return StepOutput(out.loss.item(), int(out.num_target_tokens), int(inputs["attention_mask"].sum()))


class Zero3Step:
    """ZeRO-3: single-media micro-steps (from the plan) with same-kind placeholders for lost samples."""

    def __init__(self, engine: Any, config: Any, pad_id: int, micro_batch_size: int, device: torch.device) -> None:
        self.engine, self.config, self.pad_id = engine, config, pad_id
        self.micro_batch_size, self.device = micro_batch_size, device

    def __call__(self, batch: StreamBatch, kind: int) -> StepOutput:
        missing = self.micro_batch_size - batch.size
        inputs, zero_loss = batch.inputs, False
        if missing > 0:
            # A micro-batch with no real sample keeps one placeholder target, so the loss head runs on
            # every rank; its loss is multiplied by 0, so it teaches nothing.
            zero_loss = inputs is None
            inputs = fill_micro_batch(inputs, missing, kind, self.config, self.pad_id, self.device, zero_loss)
        out = self.engine(**inputs)
        self.engine.backward(out.loss * 0.0 if zero_loss else out.loss)
        self.engine.step()
        targets = 0 if zero_loss else int(out.num_target_tokens)
        return StepOutput(0.0 if zero_loss else out.loss.item(), targets, int(inputs["attention_mask"].sum()))


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


def _placeholder_row(kind: int, config: Any, pad_id: int, with_target: bool) -> tuple[list[int], list[int], int]:
    visual = {MediaKind.TEXT: [], MediaKind.IMAGE: [config.image_token_id] * config.image_seq_len,
              MediaKind.VIDEO: [config.video_token_id] * config.video_seq_len}[MediaKind(kind)]
    frames = {MediaKind.TEXT: 0, MediaKind.IMAGE: 1, MediaKind.VIDEO: config.num_frames}[MediaKind(kind)]
    ids = visual + [pad_id, pad_id]
    labels = [IGNORE_INDEX] * (len(ids) - 1) + [pad_id if with_target else IGNORE_INDEX]
    return ids, labels, frames


def fill_micro_batch(inputs: dict[str, Tensor] | None, missing: int, kind: int, config: Any, pad_id: int,
                     device: torch.device, with_target: bool) -> dict[str, Tensor]:
    """`inputs` plus `missing` placeholder samples of media `kind` (zero frames, no targets), padded."""
    rows = [_placeholder_row(kind, config, pad_id, with_target) for _ in range(missing)]
    length = max([0 if inputs is None else inputs["input_ids"].shape[1]] + [len(ids) for ids, _, _ in rows])

    def stack(values: list[list[Any]], fill: float, dtype: torch.dtype) -> Tensor:
        return torch.tensor([v + [fill] * (length - len(v)) for v in values], dtype=dtype, device=device)

    fills = {"input_ids": pad_id, "attention_mask": 0, "labels": IGNORE_INDEX, "coord_values": 0.0}
    extra = {
        "input_ids": stack([ids for ids, _, _ in rows], pad_id, torch.long),
        "attention_mask": stack([[1] * len(ids) for ids, _, _ in rows], 0, torch.long),
        "labels": stack([labels for _, labels, _ in rows], IGNORE_INDEX, torch.long),
        "coord_values": stack([[0.0] * len(ids) for ids, _, _ in rows], 0.0, torch.float32),
        "pixel_values": torch.zeros((sum(f for _, _, f in rows), 3, config.image_size, config.image_size),
                                    device=device),
        "media_kind": torch.full((missing,), int(kind), dtype=torch.long, device=device),
    }
    if inputs is None:
        return extra
    out = {k: torch.cat([torch.nn.functional.pad(inputs[k], (0, length - inputs[k].shape[1]), value=fill), extra[k]])
           for k, fill in fills.items()}
    out["pixel_values"] = torch.cat([inputs["pixel_values"], extra["pixel_values"].to(inputs["pixel_values"].dtype)])
    out["media_kind"] = torch.cat([inputs["media_kind"], extra["media_kind"]])
    return out
