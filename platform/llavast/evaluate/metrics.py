"""The benchmarks' metrics as pure functions (docs/evaluation.md, "Metrics", has the same definitions).

Per-sample functions return fractions in [0, 1]; an answer whose shape is missing scores 0 (a miss, kept in
the denominator). The `*_summary` functions aggregate them into the tables a user reads: every value a
percentage (0-100, as the paper reports) except `count`, and every table has `parse_rate` and `count`.
Thresholds compare the fractions, before scaling, exactly as written on each function (`>=` or strict `>`).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from llavast.data.benchmark import round_3
from llavast.data.media import frame_indices
from llavast.errors import LlavastError
from llavast.evaluate.answers import Box, ParsedAnswer, check_task

if TYPE_CHECKING:
    from llavast.data.benchmark import BenchmarkSample

THRESHOLDS = (0.3, 0.5, 0.7)
CAPTION_KEYS = ("BLEU_4", "METEOR", "ROUGE_L", "CIDEr")


# ---- overlap ----

def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two (x1, y1, x2, y2) boxes in continuous coordinates.

    Area = (x2 - x1)(y2 - y1), without the +1 of pixel-inclusive conventions; the intersection's width and
    height are clipped at 0; 0 when the union is not positive (degenerate boxes). An inverted box (x2 < x1)
    has no intersection with anything, so it scores 0.
    """
    ax1, ay1, ax2, ay2 = a
    bx1, by1, bx2, by2 = b
    iw = max(0.0, min(ax2, bx2) - max(ax1, bx1))
    ih = max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = iw * ih
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0 and inter > 0 else 0.0


def temporal_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Temporal IoU of spans (start, end): max(0, min(a1, b1) - max(a0, b0)) / (max(a1, b1) - min(a0, b0)).

    The denominator is the hull of the two spans (equal to their union when they overlap; when they do not,
    the numerator is 0 anyway). Guarded where the release divides by zero: a hull of length 0 (two identical
    zero-length spans) scores 0, as `box_iou` does for a zero union. A zero-length span inside a longer one
    also scores 0 (its intersection has length 0); a reversed span (start > end) never intersects: 0.
    """
    a0, a1 = a
    b0, b1 = b
    inter = max(0.0, min(a1, b1) - max(a0, b0))
    hull = max(a1, b1) - min(a0, b0)
    return inter / hull if hull > 0 else 0.0


# ---- REC (RefCOCO/+/g) ----

def rec_truth_box(xywh: Sequence[float], width: float, height: float) -> Box:
    """A REC ground-truth box (x, y, w, h pixels) in the answer's units: x1/W, y1/H, x2/W, y2/H, each rounded
    to 3 decimals and clipped to [0, 1] (the same normalisation as the training targets)."""
    x, y, w, h = xywh
    return (round_3(x / width), round_3(y / height), round_3((x + w) / width), round_3((y + h) / height))


def rec_iou(predicted: Sequence[float] | None, truth: Sequence[float]) -> float:
    """IoU of the answer's first box (normalised) with the normalised ground truth (`rec_truth_box`); an
    answer without a box scores 0. A predicted box is not clipped: a part outside the image is area that
    misses."""
    return box_iou(predicted, truth) if predicted is not None else 0.0


def rec_summary(ious: Sequence[float], parsed: Sequence[bool]) -> dict[str, float | int]:
    """REC table: `mIoU` = mean IoU over ALL samples; `Acc@0.5` = share of samples with IoU >= 0.5.

    Fixes the release, which dropped unparsable answers from the denominator (a model that answers one
    sample in ten, correctly, scored 100%): here they are misses with IoU 0, and `parse_rate` says how many
    there were.
    """
    _same_length(ious, parsed)
    return {"mIoU": _pct(_mean(ious)), "Acc@0.5": _pct(_share(ious, 0.5, strict=False)), **_coverage(parsed)}


# ---- TVG (Charades-STA) ----

def tvg_iou(predicted: Sequence[float] | None, truth: Sequence[float]) -> float:
    """tIoU of the answer's first span with the ground truth span (both normalised to [0, 1]); no span: 0."""
    return temporal_iou(predicted, truth) if predicted is not None else 0.0


def tvg_summary(ious: Sequence[float], parsed: Sequence[bool]) -> dict[str, float | int]:
    """TVG table: `mIoU` = mean tIoU over all samples; `R@x` = share with tIoU STRICTLY greater than x, for
    x in 0.3, 0.5, 0.7 (the release's and the field's convention for Charades-STA). Unparsed answers are
    misses (tIoU 0), kept in the denominator."""
    _same_length(ious, parsed)
    table: dict[str, float | int] = {"mIoU": _pct(_mean(ious))}
    for x in THRESHOLDS:
        table[f"R@{x}"] = _pct(_share(ious, x, strict=True))
    return {**table, **_coverage(parsed)}


# ---- STVG / SVG / ELC (the ST-Align benchmark) ----

