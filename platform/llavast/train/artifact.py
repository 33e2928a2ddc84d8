"""The stage artifact: what a stage trained, in safetensors, loadable without DeepSpeed or Ray.

Layout of an artifact directory (uploaded as-is to `<storage.root>/artifacts/<run name>/`):
    manifest.json              format, model, stage, groups, base, overrides, parent, data, fingerprint, metrics,
                               the active LoRA's spec and the specs of the LoRAs merged before it
    weights.safetensors        the non-LoRA groups the artifact carries (STP, LAPE tables, ...)
    lora.safetensors           the active LoRA adapter (stages 2 and 3)
    merged_lora_<i>.safetensors  earlier stages' adapters, merged into the LLM in this order (stage 3
                               carries stage 2's), so the artifact rebuilds the model from `base` alone
    config.json                the model config the weights belong to
    tokenizer files            the tokenizer with the coordinate tokens
Rebuilding: build the base model, merge `merged_lora_*` in order, load `weights`, inject and load `lora`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from llavast.errors import TrainError
from llavast.train.lora import LoraSpec, add_lora, load_lora_state, merge_lora
from model_zoo.contract import ModelContract

FORMAT = "llavast-stage-artifact/1"
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
LORA = "lora.safetensors"
# Config keys that may differ between the artifact and the model it is applied to (lape_init only says how
# tables start when first built; a later stage loads them).
_VOLATILE_CONFIG_KEYS = {"lape_enabled", "lape_init", "dtype", "torch_dtype", "transformers_version", "_name_or_path",
                         "architectures", "use_cache"}


@dataclass
class MergedLora:
    spec: LoraSpec
    tensors: dict[str, Tensor]


@dataclass
class StageArtifact:
    """An artifact in memory: its manifest, carried weights, active adapter and merged adapters."""

    manifest: dict[str, Any]
    weights: dict[str, Tensor]
    lora: dict[str, Tensor] | None = None
    lora_spec: LoraSpec | None = None
    merged: list[MergedLora] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)


def _contiguous(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def write_artifact(directory: Path, artifact: StageArtifact, tokenizer: Any | None) -> Path:
    """Write `artifact` (and the tokenizer) into `directory`; empty tensors are refused (a ZeRO-3
    export without gathering produces them)."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {**artifact.weights, **(artifact.lora or {})}
    empty = [name for name, t in tensors.items() if t.numel() == 0]
    if empty:
        raise TrainError(f"refusing to write an artifact with empty tensors (ungathered ZeRO-3 shards?): {empty[:3]}")
    save_file(_contiguous(artifact.weights), str(directory / WEIGHTS))
    manifest = dict(artifact.manifest, format=FORMAT,
                    lora=artifact.lora_spec.to_dict() if artifact.lora_spec else None,
                    merged_loras=[m.spec.to_dict() for m in artifact.merged])
    if artifact.lora is not None:
        save_file(_contiguous(artifact.lora), str(directory / LORA))
    for i, merged in enumerate(artifact.merged):
        save_file(_contiguous(merged.tensors), str(directory / f"merged_lora_{i}.safetensors"))
    (directory / "config.json").write_text(json.dumps(artifact.config, indent=2, sort_keys=True))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(directory))
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return directory


def read_artifact(directory: Path) -> StageArtifact:
    manifest_file = directory / MANIFEST
    if not manifest_file.is_file():
        raise TrainError(f"{directory} is not a stage artifact: no {MANIFEST}")
    manifest = json.loads(manifest_file.read_text())
    if manifest.get("format") != FORMAT:
        raise TrainError(f"{manifest_file}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    lora_spec = LoraSpec.from_dict(manifest["lora"]) if manifest.get("lora") else None
    merged = [MergedLora(LoraSpec.from_dict(spec), load_file(str(directory / f"merged_lora_{i}.safetensors")))
              for i, spec in enumerate(manifest.get("merged_loras", []))]
    return StageArtifact(
        manifest=manifest, weights=load_file(str(directory / WEIGHTS)),
        lora=load_file(str(directory / LORA)) if lora_spec else None, lora_spec=lora_spec, merged=merged,
        config=json.loads((directory / "config.json").read_text()))


def config_dict(config: Any) -> dict[str, Any]:
    """A model config as plain JSON data (what config.json holds), so saved and live configs compare."""
    return json.loads(config.to_json_string(use_diff=False))


def _stable(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _stable(v) for k, v in tree.items() if k not in _VOLATILE_CONFIG_KEYS}
    return tree


def check_config(model: nn.Module, artifact: StageArtifact) -> None:
    """The artifact must have been trained on a model of the same shapes and hyperparameters."""
    mine, theirs = _stable(config_dict(model.config)), _stable(artifact.config)
    differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
    if differ:
        raise TrainError(f"the artifact (stage {artifact.manifest.get('stage')}) was trained with another model "
                         f"config; differing keys: {differ[:8]}; use the same model.base and model.overrides")


def apply_artifact(model: nn.Module, artifact: StageArtifact, contract: ModelContract) -> None:
    """Rebuild the artifact's model state on a freshly built base model of `contract`'s model (in place)."""
    check_config(model, artifact)
    for merged in artifact.merged:
        add_lora(model, merged.spec)
        load_lora_state(model, merged.tensors)
        merge_lora(model)
    try:
        contract.import_weights(model, artifact.weights)
    except ValueError as err:
        raise TrainError(f"the artifact's weights (stage {artifact.manifest.get('stage')}) do not fit the model: "
                         f"{err}") from err
    if artifact.lora_spec is not None and artifact.lora is not None:
        add_lora(model, artifact.lora_spec)
        load_lora_state(model, artifact.lora)
