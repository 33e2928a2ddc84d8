"""Composing job YAMLs before validation: `extends:` chains and `--set key=value` overrides.

Both work on the raw mappings, so the schema validates the final result once and its errors name the file
the user wrote. Secret checks on the same raw mappings are in `config/secrets.py`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from llavast.errors import ConfigError


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key, recursively; anything else (lists, scalars) in `override` replaces."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def resolve_extends(raw: dict[str, Any], source: Path, read: Any, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Apply `extends: other.yaml` (relative to the file that says it), recursively; cycles are errors."""
    source = source.resolve()
    if source in chain:
        cycle = " -> ".join(str(p) for p in (*chain, source))
        raise ConfigError(f"{source}: extends: cycle {cycle}")
    parent = raw.get("extends")
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise ConfigError(f"{source}: extends: must be the path of another job YAML, got {type(parent).__name__}")
    parent_path = (source.parent / parent).resolve()
    if not parent_path.is_file():
        raise ConfigError(f"{source}: extends: {parent} does not exist (looked for {parent_path})")
    base = resolve_extends(read(parent_path), parent_path, read, (*chain, source))
    child = {k: v for k, v in raw.items() if k != "extends"}
    return deep_merge({k: v for k, v in base.items() if k != "extends"}, child)


def parse_set(assignment: str) -> tuple[list[str], Any]:
    """`train.lr=2e-4` -> (["train", "lr"], 0.0002): the value is parsed as YAML (numbers, bools, lists)."""
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {assignment}: expected key.path=value")
    path = [part for part in key.strip().split(".")]
    if any(not part for part in path):
        raise ConfigError(f"--set {assignment}: empty segment in the key path {key!r}")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {assignment}: the value is not valid YAML ({err})") from err
    return path, value


def apply_sets(raw: dict[str, Any], assignments: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply `--set key.path=value` overrides (the value parsed as YAML): `with_fields` on the parsed pairs."""
    result = copy.deepcopy(raw)
    for assignment in assignments:
        path, value = parse_set(assignment)
        _set_field(result, path, value, f"--set {assignment}")
    return result


def with_fields(raw: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """A copy of `raw` with each dotted key set to its value: how code changes a job (a sweep's trial, a tuned
    stage, a pipeline node's `set`). In a list of named items (pipeline `nodes`), a segment selects by name;
    a mapping value merges into an existing section rather than replacing it."""
    result = copy.deepcopy(raw)
    for key, value in fields.items():
        path = key.split(".")
        if any(not part for part in path):
            raise ConfigError(f"{key}: empty segment in the key path")
        _set_field(result, path, value, key)
    return result


def _set_field(result: dict[str, Any], path: list[str], value: Any, said: str) -> None:
    target: Any = result
    for i, part in enumerate(path[:-1]):
        where = ".".join(path[: i + 1])
        if isinstance(target, list):
            named = [item for item in target if isinstance(item, dict) and item.get("name") == part]
            if not named:
                names = [item.get("name") for item in target if isinstance(item, dict)]
                raise ConfigError(f"{said}: no item named {part!r} at {where} (items: {names})")
            target = named[0]
        elif isinstance(target, dict):
            target = target.setdefault(part, {})
            if not isinstance(target, (dict, list)):
                raise ConfigError(f"{said}: {where} is a {type(target).__name__}, not a section")
        else:
            raise ConfigError(f"{said}: {where} is not a section")
    if not isinstance(target, dict):
        raise ConfigError(f"{said}: {'.'.join(path[:-1])} is not a section")
    leaf = path[-1]
    if isinstance(value, dict) and isinstance(target.get(leaf), dict):
        target[leaf] = deep_merge(target[leaf], value)  # a mapping value merges into the section
    else:
        target[leaf] = copy.deepcopy(value)