def sampled_frames(split: Sequence[int], num_frames: int) -> list[int]:
    """The N frames a model sees of the window [s, e] (inclusive; dur = e - s + 1), by the data path's own
    `frame_indices`: s + round(i / (N - 1) * (dur - 1)) for i = 0..N-1 (Python's round, half to even, as the
    release). Frames repeat when dur < N; N = 1 is the window's middle frame."""
    s, e = int(split[0]), int(split[1])
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    return frame_indices(e + 1, num_frames, (s, e))


def time_to_frame(time: float, split: Sequence[int]) -> int:
    """A predicted normalised time t -> the frame round(s + t (dur - 1)). For a token k of M_t bins,
    t = k / (M_t - 1): the release's round(s + k / (M_t - 1) * (dur - 1)) (it hard-coded M_t - 1 = 99)."""
    s, e = int(split[0]), int(split[1])
    return round(s + time * (e - s))


def frame_to_time(frame: int, split: Sequence[int]) -> float:
    """A ground-truth frame f -> the normalised time round((f - s) / (dur - 1), 3); 0 when dur = 1."""
    s, e = int(split[0]), int(split[1])
    return round((frame - s) / (e - s), 3) if e > s else 0.0


def pixel_box(box: Sequence[float], width: float, height: float) -> Box:
    """A predicted normalised box -> integer pixels: round(x * W), round(y * H) (Python's round)."""
    x1, y1, x2, y2 = box
    return (round(x1 * width), round(y1 * height), round(x2 * width), round(y2 * height))


def tube_frames(tube: Mapping[float, Sequence[float]], split: Sequence[int], width: float,
                height: float) -> dict[int, Box]:
    """A predicted tube (normalised time -> normalised box) as frame -> pixel box.

    Each key goes to `time_to_frame`; when several keys land on one frame, the one later in the tube's
    order wins (the release fills a dict in that order). Frames are not restricted to the sampled ones: a
    predicted frame the ground truth does not have counts in the union.
    """
    frames: dict[int, Box] = {}
    for time, box in tube.items():
        frames[time_to_frame(time, split)] = pixel_box(box, width, height)
    return frames


@dataclass(frozen=True)
class STTruth:
    """An ST-Align benchmark sample's ground truth: split window, frame size, the `<bboxes>` tube (frame ->
    (x, y, w, h) pixels) and the `<s>`/`<e>` frames."""

    split: tuple[int, int]
    width: int
    height: int
    boxes: Mapping[int, Sequence[float]] = field(default_factory=dict)
    start: int | None = None
    end: int | None = None

    @classmethod
    def from_sample(cls, sample: BenchmarkSample) -> STTruth:
        return cls(split=sample.split, width=sample.width, height=sample.height, boxes=sample.boxes,
                   start=sample.start, end=sample.end)

    def span(self) -> tuple[float, float]:
        """The ground-truth span in normalised units (`frame_to_time` of `<s>` and `<e>`)."""
        if self.start is None or self.end is None:
            raise ValueError("this benchmark sample has no <s>/<e> frames: tIoU needs them")
        return frame_to_time(self.start, self.split), frame_to_time(self.end, self.split)


@dataclass(frozen=True)
class STScores:
    """One ST-Align sample's scores, fractions in [0, 1]."""

    tiou: float
    siou: float
    viou: float


def truth_frames(truth: STTruth, num_frames: int) -> dict[int, Box]:
    """The ground-truth tube on the sampled frames only: frame -> (x, y, x + w, y + h) pixels, for each
    `<bboxes>` frame among `sampled_frames(split, N)`."""
    sampled = set(sampled_frames(truth.split, num_frames))
    return {int(f): (b[0], b[1], b[0] + b[2], b[1] + b[3]) for f, b in truth.boxes.items() if int(f) in sampled}


def tube_scores(predicted: Mapping[int, Sequence[float]], truth: Mapping[int, Sequence[float]]) -> tuple[float, float]:
    """(sIoU, vIoU) of two tubes given as frame -> xyxy box, with I = frames in both and U = frames in either:
    sIoU = sum over I of IoU / max(|I|, 1); vIoU = the same sum / max(|U|, 1). An empty prediction scores 0."""
    both = predicted.keys() & truth.keys()
    either = predicted.keys() | truth.keys()
    total = sum(box_iou(predicted[f], truth[f]) for f in both)
    return total / max(len(both), 1), total / max(len(either), 1)


