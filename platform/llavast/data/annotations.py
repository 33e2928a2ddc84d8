"""Reading the released annotation formats: training JSON/JSONL files and stage mixture YAMLs.

A mixture (REFERENCE.md 3.2) lists annotation files with a sampling strategy each; paths in it may be
relative to the YAML's own folder, so one dataset tree works on a laptop and in a bucket. Sampling is a
pure function of (file length, strategy, seed, source), so an index rebuilt from the same inputs selects
the same records.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from llavast import storage
from llavast.data.records import Task, parse_task
from llavast.errors import ConfigError, DataError
from llavast.storage import StorageOptions

_STRATEGY_RE = re.compile(r"^(all)$|^(first|end|random):(\d+)(%?)$")


@dataclass(frozen=True)
class SamplingStrategy:
    """`all`, or `first|end|random:N` / `first|end|random:P%` (percent rounds up, as the release does)."""

    kind: Literal["all", "first", "end", "random"]
    amount: int = 0
    percent: bool = False

    @classmethod
    def parse(cls, text: str) -> SamplingStrategy:
        match = _STRATEGY_RE.match(str(text).strip())
        if match is None:
            raise ValueError(f"sampling_strategy {text!r} is not all, first:N, end:N, random:N or <kind>:P%")
        if match.group(1):
            return cls("all")
        kind, amount, percent = match.group(2), int(match.group(3)), bool(match.group(4))
        if percent and amount > 100:
            raise ValueError(f"sampling_strategy {text!r}: a percentage cannot exceed 100%")
        return cls(kind, amount, percent)  # type: ignore[arg-type]

    def count(self, n: int) -> int:
        """How many of n records the strategy keeps."""
        if self.kind == "all":
            return n
        k = math.ceil(self.amount * n / 100) if self.percent else self.amount
        return min(k, n)

    def __str__(self) -> str:
        return "all" if self.kind == "all" else f"{self.kind}:{self.amount}{'%' if self.percent else ''}"


def sample_indices(n: int, strategy: SamplingStrategy, seed: int, key: str) -> list[int]:
    """Indices (ascending) of the records kept from a file of n records.

    `random` draws without replacement from a generator seeded by (seed, key), so the choice depends
    only on the seed and the source, never on process, order or Python's hash randomisation.
    """
    k = strategy.count(n)
    if strategy.kind in ("all", "first"):
        return list(range(k))
    if strategy.kind == "end":
        return list(range(n - k, n))
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    return sorted(rng.sample(range(n), k))


class MixtureEntry(BaseModel):
    """One annotation file of a stage mixture, with paths resolved to absolute URIs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    json_path: str
    sampling_strategy: str = "all"
    source: str
    data_folder: str
    task: Task | None = None

    @field_validator("sampling_strategy")
    @classmethod
    def _strategy(cls, value: str) -> str:
        SamplingStrategy.parse(value)
        return value

    @field_validator("task", mode="before")
    @classmethod
    def _task(cls, value: Any) -> Any:
        return parse_task(value) if isinstance(value, str) else value

    @property
    def strategy(self) -> SamplingStrategy:
        return SamplingStrategy.parse(self.sampling_strategy)


class Mixture(BaseModel):
    model_config = ConfigDict(frozen=True)

    uri: str
    entries: tuple[MixtureEntry, ...]


def load_mixture(uri: str, options: StorageOptions) -> Mixture:
    """Parse a stage mixture YAML; relative paths resolve against the YAML's folder.

    `source` defaults to the annotation file's stem and `data_folder` to the YAML's folder. Errors name
    the file and the entry.
    """
    try:
        doc = yaml.safe_load(storage.read_text(uri, options))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{uri}: not valid YAML: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("datasets"), list) or not doc["datasets"]:
        raise ConfigError(f"{uri}: a mixture needs a non-empty 'datasets:' list of "
                          "{json_path, sampling_strategy, source, data_folder}")
    base = storage.dirname(uri)
    entries = []
    for i, raw in enumerate(doc["datasets"]):
        if not isinstance(raw, dict) or "json_path" not in raw:
            raise ConfigError(f"{uri}: datasets[{i}] needs a json_path")
        fields = dict(raw)
        fields["json_path"] = storage.resolve(base, str(raw["json_path"]))
        fields["data_folder"] = storage.resolve(base, str(raw.get("data_folder", ".")))
        stem = fields["json_path"].rsplit("/", 1)[-1].split(".", 1)[0]
        fields.setdefault("source", stem)
        try:
            entries.append(MixtureEntry(**fields))
        except (ValidationError, ValueError) as exc:
            raise ConfigError(f"{uri}: datasets[{i}] ({raw.get('json_path')}): {exc}") from exc
    sources = [e.source for e in entries]
    duplicated = sorted({s for s in sources if sources.count(s) > 1})
    if duplicated:
        raise ConfigError(f"{uri}: sources must be unique (they prefix sample ids), repeated: {duplicated}")
    return Mixture(uri=uri, entries=tuple(entries))


@dataclass(frozen=True)
class Unparsable:
    """A line of a JSONL file that is not JSON; quarantined with reason `json`."""

    detail: str


def parse_annotations(text: str, uri: str) -> list[Any]:
    """Records of a training annotation file: a JSON list, or JSON Lines (one record per line).

    A JSON list that does not parse is a file-level error; a bad JSONL line becomes `Unparsable` so the
    rest of the file is still used.
    """
    stripped = text.lstrip()
    if not stripped:
        return []
    if stripped.startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{uri}: not valid JSON ({exc}); fix or remove the file from the mixture") from exc
        return records
    out: list[Any] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            out.append(Unparsable(f"line {lineno}: {exc}"))
    return out


def read_annotations(uri: str, options: StorageOptions) -> list[Any]:
    return parse_annotations(storage.read_text(uri, options), uri)


def iter_sampled(records: list[Any], entry: MixtureEntry, seed: int) -> Iterator[tuple[int, Any]]:
    """(index in file, record) of the records the entry's strategy keeps."""
    for i in sample_indices(len(records), entry.strategy, seed, f"{entry.source}|{entry.json_path}"):
        yield i, records[i]
