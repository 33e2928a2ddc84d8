"""Task type of a sample: declared in the mixture or record, else read from its coordinate placeholders.

Released records carry no task field, but the placeholders say what is asked and what is answered:
time in and/or out, boxes in and/or out. That separates every coordinate task; coordinate-free samples
(caption, QA, conversation, classification) are told apart by turn count and the question's wording,
which is a heuristic, so a mixture entry may declare `task:` to override it.
"""

from __future__ import annotations

import re
from typing import Any

from llavast.data.records import GPT, HUMAN, Task, media_of, parse_task, placeholder_counts
from model_zoo.contract import MediaKind

_CLASSIFY_RE = re.compile(r"\b(classify|classification|which (action|category|class)|categor(y|ies))\b", re.I)
_CAPTION_RE = re.compile(r"\b(describe|description|caption|summari[sz]e|what happens)\b", re.I)


def detect_task(record: dict[str, Any], declared: Task | None = None) -> Task:
    """The sample's task: `declared` (mixture entry) > record `task`/`meta.task` > placeholder analysis."""
    if declared is not None:
        return declared
    for value in (record.get("task"), (record.get("meta") or {}).get("task")):
        if isinstance(value, str):
            try:
                return parse_task(value)
            except ValueError:
                pass
    kind, _ = media_of(record)
    turns = record.get("conversations") or []
    human = [t.get("value", "") for t in turns if t.get("from") == HUMAN]
    gpt = [t.get("value", "") for t in turns if t.get("from") == GPT]
    asked = placeholder_counts("\n".join(human))
    answered = placeholder_counts("\n".join(gpt))
    t_in, t_out = asked["<TEMP-INPUT>"], answered["<TEMP-OUTPUT>"]
    s_in = asked["<WIDTH-INPUT>"] + asked["<HEIGHT-INPUT>"]
    s_out = answered["<WIDTH-OUTPUT>"] + answered["<HEIGHT-OUTPUT>"]
    if kind == MediaKind.VIDEO and t_out and s_out:
        if t_in and s_in:
            return Task.ELC
        return Task.SVG if t_in else Task.STVG
    if kind == MediaKind.VIDEO and t_out:
        most_in_one_answer = max(placeholder_counts(v)["<TEMP-OUTPUT>"] for v in gpt)
        return Task.DVC if most_in_one_answer > 2 else Task.TVG
    if kind == MediaKind.VIDEO and t_in:
        return Task.TR
    if s_out:
        boxes_in_one_answer = max(placeholder_counts(v)["<WIDTH-OUTPUT>"] for v in gpt) // 2  # x1 and x2
        return Task.DGC if boxes_in_one_answer > 1 else Task.REC
    if s_in:
        return Task.RC
    if len(human) > 1:
        return Task.CONVERSATION
    question = human[0] if human else ""
    if _CLASSIFY_RE.search(question):
        return Task.CLASSIFICATION
    if _CAPTION_RE.search(question):
        return Task.CAPTION
    return Task.QA
