"""Training callbacks: code of your own that every worker runs at fixed points of the loop.

A stage job names them in `train.callbacks`, each as an import path and keyword arguments:

    train:
      callbacks:
        - {path: mypackage.audit:SampleAudit, args: {out: s3://bucket/audit}}

Every worker imports the class (the package must be importable there: the image, the venv or the shipped
working dir), builds it with `args`, and calls it on every rank:
    on_train_start(ctx, step)   after the model is built and any checkpoint restored (`step` is where the
                                stage starts: 0, or the resumed checkpoint's step)
    on_step_end(ctx, step, uids)  after each optimizer step (and its checkpoint, when one is due), with the
                                ids of the samples this rank trained on in that step (`ctx.metrics` holds
                                that step's loss and other metrics)
    on_train_end(ctx, step)     after the stage artifact is exported
A callback observes: it gets the model, and must not change it. Callbacks that gather parameters under
ZeRO-3 (`stage_model.snapshot`) run a collective, so they must do it on every rank. The driver imports each
callback before Ray starts (preflight), so a wrong path is a one-line error in seconds.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llavast.errors import ConfigError

if TYPE_CHECKING:
    from llavast.config.stage import CallbackSpec, StageJobConfig
    from llavast.train.stage_model import StageModel


@dataclass(frozen=True)
class WorkerContext:
    """What a callback may look at on its worker."""

    job: StageJobConfig
    run_name: str
    rank: int
    world_size: int
    stage: StageModel  # the model, its tokenizer, its parameter groups and the stage policy
    zero3: bool  # parameters are partitioned: gather them (on every rank) to read them
    total_steps: int  # the step the stage ends at
    metrics: dict[str, float] = field(default_factory=dict)  # the last step's metrics (loss, lr, ...), all ranks


class Callback:
    """Base of training callbacks; each method does nothing unless overridden."""

    def on_train_start(self, ctx: WorkerContext, step: int) -> None:
        """The model is built and any checkpoint restored; training starts after `step` steps."""

    def on_step_end(self, ctx: WorkerContext, step: int, uids: list[str]) -> None:
        """Optimizer step `step` is done (and checkpointed, if due); `uids` are the samples this rank trained on."""

    def on_train_end(self, ctx: WorkerContext, step: int) -> None:
        """The stage artifact is exported after `step` steps."""


def resolve(path: str) -> type[Callback]:
    """The class at `module:Name`; a ConfigError naming the path when it cannot be imported or is not a Callback."""
    module_name, _, name = path.partition(":")
    try:
        found: Any = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"train.callbacks: cannot import {path} ({err}); give module:Class, importable on the "
                          "driver and on every worker") from err
    if not (isinstance(found, type) and issubclass(found, Callback)):
        raise ConfigError(f"train.callbacks: {path} is not a subclass of llavast.train.callbacks.Callback")
    return found


def build(specs: tuple[CallbackSpec, ...]) -> list[Callback]:
    """One instance per spec, built with its `args`."""
    return [resolve(spec.path)(**spec.args) for spec in specs]