def st_sample_scores(task: str, answer: ParsedAnswer | None, truth: STTruth, num_frames: int) -> STScores:
    """tIoU, sIoU and vIoU of one STVG, SVG or ELC answer (None: unparsable, all 0).

    - sIoU, vIoU: `tube_scores` of the answer's tube (`tube_frames`: key -> frame, box -> integer pixels) with
      the ground truth on the N sampled frames (`truth_frames`; N = the frames the model sampled).
    - tIoU (normalised units, against `STTruth.span`): STVG's predicted span is the answer's first `{a,b}`;
      ELC's is [the start given in the prompt (the ground-truth `<s>`), the answer's "Ends in" time] (the
      release parsed `{a,b}` from ELC answers, which say "Ends in e" and have none, so its ELC tIoU was ~0);
      SVG is given the span and has no tIoU (0, not reported).
    """
    task = check_task(task)
    if task not in ("stvg", "svg", "elc"):
        raise ValueError(f"st_sample_scores scores stvg, svg or elc, not {task}")
    if answer is None:
        return STScores(0.0, 0.0, 0.0)
    tiou = 0.0
    if task == "stvg" and answer.span is not None:
        tiou = temporal_iou(answer.span, truth.span())
    elif task == "elc" and answer.end is not None:
        gt = truth.span()
        tiou = temporal_iou((gt[0], answer.end), gt)
    predicted = tube_frames(answer.tube, truth.split, truth.width, truth.height)
    siou, viou = tube_scores(predicted, truth_frames(truth, num_frames)) if predicted else (0.0, 0.0)
    return STScores(tiou, siou, viou)


def st_summary(task: str, scores: Sequence[STScores], parsed: Sequence[bool]) -> dict[str, float | int]:
    """STVG / ELC / SVG table: m_tIoU, m_sIoU, m_vIoU = means over ALL samples (unparsable ones score 0);
    tIoU@x, sIoU@x, vIoU@x = share of samples with that score >= x, x in 0.3, 0.5, 0.7. SVG has no tIoU keys.
    (The peer's TubeDETR-style vIoU@ uses strict >; this benchmark's release uses >=.)"""
    task = check_task(task)
    _same_length(scores, parsed)
    table: dict[str, float | int] = {}
    for name in (("s", "v") if task == "svg" else ("t", "s", "v")):
        values = [getattr(s, f"{name}iou") for s in scores]
        table[f"m_{name}IoU"] = _pct(_mean(values))
        for x in THRESHOLDS:
            table[f"{name}IoU@{x}"] = _pct(_share(values, x, strict=False))
    return {**table, **_coverage(parsed)}


# ---- ELC captions ----

def caption_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus-level BLEU_4, METEOR, ROUGE_L and CIDEr (x 100) of predicted captions against one reference
    each, with pycocoevalcap: both sides through its PTB tokenizer (Stanford CoreNLP, Java: lower-cases and
    drops punctuation), then `Bleu(4)` (its corpus BLEU-4), `Meteor` (Java, METEOR 1.5), `Rouge` (ROUGE-L,
    mean over samples) and `Cider` (CIDEr-D as pycocoevalcap computes it, mean; its scale reaches 10, so the
    table's value can exceed 100). An unparsed answer's caption is "" and scores 0 on every metric, kept in
    the corpus. No samples: every value 0, without starting Java. Java missing: a LlavastError saying so.
    """
    _same_length(predictions, references)
    if not predictions:
        return dict.fromkeys(CAPTION_KEYS, 0.0)
    if shutil.which("java") is None:
        raise LlavastError("ELC caption metrics need Java on PATH (pycocoevalcap's PTB tokenizer and METEOR 1.5 "
                           "are Java programs): install a Java runtime, e.g. apt-get install default-jre-headless")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    refs = tokenizer.tokenize({i: [{"caption": r}] for i, r in enumerate(references)})
    hyps = tokenizer.tokenize({i: [{"caption": p}] for i, p in enumerate(predictions)})
    bleu, _ = Bleu(4).compute_score(refs, hyps, verbose=0)
    meteor_scorer = Meteor()
    try:
        meteor, _ = meteor_scorer.compute_score(refs, hyps)
    finally:
        del meteor_scorer  # its __del__ ends the Java process
    rouge, _ = Rouge().compute_score(refs, hyps)
    cider, _ = Cider().compute_score(refs, hyps)
    return {"BLEU_4": _pct(bleu[3]), "METEOR": _pct(meteor), "ROUGE_L": _pct(rouge), "CIDEr": _pct(cider)}


def elc_summary(scores: Sequence[STScores], parsed: Sequence[bool], predicted_captions: Sequence[str],
                reference_captions: Sequence[str]) -> dict[str, float | int]:
    """ELC table: `st_summary("elc", ...)` plus `caption_scores` (BLEU_4, METEOR, ROUGE_L, CIDEr)."""
    table = st_summary("elc", scores, parsed)
    coverage = {k: table.pop(k) for k in ("parse_rate", "count")}
    return {**table, **caption_scores(predicted_captions, reference_captions), **coverage}


# ---- helpers ----


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _share(values: Sequence[float], x: float, strict: bool) -> float:
    hits = sum(1 for v in values if (v > x if strict else v >= x))
    return hits / len(values) if values else 0.0


def _pct(fraction: float) -> float:
    return 100.0 * float(fraction)


def _coverage(parsed: Sequence[bool]) -> dict[str, float | int]:
    """`parse_rate` (percent of answers with every shape the task scores) and `count` (samples scored)."""
    return {"parse_rate": _pct(_share([float(p) for p in parsed], 1.0, strict=False)), "count": len(parsed)}


def _same_length(a: Sequence[object], b: Sequence[object]) -> None:
    if len(a) != len(b):
        raise ValueError(f"per-sample lists differ in length: {len(a)} != {len(b)}")
