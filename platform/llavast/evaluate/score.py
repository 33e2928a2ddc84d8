"""Scoring a benchmark: its samples and a model's raw answers -> one row per sample and the task's table.

The one scorer behind both the eval runner (`runner.py`, answers generated here) and `llavast eval score`
(answers from any model, as a JSONL file of `{"id", "output"}`). Pure: no model, no Ray, no MLflow (the ELC
caption metrics start pycocoevalcap's Java tools).

A sample without an answer (not in the predictions file; or a sample the runner could not decode) is
scored as a miss, with the parse status saying why; every table counts ALL samples.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llavast.errors import DataError
from llavast.evaluate.answers import (
    OK,
    CoordinateBins,
    check_task,
    elc_predicted_caption,
    elc_reference_caption,
    parse_answer,
)
from llavast.evaluate.benchmarks import BenchmarkFile, EvalSample, RECSample, STSample, TVGSample
from llavast.evaluate.metrics import (
    elc_summary,
    rec_iou,
    rec_summary,
    st_sample_scores,
    st_summary,
    tvg_iou,
    tvg_summary,
)

MISSING = "missing"  # no answer was given for the sample
# The per-sample metric columns of each task (fractions in [0, 1]).
SAMPLE_METRICS = {"stvg": ("tiou", "siou", "viou"), "elc": ("tiou", "siou", "viou"), "svg": ("siou", "viou"),
                  "tvg": ("iou",), "rec": ("iou",)}
DEFAULT_NUM_FRAMES = 100  # the N the released model samples per video (ST-Align's sIoU/vIoU frames)


@dataclass(frozen=True)
class Scored:
    """A task's per-sample rows (id, output, parse_status, the task's `SAMPLE_METRICS`) and its table."""

    task: str
    rows: list[dict[str, Any]]
    summary: dict[str, float | int]


def score(task: str, samples: Sequence[EvalSample], outputs: Mapping[str, str | None],
          bins: int | CoordinateBins | Mapping[str, int] = 100, num_frames: int = DEFAULT_NUM_FRAMES,
          statuses: Mapping[str, str] | None = None) -> Scored:
    """Score `outputs` (sample id -> raw answer) on `samples` of `task`.

    `bins`: the answering model's coordinate bins (M per axis; a token k reads k / (M - 1)); `num_frames`: the
    frames it sampled per video (sIoU/vIoU are taken on those). `statuses` (id -> reason) marks samples that
    got no answer for a known reason (the runner's decode failures); a sample missing from `outputs` is
    `missing`. Either way it is a miss: every metric 0, and not parsed.
    """
    task = check_task(task)
    grid = CoordinateBins.of(bins)
    rows: list[dict[str, Any]] = []
    scores: list[Any] = []
    parsed: list[bool] = []
    captions: tuple[list[str], list[str]] = ([], [])
    for sample in samples:
        if sample.task != task:
            raise ValueError(f"sample {sample.id} is a {sample.task} sample, not {task}")
        output = outputs.get(sample.id)
        answer = parse_answer(output, grid) if output is not None else None
        status = answer.status(task) if answer is not None else (statuses or {}).get(sample.id, MISSING)
        row: dict[str, Any] = {"id": sample.id, "output": output or "", "parse_status": status}
        if isinstance(sample, STSample):
            st = st_sample_scores(task, answer, sample.truth, num_frames)
            scores.append(st)
            row.update(tiou=st.tiou, siou=st.siou, viou=st.viou)
            if task == "elc":
                captions[0].append(elc_predicted_caption(answer.text) if answer is not None else "")
                captions[1].append(elc_reference_caption(sample.answer))
        elif isinstance(sample, TVGSample):
            iou = tvg_iou(answer.span if answer is not None else None, sample.span)
            scores.append(iou)
            row["iou"] = iou
        elif isinstance(sample, RECSample):
            iou = rec_iou(answer.box if answer is not None else None, sample.truth)
            scores.append(iou)
            row["iou"] = iou
        else:
            raise TypeError(f"not an eval sample: {type(sample).__name__}")
        parsed.append(status == OK)
        rows.append({k: v for k, v in row.items() if k in ("id", "output", "parse_status")
                     or k in SAMPLE_METRICS[task]})
    if task == "elc":
        summary = elc_summary(scores, parsed, *captions)
    elif task in ("stvg", "svg"):
        summary = st_summary(task, scores, parsed)
    else:
        summary = (tvg_summary if task == "tvg" else rec_summary)(scores, parsed)
    return Scored(task, rows, summary)


def read_predictions(text: str, source: str) -> dict[str, str]:
    """A predictions JSONL (`{"id": ..., "output": "..."}` per line; blank lines skipped) -> id -> output.

    `id` is compared as a string (`3` and `"3"` are the same sample). A line that is not such an object, or an
    id given twice, is a DataError naming the line.
    """
    outputs: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{source}:{number}: not JSON ({err.msg})") from err
        if not isinstance(item, dict) or "id" not in item or not isinstance(item.get("output"), str):
            raise DataError(f'{source}:{number}: expected {{"id": ..., "output": "<answer text>"}}, got {line[:120]!r}')
        key = str(item["id"])
        if key in outputs:
            raise DataError(f"{source}:{number}: id {key!r} is given twice")
        outputs[key] = item["output"]
    return outputs


def check_prediction_ids(outputs: Mapping[str, object], benchmark: BenchmarkFile, source: str) -> None:
    """Every predicted id must name a record of the benchmark (a quarantined one too: its answer is not scored);
    a stray id means the files do not belong together."""
    known = {s.id for s in benchmark.samples} | {q.id if q.id is not None else str(q.index)
                                                 for q in benchmark.quarantined}
    unknown = [k for k in outputs if k not in known]
    if unknown:
        raise DataError(f"{source}: {len(unknown)} prediction id(s) are not samples of the benchmark, e.g. "
                        f"{', '.join(repr(k) for k in unknown[:5])}; ids are the record's `id`, else its 0-based "
                        "position in the benchmark file")
