"""The prompts the released model was evaluated with, rebuilt for any eval sample (docs/evaluation.md).

`build_prompt(sample, seed)` gives what `llavast.data.tokenize.ConversationTokenizer` consumes: one human
turn holding the `<video>`/`<image>` marker and coordinate placeholders (`<TEMP-INPUT>`, `<WIDTH-INPUT>`,
`<HEIGHT-INPUT>`), and the `variables` holding their values (3 decimals, clipped to [0, 1]) in order of
appearance, so an eval prompt is tokenised exactly as training data is. The runner appends the assistant
header. The sample (with its ground truth) travels with the prompt for scoring.

ST-Align (STVG, SVG, ELC), as the release rewrites the benchmark question:
- "From <s> to <e>" becomes a phrase of `SPAN_PHRASES` + " {<s>,<e>}";
- a span `{<s>,<e>}` becomes " {<TEMP-INPUT><TEMP-INPUT>} " (times (f - s) / (e - s) in the split window);
- "Starts in <s>" becomes " Starts in <TEMP-INPUT> ";
- `<bbox>` becomes " [<WIDTH-INPUT><HEIGHT-INPUT><WIDTH-INPUT><HEIGHT-INPUT>]" (x1/W, y1/H, x2/W, y2/H);
- any other `<s>`/`<e>` becomes its time as plain text (the release's `str` of the rounded value);
- the task's instruction (`INSTRUCTIONS`) is appended with no separator.
TVG (Charades-STA): `TVG_PROMPT` with the caption lower-cased and its surrounding "." and spaces stripped.
REC (RefCOCO/+/g): one of `REC_PROMPTS` with the expression as written.
The texts themselves are the release's, kept with its other formats in `llavast/data/prompts.py` (synthetic
training data asks its questions in the same words).

Where the release draws a phrase or template with `random.choice` (unseeded), here the choice comes from an
rng seeded by (seed, sample id): the same seed gives the same prompts in any process, on any worker.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from llavast.data.benchmark import round_3
from llavast.data.prompts import FROM_TO, INSTRUCTIONS, REC_PROMPTS, SPAN_PHRASES, TVG_PROMPT, tvg_caption
from llavast.data.records import VARIABLE_KEYS
from llavast.errors import DataError
from llavast.evaluate.benchmarks import EvalSample, RECSample, STSample, TVGSample
from model_zoo.contract import MediaKind

_TIME = "temporal_input_locations"
_WIDTH = "spatial_width_input_locations"
_HEIGHT = "spatial_height_input_locations"
_PIECE_RE = re.compile(r"\{\s*(<s>|<e>)\s*,\s*(<s>|<e>)\s*\}|Starts in (<s>|<e>)|<bbox>|<s>|<e>")


@dataclass(frozen=True)
class Prompt:
    """One eval question as the model receives it, and the sample it asks about (ground truth included)."""

    id: str
    task: str
    media_kind: MediaKind
    media: str  # relative to the benchmark's data folder
    text: str  # the human turn
    variables: dict[str, list[float]]  # all six keys, INPUT lists filled in order of appearance
    choice: str | None  # the span phrase (ST-Align) or REC template drawn for this sample, if any
    sample: EvalSample

    @property
    def conversations(self) -> list[dict[str, str]]:
        """The conversation to tokenise: the human turn alone (generation continues after it)."""
        return [{"from": "human", "value": self.text}]


def sample_rng(seed: int, sample_id: str) -> random.Random:
    """The rng of one sample's prompt choices: seeded by (seed, sample id) through SHA-256, so it depends on
    nothing else (not the process, not the sample's position among others)."""
    digest = hashlib.sha256(f"{seed}|{sample_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def build_prompt(sample: EvalSample, seed: int = 0) -> Prompt:
    """The prompt the release would give `sample` (module docstring), its random choice fixed by `seed`."""
    rng = sample_rng(seed, sample.id)
    if isinstance(sample, STSample):
        text, variables, choice = _st_text(sample, rng)
        return Prompt(sample.id, sample.task, MediaKind.VIDEO, sample.video, text, variables, choice, sample)
    if isinstance(sample, TVGSample):
        text = MediaKind.VIDEO.marker + "\n" + TVG_PROMPT.format(caption=tvg_caption(sample.caption))
        return Prompt(sample.id, "tvg", MediaKind.VIDEO, sample.video, text, _variables(), None, sample)
    if isinstance(sample, RECSample):
        marker = MediaKind.IMAGE.marker
        if marker in sample.expression:  # the release uses such an expression as the whole prompt
            return Prompt(sample.id, "rec", MediaKind.IMAGE, sample.image, sample.expression, _variables(), None,
                          sample)
        template = rng.choice(REC_PROMPTS)
        text = marker + "\n" + template.format(expression=sample.expression)
        return Prompt(sample.id, "rec", MediaKind.IMAGE, sample.image, text, _variables(), template, sample)
    raise TypeError(f"not an eval sample: {type(sample).__name__}")


def build_prompts(samples: Sequence[EvalSample], seed: int = 0) -> list[Prompt]:
    return [build_prompt(s, seed) for s in samples]


def _variables() -> dict[str, list[float]]:
    return {key: [] for key in VARIABLE_KEYS}


def _st_text(sample: STSample, rng: random.Random) -> tuple[str, dict[str, list[float]], str | None]:
    record = sample.record
    text = sample.question
    choice = None
    if FROM_TO in text:
        choice = rng.choice(SPAN_PHRASES)
        text = text.replace(FROM_TO, choice + " {<s>,<e>}")
    variables = _variables()

    def time(template: str) -> float:
        frame = record.start if template == "<s>" else record.end
        if frame is None:
            raise DataError(f"benchmark record {record.index} uses {template} but meta.time_token has none")
        s, e = record.split
        return round_3((frame - s) / (e - s)) if e > s else 0.0

    def piece(match: re.Match[str]) -> str:
        first, second, starts = match.group(1), match.group(2), match.group(3)
        if first is not None:
            variables[_TIME] += [time(first), time(second)]
            return " {<TEMP-INPUT><TEMP-INPUT>} "
        if starts is not None:
            variables[_TIME].append(time(starts))
            return " Starts in <TEMP-INPUT> "
        if match.group(0) == "<bbox>":
            if record.box is None:
                raise DataError(f"benchmark record {record.index} uses <bbox> but meta.spatial_token has none")
            x1, y1, x2, y2 = (round_3(v) for v in record.norm_box(record.box))
            variables[_WIDTH] += [x1, x2]
            variables[_HEIGHT] += [y1, y2]
            return " [<WIDTH-INPUT><HEIGHT-INPUT><WIDTH-INPUT><HEIGHT-INPUT>]"
        return str(time(match.group(0)))

    text = _PIECE_RE.sub(piece, text) + INSTRUCTIONS[sample.task]
    marker = MediaKind.VIDEO.marker
    if not text.startswith(marker):  # the release moves a lone marker to the front
        text = (marker + "\n" + text.replace(marker, "").strip()).strip()
    return text, variables, choice
