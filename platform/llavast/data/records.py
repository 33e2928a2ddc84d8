"""Vocabulary of an ST-Align record shared by parsing, validation, indexing and tokenisation.

A record is the released training format (REFERENCE.md 3.1): `id`, `image` or `video` (a path relative to
the source's data folder), `conversations`, `variables` (placeholder values) and `meta.split`. Records
stay plain dicts until validated, because a bad record may have any shape.
"""

from __future__ import annotations

import re
from collections import Counter
from enum import StrEnum
from typing import Any

from model_zoo.contract import PLACEHOLDER_VARIABLES, MediaKind

VARIABLE_KEYS: tuple[str, ...] = tuple(PLACEHOLDER_VARIABLES.values())
PLACEHOLDER_RE = re.compile("|".join(re.escape(p) for p in PLACEHOLDER_VARIABLES))
HUMAN, GPT = "human", "gpt"


class Task(StrEnum):
    """Task types of ST-Align (paper Table 1), as detected per sample (see `tasks.detect_task`)."""

    STVG = "STVG"  # spatio-temporal video grounding: text -> span + tube
    ELC = "ELC"  # event localisation and captioning: start + box -> end + caption + tube
    SVG = "SVG"  # spatial video grounding: span + text -> tube
    TVG = "TVG"  # temporal video grounding: text -> one span
    DVC = "DVC"  # dense video captioning: several spans with captions
    TR = "TR"  # temporal referring: span -> text
    REC = "REC"  # referring expression comprehension: text -> box
    RC = "RC"  # region caption / REG: box -> text
    DGC = "DGC"  # dense grounded captioning: caption with several boxes
    CAPTION = "caption"
    QA = "QA"
    CONVERSATION = "conversation"
    CLASSIFICATION = "classification"


TASK_ALIASES = {"REG": Task.RC, "VQA": Task.QA, "VIDEOQA": Task.QA, "VC": Task.CAPTION, "CAPTIONING": Task.CAPTION}


def parse_task(name: str) -> Task:
    """A task name as written in a mixture YAML or record (case-insensitive, aliases like REG accepted)."""
    key = name.strip()
    for task in Task:
        if key.lower() == task.value.lower():
            return task
    if key.upper() in TASK_ALIASES:
        return TASK_ALIASES[key.upper()]
    raise ValueError(f"unknown task {name!r}; known: {', '.join(t.value for t in Task)} (and REG)")


def media_of(record: dict[str, Any]) -> tuple[MediaKind, str | None]:
    """(kind, relative path) of a record; a record naming both is rejected by validation first."""
    if record.get("video") is not None:
        return MediaKind.VIDEO, record["video"]
    if record.get("image") is not None:
        return MediaKind.IMAGE, record["image"]
    return MediaKind.TEXT, None


def placeholder_counts(text: str) -> Counter[str]:
    """How often each of the six placeholders occurs in `text`."""
    return Counter(PLACEHOLDER_RE.findall(text))


def split_window(record: dict[str, Any]) -> tuple[int, int] | None:
    """`meta.split` as (start, end) frame indices (inclusive), or None for the whole clip."""
    meta = record.get("meta") or {}
    split = meta.get("split") if isinstance(meta, dict) else None
    if split is None:
        return None
    return int(split[0]), int(split[1])
