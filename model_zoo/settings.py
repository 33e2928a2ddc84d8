"""What a job may set in a model's `model.overrides`, declared by the model and checked when the job is loaded.

Pure Python (no torch, no transformers), so `llavast validate` checks a job in well under a second: each model
declares its `ModelSettings` in a module of its own (`model_zoo/<model>/settings.py`), which
`model_zoo.settings(name)` imports without the model.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Setting:
    """A config field a job may override: its type, its range, and the paper's name for it."""

    type: type  # int, float, bool or str
    help: str
    minimum: float | None = None  # inclusive
    choices: tuple[str, ...] = ()
    symbol: str | None = None  # the paper's symbol (N, M_t, ...): an override spelled so is pointed here

    def problem(self, value: Any) -> str | None:
        """Why `value` is not a valid value of this setting, or None."""
        if self.type is bool:
            return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
        if self.type is int and (isinstance(value, bool) or not isinstance(value, int)):
            return f"must be an integer, got {value!r}"
        if self.type is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"must be a number, got {value!r}"
        if self.type is str and not isinstance(value, str):
            return f"must be a string, got {value!r}"
        if self.choices and value not in self.choices:
            return f"must be one of {', '.join(repr(c) for c in self.choices)}, got {value!r}"
        if self.minimum is not None and value < self.minimum:
            return f"must be >= {self.minimum:g}, got {value!r}"
        return None


@dataclass(frozen=True)
class Divides:
    """A rule between two settings: `divisor` divides `value` (checked when a job sets both; with one of them
    from the checkpoint, the built config checks it)."""

    value: str
    divisor: str
    says: str  # the rule as the paper states it

    def problem(self, values: Mapping[str, Any]) -> str | None:
        if self.value in values and self.divisor in values and values[self.value] % values[self.divisor]:
            return f"{self.says}: {self.value}={values[self.value]}, {self.divisor}={values[self.divisor]}"
        return None


@dataclass(frozen=True)
class ModelSettings:
    model: str
    fields: Mapping[str, Setting]
    rules: tuple[Divides, ...] = ()

    def check(self, values: Mapping[str, Any]) -> list[str]:
        """Every problem of a job's overrides: unknown names (with the closest setting), values of the wrong type
        or range, then the rules between them. [] when they are valid."""
        problems = []
        by_symbol = {s.symbol.lower(): name for name, s in self.fields.items() if s.symbol}
        for key, value in values.items():
            setting = self.fields.get(key)
            if setting is None:
                guess = by_symbol.get(key.lower()) or next(iter(difflib.get_close_matches(
                    key.lower(), list(self.fields), n=1, cutoff=0.6)), None)
                hint = f": did you mean {guess}?" if guess else f" (settings: {', '.join(sorted(self.fields))})"
                problems.append(f"{key} is not a {self.model} setting{hint}")
            elif (problem := setting.problem(value)) is not None:
                problems.append(f"{key}: {problem}")
        return problems or [p for rule in self.rules if (p := rule.problem(values)) is not None]
