"""The model contract: everything the platform (`llavast`) knows about a model, and nothing more.

A model of the zoo is a `ModelContract` subclass registered by name in `model_zoo/__init__.py`;
`model_zoo.spec(name)` returns an instance. The platform imports `model_zoo` and this module, never a
model's own package, so a second model plugs in without touching `platform/`.

The contract has six parts:
    settings      `settings`: what a job may set in `model.overrides` (`model_zoo.settings.ModelSettings`)
    building      `build`, `load_config`, `load_tokenizer`, `write_demo_checkpoint`
    groups        `groups`, `carried_groups`, `group_of`, `parameter_groups`
    stage policy  `stage_trainable`, `lape_enabled_for_stage`, `apply_stage`, `lora_target_modules`
    batch         `IGNORE_INDEX`, `MediaKind` (and its record `marker`), `PLACEHOLDER_VARIABLES`, `ModelConfig`,
                  `media_token_id`, `visual_token_count`, `frames_per_sample`, `placeholder_ids`
    artifacts     `export_weights`, `import_weights`

Why an ABC rather than a `typing.Protocol`: a contract is implemented by a class the zoo itself owns, so
nominal subtyping costs nothing, and in exchange (1) a model that misses a method fails when its spec is
instantiated (`spec(name)`: a TypeError naming the method), not when training first calls it, whereas
`isinstance` against a runtime-checkable Protocol only checks that the names exist; (2) the rules every
model shares so far (parameter groups from `group_of`, visual tokens and frames per media kind from the
`ModelConfig` fields) live here once, as concrete methods a model may override.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from enum import IntEnum
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from torch import Tensor, nn

from .settings import ModelSettings

IGNORE_INDEX = -100  # `labels` value of a position that is not learned (system/human turns, visual tokens, padding)


class MediaKind(IntEnum):
    """Media of a sample; the integer is the batch's `media_kind` code."""

    TEXT = 0
    IMAGE = 1
    VIDEO = 2

    @property
    def marker(self) -> str | None:
        """The text marker of this media in a record's first human turn (None for text)."""
        return _MARKERS.get(self)


_MARKERS = {MediaKind.IMAGE: "<image>", MediaKind.VIDEO: "<video>"}

# The coordinate placeholders a record's text may hold, each with the `variables` key that lists its values
# (one value per occurrence, in order). The tokenizer of every model maps each placeholder to one token.
PLACEHOLDER_VARIABLES: Mapping[str, str] = {
    "<TEMP-INPUT>": "temporal_input_locations",
    "<TEMP-OUTPUT>": "temporal_output_locations",
    "<HEIGHT-INPUT>": "spatial_height_input_locations",
    "<HEIGHT-OUTPUT>": "spatial_height_output_locations",
    "<WIDTH-INPUT>": "spatial_width_input_locations",
    "<WIDTH-OUTPUT>": "spatial_width_output_locations",
}


@runtime_checkable
class ModelConfig(Protocol):
    """The fields of a model's config (a transformers `PretrainedConfig`) that the platform reads."""

    model_type: str  # the model's registered name

    @property
    def num_frames(self) -> int: ...  # frames sampled per video

    @property
    def image_size(self) -> int: ...  # side of a frame, in pixels

    @property
    def image_token_id(self) -> int: ...  # the token an image's marker expands to

    @property
    def video_token_id(self) -> int: ...

    @property
    def image_seq_len(self) -> int: ...  # copies of that token per image

    @property
    def video_seq_len(self) -> int: ...

    def to_json_string(self, use_diff: bool = True) -> str: ...  # what an artifact's config.json holds


