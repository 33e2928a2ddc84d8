"""Per-record validation of the released training format: the rules a record must pass to be trained on.

Each rule returns an `Issue` (a stable reason code plus a detail naming the offending field) or None;
`validate_record` runs them in order and reports the first failure. The indexer quarantines failing
records instead of crashing, and `--strict` turns the first one into an error.

Before the rules, `tolerate` (index `validation: release`, the default) repairs what the authors' release
accepts, so that the project trains on the subset of ST-Align the paper trained on, and names each repair
(counted in the index summary, `tolerated`, and logged by every stage that trains on the index):
    dropped_leading_gpt  a conversation opening with a gpt turn loses that turn (the release drops it)
    moved_marker         a `<image>`/`<video>` marker not at the start of its turn moves to the front of it
                         (LLaVA's preprocess_multimodal: marker, newline, the rest stripped)
    extra_values         a variables list longer than its placeholders is cut to their count
    clipped_values       a finite coordinate value outside [0, 1] is clipped to it
`validation: strict` repairs nothing: such records are quarantined as before.
"""

from __future__ import annotations

import copy
import math
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llavast.data.records import GPT, HUMAN, VARIABLE_KEYS, media_of, placeholder_counts
from model_zoo.contract import PLACEHOLDER_VARIABLES, MediaKind

_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


@dataclass(frozen=True)
class Issue:
    """Why a record cannot be used: `reason` is a stable code (counted), `detail` says where and what."""

    reason: str
    detail: str


Rule = Callable[[dict[str, Any]], Issue | None]


def check_shape(record: Any) -> Issue | None:
    if not isinstance(record, dict):
        return Issue("not_an_object", f"record is a {type(record).__name__}, expected a JSON object")
    if record.get("image") is not None and record.get("video") is not None:
        return Issue("media_path", "record has both 'image' and 'video'; keep one")
    return None


def check_media_path(record: dict[str, Any]) -> Issue | None:
    """The media path must be relative and stay inside the data folder (no scheme, no absolute, no `..`)."""
    kind, path = media_of(record)
    if kind == MediaKind.TEXT:
        return None
    field = "video" if kind == MediaKind.VIDEO else "image"
    if not isinstance(path, str) or not path.strip():
        return Issue("media_path", f"'{field}' must be a non-empty relative path, got {path!r}")
    if _SCHEME_RE.match(path) or path.startswith(("/", "\\")):
        return Issue("media_path", f"'{field}' {path!r} is absolute; paths are relative to the data_folder")
    normal = posixpath.normpath(path.replace("\\", "/"))
    if normal == ".." or normal.startswith("../"):
        return Issue("media_path", f"'{field}' {path!r} escapes the data_folder")
    return None


def check_roles(record: dict[str, Any]) -> Issue | None:
    """Turns alternate human, gpt, human, ... starting with human, with string values and an answer."""
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        return Issue("roles", "'conversations' must be a non-empty list of turns")
    for i, turn in enumerate(turns):
        expected = HUMAN if i % 2 == 0 else GPT
        if not isinstance(turn, dict) or turn.get("from") != expected:
            got = turn.get("from") if isinstance(turn, dict) else turn
            return Issue("roles", f"conversations[{i}] must be from {expected!r}, got {got!r}")
        if not isinstance(turn.get("value"), str):
            return Issue("roles", f"conversations[{i}].value must be a string")
    if len(turns) < 2:
        return Issue("roles", "conversations has no gpt answer to learn from")
    return None


def check_media_marker(record: dict[str, Any]) -> Issue | None:
    """Exactly one marker of the record's media kind, in the first human turn; none otherwise."""
    kind, _ = media_of(record)
    turns = record["conversations"]
    image, video = MediaKind.IMAGE.marker, MediaKind.VIDEO.marker
    counts = {m: sum(t["value"].count(m) for t in turns) for m in (image, video)}
    if kind == MediaKind.TEXT:
        if any(counts.values()):
            return Issue("media_marker", f"text-only record contains media markers {counts}")
        return None
    marker, other = (video, image) if kind == MediaKind.VIDEO else (image, video)
    if counts[marker] != 1 or counts[other]:
        return Issue("media_marker", f"{kind.name.lower()} record needs exactly one {marker} and no {other}, "
                                     f"found {counts}")
    if marker not in turns[0]["value"]:
        return Issue("media_marker", f"{marker} must be in the first human turn")
    return None


