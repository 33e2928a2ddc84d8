"""The texts of the release's evaluation prompts: the span phrases, each task's instruction, the TVG template
and the REC templates. `llavast.evaluate.prompts` builds an eval question from them; synthetic training data
(`data/synth.py`) asks its questions in the same words, so a model trained on it meets the benchmark's form.
"""

from __future__ import annotations

SPAN_PHRASES = ("During the span of", "In the time range", "During the period", "Within the time frame of",
                "In the time period", "During", "Between", "At")
INSTRUCTIONS = {
    "stvg": ("Please firstly give the timestamps, and then give the spatial bounding box corresponding to each "
             "timestamp in the time period."),
    "svg": "Please give the spatial bounding box corresponding to each timestamp in the time period.",
    "elc": ("Please firstly give the end timestamp, then give the event associated with the object/subject, "
            "finally give the spatial bounding box corresponding to each timestamp in the time period."),
}
TVG_PROMPT = ("Give you a textual query: '{caption}'. When does the described content occur in the video? "
              "Please return the start and end timestamps.")
REC_PROMPTS = ("Where can I find {expression} in this image?", "What part of this image contains {expression}?",
               "Where does {expression} appear in this image?", "Where is {expression} situated within this image?")
FROM_TO = "From <s> to <e>"


def tvg_caption(caption: str) -> str:
    """A Charades-STA caption as the release puts it in the prompt: surrounding "." stripped, then spaces,
    then lower-cased ("Person opens a door ." -> "person opens a door")."""
    return caption.strip(".").strip(" ").lower()