class ModelContract(ABC):
    """What a model provides to the platform. Stateless: one instance serves every config of the model."""

    name: ClassVar[str]  # the registry name, equal to the config's `model_type`

    # ---- settings -------------------------------------------------------------------------------------
    @property
    @abstractmethod
    def settings(self) -> ModelSettings:
        """What a job may set in `model.overrides` (`model_zoo.settings(name)` gives the same without importing
        the model)."""

    # ---- building -------------------------------------------------------------------------------------
    @abstractmethod
    def build(self, source: ModelConfig | str | Path, **overrides: Any) -> nn.Module:
        """A model from a config (random init; no overrides) or a checkpoint directory (`overrides` set
        config fields); the model's `.config` satisfies `ModelConfig`."""

    @abstractmethod
    def load_config(self, path: str | Path, **overrides: Any) -> ModelConfig:
        """The config `build(path, **overrides)` would give, read without the weights (the eval driver needs
        it to tokenise prompts, while the model itself loads in the inference actors)."""

    @abstractmethod
    def load_tokenizer(self, path: str | Path, config: ModelConfig) -> Any:
        """The checkpoint's tokenizer, with every token the batch contract needs (markers, placeholders)."""

    @abstractmethod
    def write_demo_checkpoint(self, path: str | Path) -> Path:
        """Write a small random-weight base checkpoint (weights and tokenizer) that `build` and
        `load_tokenizer` accept: the demo's base. Offline and deterministic."""

    # ---- parameter groups -----------------------------------------------------------------------------
    @property
    @abstractmethod
    def groups(self) -> tuple[str, ...]:
        """The parameter groups; "lora" is the group of the adapter the platform injects (peft)."""

    @property
    @abstractmethod
    def carried_groups(self) -> frozenset[str]:
        """Groups every stage artifact carries whether or not the stage trains them: those a base checkpoint
        lacks (freshly initialised on load), so the next stage continues from exactly these values."""

    @abstractmethod
    def group_of(self, parameter_name: str) -> str:
        """The group of a parameter, by name; wrapper prefixes (DDP, DeepSpeed, peft) are ignored.
        KeyError for a name in no group."""

    def parameter_groups(self, model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """Every group (empty ones included) with its (name, parameter) pairs, in module order."""
        out: dict[str, list[tuple[str, nn.Parameter]]] = {g: [] for g in self.groups}
        for name, param in model.named_parameters():
            out[self.group_of(name)].append((name, param))
        return out

    # ---- stage policy ---------------------------------------------------------------------------------
    @abstractmethod
    def stage_trainable(self, stage: int) -> frozenset[str]:
        """The groups stage `stage` trains by default."""

    @abstractmethod
    def lape_enabled_for_stage(self, stage: int) -> bool:
        """Whether stage `stage` adds the positional embedding to the visual features by default."""

    @abstractmethod
    def apply_stage(self, model: nn.Module, trainable: frozenset[str] | set[str], lape_enabled: bool) -> None:
        """Freeze every group but `trainable` and set the positional-embedding switch, in place."""

    @abstractmethod
    def lora_target_modules(self, model: nn.Module) -> str:
        """A regex (peft full match) of the modules a LoRA adapter wraps."""

    # ---- batch ----------------------------------------------------------------------------------------
    def media_token_id(self, config: ModelConfig, kind: MediaKind) -> int:
        """The token id a media marker expands to; ValueError for text."""
        if kind == MediaKind.TEXT:
            raise ValueError("text has no media token")
        return config.video_token_id if kind == MediaKind.VIDEO else config.image_token_id

    def visual_token_count(self, config: ModelConfig, kind: MediaKind) -> int:
        """How many copies of the media token one sample of `kind` holds in `input_ids`."""
        return {MediaKind.TEXT: 0, MediaKind.IMAGE: config.image_seq_len,
                MediaKind.VIDEO: config.video_seq_len}[MediaKind(kind)]

    def frames_per_sample(self, config: ModelConfig, kind: MediaKind) -> int:
        """How many frames one sample of `kind` adds to `pixel_values`."""
        return {MediaKind.TEXT: 0, MediaKind.IMAGE: 1, MediaKind.VIDEO: config.num_frames}[MediaKind(kind)]

    @abstractmethod
    def placeholder_ids(self, config: ModelConfig) -> dict[str, int]:
        """The token id of each `PLACEHOLDER_VARIABLES` placeholder under `config`."""

    # ---- artifacts ------------------------------------------------------------------------------------
    @abstractmethod
    def export_weights(self, model: nn.Module, groups: frozenset[str] | set[str]) -> dict[str, Tensor]:
        """The parameters of `groups` under wrapper-free names, detached on CPU: what a stage artifact
        stores (the caller gathers ZeRO-3 shards first)."""

    @abstractmethod
    def import_weights(self, model: nn.Module, tensors: Mapping[str, Tensor]) -> None:
        """Copy tensors `export_weights` produced into `model`, in place; ValueError for a name the model
        does not have or a shape that differs."""
