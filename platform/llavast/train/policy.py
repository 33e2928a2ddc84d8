"""Stage policies: what a stage trains, resolved from the job config and the model's contract.

The model (`model_zoo.spec(name)`) says which parameter groups exist and what each stage trains by
default; the job YAML may override it per stage (`train.trainable`, `train.lape`, `train.merge_parent_lora`).
"""

from __future__ import annotations

from dataclasses import dataclass

from llavast.config.stage import TrainSection
from llavast.errors import ConfigError
from model_zoo.contract import ModelContract


@dataclass(frozen=True)
class StagePolicy:
    """The resolved policy of one stage.

    trainable: parameter groups that train; "lora" means an adapter on every Linear of the LLM.
    lape: add LAPE's rho to the visual features (stage 1 trains with LAPE off).
    merge_parent_lora: merge the parent artifact's adapter into the LLM before training (stage 3).
    """

    stage: int
    trainable: frozenset[str]
    lape: bool
    merge_parent_lora: bool

    @property
    def trains_lora(self) -> bool:
        return "lora" in self.trainable


def resolve_policy(train: TrainSection, contract: ModelContract) -> StagePolicy:
    """Fill the policy fields the job left unset from the model's defaults for `train.stage`."""
    trainable = (frozenset(train.trainable) if train.trainable is not None
                 else contract.stage_trainable(train.stage))
    unknown = sorted(trainable - set(contract.groups))
    if unknown:
        raise ConfigError(f"train.trainable: unknown parameter groups {unknown}; the model's groups are "
                          f"{list(contract.groups)}")
    if not trainable:
        raise ConfigError("train.trainable: a stage must train at least one parameter group")
    stray_lr = sorted(set(train.group_lr) - trainable)
    if stray_lr:
        raise ConfigError(f"train.group_lr: {stray_lr} do not train in stage {train.stage} "
                          f"(trainable: {sorted(trainable)})")
    lape = train.lape if train.lape is not None else contract.lape_enabled_for_stage(train.stage)
    merge = train.merge_parent_lora if train.merge_parent_lora is not None else train.stage == 3
    return StagePolicy(stage=train.stage, trainable=trainable, lape=lape, merge_parent_lora=merge)
