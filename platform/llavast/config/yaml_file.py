"""A job YAML file read into a mapping: syntax errors name the file, line and column, and a key given twice in
one mapping is an error naming both lines (YAML says keys are unique; PyYAML would silently keep the last)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from llavast.errors import ConfigError


class DuplicateKey(Exception):
    def __init__(self, key: Any, line: int, first: int) -> None:
        super().__init__(key, line, first)
        self.key, self.line, self.first = key, line, first


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, but a key given twice in one mapping is an error (YAML says keys are unique; PyYAML
    silently keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key == "<<":  # merge keys may repeat
                continue
            if key in first:
                raise DuplicateKey(key, key_node.start_mark.line + 1, first[key])
            first[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Parse a YAML mapping; syntax errors name the file, line and column."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the job YAML ({err.strerror})") from err
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except DuplicateKey as dup:
        raise ConfigError(f"{path}: line {dup.line}: duplicate key {dup.key!r} (first on line {dup.first})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise ConfigError(f"{path}: {where}invalid YAML: {getattr(err, 'problem', None) or err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a job YAML must be a mapping of sections, got {type(raw).__name__}")
    return raw
