"""Reading a model's raw answer: normalise its coordinate tokens to numbers, then parse the answer shapes.

A model answers with coordinate tokens `<TEMP-k>`, `<HEIGHT-k>`, `<WIDTH-k>` (k in [0, M), M the axis' number
of coordinate bins, 100 by default) in the shapes it was trained on (`data/benchmark.py`, `data/synth.py`):

    TVG    {<TEMP-a>,<TEMP-b>}                    (the release writes {<TEMP-a><TEMP-b>}: both are read)
    REC    [<WIDTH-x1>,<HEIGHT-y1>,<WIDTH-x2>,<HEIGHT-y2>]
    STVG   During the span of {s,e}. Object bounding box: <TEMP-k>:[x1,y1,x2,y2], <TEMP-k>:[...], ...
    ELC    Ends in <TEMP-e>, <caption>. Object bounding box: <TEMP-k>:[...], ...
    SVG    <TEMP-k>:[x1,y1,x2,y2], ...

The same shapes with plain normalised numbers (`{0.12,0.4}`, `0.5:[0.1,0.2,0.3,0.4]`) are read as they are:
that is how other models' outputs are scored. Every value the parser returns is normalised to [0, 1] units
(a token k of an axis with M bins reads k / (M - 1)), tube keys included: key k reads as the time k / (M_t - 1),
which `metrics.tube_frames` maps to a frame exactly as the release maps the token index.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

Box = tuple[float, float, float, float]

AXES = ("TEMP", "HEIGHT", "WIDTH")
DEFAULT_BINS = 100
TASKS = ("stvg", "svg", "elc", "tvg", "rec")
OK = "ok"
UNPARSABLE = "unparsable"
END_OF_TURN = "<|im_end|>"

# Coordinate token names as the model's vocabulary writes them (`<AXIS-{k:03d}>`): any number of digits is
# read, so that M > 1000 works; whether k is a token of the vocabulary is decided by the axis' M.
_TOKEN_RE = re.compile(r"<(" + "|".join(AXES) + r")-(\d+)>")
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_BOX = r"\[\s*(" + _NUM + r")\s*,\s*(" + _NUM + r")\s*,\s*(" + _NUM + r")\s*,\s*(" + _NUM + r")\s*\]"
_BOX_RE = re.compile(_BOX)
_SPAN_RE = re.compile(r"\{\s*(" + _NUM + r")\s*,\s*(" + _NUM + r")\s*\}")
_TUBE_RE = re.compile(r"(?<![\w.+-])(" + _NUM + r")\s*:\s*" + _BOX)
_END_RE = re.compile(r"Ends in\s*(" + _NUM + r")")
_SEPARATOR_AHEAD = re.compile(r"\s*[,\]}:]")
_BOX_TAIL_RE = re.compile(r"\s*Object bounding box\s*:.*", re.DOTALL)
_ENDS_IN_HEAD_RE = re.compile(r"^\s*Ends in[^,]*,\s*")
_SENTENCE_END_RE = re.compile(r"\.(?!\d)")


@dataclass(frozen=True)
class CoordinateBins:
    """Number of coordinate tokens per axis (M_t, M_h, M_w); a token k of an axis reads k / (M - 1)."""

    temporal: int = DEFAULT_BINS
    height: int = DEFAULT_BINS
    width: int = DEFAULT_BINS

    def __post_init__(self) -> None:
        for name in ("temporal", "height", "width"):
            if getattr(self, name) < 2:
                raise ValueError(f"coordinate bins: {name} needs M >= 2 (a token k reads k / (M - 1))")

    @classmethod
    def of(cls, bins: int | CoordinateBins | Mapping[str, int]) -> CoordinateBins:
        """`100` (every axis), a `CoordinateBins`, or `{"TEMP": m_t, "HEIGHT": m_h, "WIDTH": m_w}`."""
        if isinstance(bins, CoordinateBins):
            return bins
        if isinstance(bins, Mapping):
            return cls(int(bins["TEMP"]), int(bins["HEIGHT"]), int(bins["WIDTH"]))
        return cls(int(bins), int(bins), int(bins))

    def size(self, axis: str) -> int:
        return {"TEMP": self.temporal, "HEIGHT": self.height, "WIDTH": self.width}[axis]


def normalise_answer(text: str, bins: int | CoordinateBins | Mapping[str, int] = DEFAULT_BINS) -> str:
    """The release's answer normalisation, with M - 1 of the answering model in place of its hard-coded 99.

    `<|im_end|>` is removed; every coordinate token `<AXIS-k>` with k < M becomes the number k / (M - 1)
    followed by a comma, then ",]" -> "]" and ",}" -> "}". So `{<TEMP-012><TEMP-040>}` reads `{0.1212...,0.4040...}`
    at M = 100. A token followed (after spaces) by `,`, `]`, `}` or `:` gets no comma of its own: this project's
    training text writes `[<WIDTH-a>,<HEIGHT-b>,...]` and `<TEMP-k>:[...]`, which would otherwise read `,,`
    (the release's own text has no commas between tokens, and reads the same either way). A token with k >= M
    is not in the vocabulary: it is left as text, so the shape holding it does not parse.
    """
    grid = CoordinateBins.of(bins)

    def sub(match: re.Match[str]) -> str:
        axis, index = match.group(1), int(match.group(2))
        m = grid.size(axis)
        if index >= m:
            return match.group(0)
        value = repr(index / (m - 1))
        return value if _SEPARATOR_AHEAD.match(plain, match.end()) else value + ","

    plain = text.replace(END_OF_TURN, "")
    return _TOKEN_RE.sub(sub, plain).replace(",]", "]").replace(",}", "}")


@dataclass(frozen=True)
class ParsedAnswer:
    """The shapes found in one normalised answer; every value in normalised [0, 1] units (not clipped)."""

    text: str  # the normalised answer
    box: Box | None = None  # the first [a,b,c,d]
    span: tuple[float, float] | None = None  # the first {a,b}
    end: float | None = None  # ELC: "Ends in e"
    tube: dict[float, Box] = field(default_factory=dict)  # every k:[a,b,c,d], time -> box; a later k overwrites

    def status(self, task: str) -> str:
        """`ok` when every shape the task scores was found, else `unparsable`.

        rec: the box; tvg: the span; stvg: the span and a non-empty tube; elc: the end and a non-empty tube;
        svg: a non-empty tube. The metrics score each shape found on its own (a tube without a span still
        gets its sIoU); the status only feeds the parse rate.
        """
        needs = {
            "rec": (self.box is not None,),
            "tvg": (self.span is not None,),
            "stvg": (self.span is not None, bool(self.tube)),
            "elc": (self.end is not None, bool(self.tube)),
            "svg": (bool(self.tube),),
        }[check_task(task)]
        return OK if all(needs) else UNPARSABLE


def check_task(task: str) -> str:
    """A task name as the evaluation spells it (stvg, svg, elc, tvg, rec), case-insensitive."""
    name = str(task).strip().lower()
    if name not in TASKS:
        raise ValueError(f"unknown evaluation task {task!r}; known: {', '.join(TASKS)}")
    return name


def parse_answer(text: str, bins: int | CoordinateBins | Mapping[str, int] = DEFAULT_BINS) -> ParsedAnswer:
    """Normalise (`normalise_answer`) and parse a raw answer; never raises on model output.

    As the release (spaces inside a shape are ignored): box = the FIRST `[a,b,c,d]`; span = the FIRST `{a,b}`;
    tube = every `k:[a,b,c,d]`, keyed by k, a later duplicate key overwriting the earlier box (the key keeps
    its first position in the dict's order); ELC's end = the number after the first "Ends in". A shape that is
    absent is None (empty tube): where the release used the span [0, 0], the metrics score 0 all the same.
    """
    normal = normalise_answer(text, bins)
    box = _BOX_RE.search(normal)
    span = _SPAN_RE.search(normal)
    end = _END_RE.search(normal)
    tube: dict[float, Box] = {}
    for match in _TUBE_RE.finditer(normal):
        key, *coords = (float(g) for g in match.groups())
        tube[key] = tuple(coords)  # type: ignore[assignment]
    return ParsedAnswer(
        text=normal,
        box=tuple(float(g) for g in box.groups()) if box else None,  # type: ignore[arg-type]
        span=(float(span.group(1)), float(span.group(2))) if span else None,
        end=float(end.group(1)) if end else None,
        tube=tube,
    )


def elc_predicted_caption(text: str) -> str:
    """ELC's predicted caption: the first sentence of the answer, after its last comma.

    Read from the normalised answer with the tube (" Object bounding box: ...") cut off first; a "." followed
    by a digit (a number such as 0.505) does not end a sentence. "Ends in 0.5, the red circle moves left.
    Object bounding box: ..." -> "the red circle moves left". No text -> "".
    """
    head = _BOX_TAIL_RE.sub("", text.replace(END_OF_TURN, ""))
    sentence = _SENTENCE_END_RE.split(head, maxsplit=1)[0]
    return sentence.rsplit(",", 1)[-1].strip()


def elc_reference_caption(text: str) -> str:
    """ELC's reference caption: the ground-truth answer without "Ends in <t>, " and " Object bounding box: ..."."""
    return _BOX_TAIL_RE.sub("", _ENDS_IN_HEAD_RE.sub("", text)).strip()