def check_variables(record: dict[str, Any]) -> Issue | None:
    """`variables` holds only the six known lists of real numbers."""
    variables = record.get("variables")
    if variables is None:
        return None
    if not isinstance(variables, dict):
        return Issue("variables", "'variables' must be an object of lists")
    for key, values in variables.items():
        if key not in VARIABLE_KEYS:
            return Issue("variables", f"unknown variables key {key!r}; expected one of {', '.join(VARIABLE_KEYS)}")
        if not isinstance(values, list) or any(
                isinstance(v, bool) or not isinstance(v, int | float) for v in values):
            return Issue("variables", f"variables.{key} must be a list of numbers")
    return None


def check_placeholder_counts(record: dict[str, Any]) -> Issue | None:
    """Each placeholder occurs exactly as often as its `variables` list has values."""
    counts = placeholder_counts("\n".join(t["value"] for t in record["conversations"]))
    variables = record.get("variables") or {}
    for placeholder, key in PLACEHOLDER_VARIABLES.items():
        have = len(variables.get(key) or [])
        if counts[placeholder] != have:
            return Issue("placeholder_count",
                         f"{placeholder} occurs {counts[placeholder]} times but variables.{key} has {have} values")
    return None


def check_value_range(record: dict[str, Any]) -> Issue | None:
    for key, values in (record.get("variables") or {}).items():
        for i, v in enumerate(values):
            if not math.isfinite(v) or not 0.0 <= v <= 1.0:
                return Issue("value_range", f"variables.{key}[{i}] = {v!r} is not a finite value in [0, 1]")
    return None


def check_split(record: dict[str, Any]) -> Issue | None:
    """`meta.split` is [start, end] frame indices with 0 <= start <= end."""
    meta = record.get("meta")
    if meta is None:
        return None
    if not isinstance(meta, dict):
        return Issue("split", "'meta' must be an object")
    split = meta.get("split")
    if split is None:
        return None
    ints = isinstance(split, list) and len(split) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) or isinstance(v, float) and v.is_integer() for v in split)
    if not ints:
        return Issue("split", f"meta.split must be [start_frame, end_frame] integers, got {split!r}")
    if not 0 <= split[0] <= split[1]:
        return Issue("split", f"meta.split {split!r} must satisfy 0 <= start <= end")
    return None


RULES: tuple[Rule, ...] = (
    check_shape, check_media_path, check_roles, check_media_marker, check_variables,
    check_placeholder_counts, check_value_range, check_split,
)


TOLERANCES = ("dropped_leading_gpt", "moved_marker", "extra_values", "clipped_values")
VALIDATIONS = ("release", "strict")


def tolerate(record: Any) -> tuple[Any, list[str]]:
    """The record as the release would train on it, and the tolerances applied (empty: unchanged).

    Only well-formed parts are repaired; whatever the release would not accept either is left for the rules.
    The input is never modified.
    """
    if not isinstance(record, dict) or not isinstance(record.get("conversations"), list):
        return record, []
    out, applied = copy.deepcopy(record), []
    turns = out["conversations"]
    if len(turns) > 1 and isinstance(turns[0], dict) and turns[0].get("from") == GPT:
        del turns[0]
        applied.append("dropped_leading_gpt")
    kind, _ = media_of(out)
    if kind != MediaKind.TEXT:
        moved = False
        for turn in turns:
            value = turn.get("value") if isinstance(turn, dict) else None
            if isinstance(value, str) and value.count(kind.marker) == 1 and not value.startswith(kind.marker):
                turn["value"] = kind.marker + "\n" + value.replace(kind.marker, "").strip()
                moved = True
        if moved:
            applied.append("moved_marker")
    variables = out.get("variables")
    if isinstance(variables, dict) and all(isinstance(t, dict) and isinstance(t.get("value"), str) for t in turns):
        counts = placeholder_counts("\n".join(t["value"] for t in turns))
        numbers = {k: v for k, v in variables.items() if isinstance(v, list)
                   and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)}
        extra = clipped = False
        for placeholder, key in PLACEHOLDER_VARIABLES.items():
            if key in numbers and len(numbers[key]) > counts[placeholder]:
                variables[key] = numbers[key] = numbers[key][:counts[placeholder]]
                extra = True
        for key, values in numbers.items():
            if any(math.isfinite(v) and not 0.0 <= v <= 1.0 for v in values):
                variables[key] = [min(1.0, max(0.0, v)) if math.isfinite(v) else v for v in values]
                clipped = True
        applied += ["extra_values"] * extra + ["clipped_values"] * clipped
    return out, applied


def validate_record(record: Any) -> Issue | None:
    """The first rule the record breaks, or None when it can be trained on."""
    for rule in RULES:
        issue = rule(record)
        if issue is not None:
            return issue
    return None
