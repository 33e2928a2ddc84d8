"""A conversation -> the model's token ids, labels and coordinate values (the batch contract, docs/data.md).

Layout (Qwen2's chat template, system prompt "You are a helpful assistant."):
    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n
    <|im_start|>user\\n{human}<|im_end|>\\n  <|im_start|>assistant\\n{gpt}<|im_end|>\\n  ...
Labels (`label_mask`):
    "assistant_content"  each assistant turn's content, its `<|im_end|>` and the newline after it;
    "release"            as the release's LLaVA-NeXT `preprocess_qwen`: each assistant turn whole (its
                         `<|im_start|>assistant\\n` header too), plus every `<|im_start|>`, `<|im_end|>` and
                         standalone newline token anywhere (system and user turns included).
Everything else is -100 (visual tokens and INPUT placeholders always).
A conversation with no assistant turn is a prompt for generation: it ends with `<|im_start|>assistant\\n` (the
chat template's generation prompt), so the model's answer starts right after it.
The `<image>`/`<video>` marker becomes `image_seq_len` / `video_seq_len` copies of its token id.
Placeholders are single tokens; each occurrence gets the next value of its `variables` list in
`coord_values` (INPUT and OUTPUT alike), 0 elsewhere.
Too long for `max_length`: whole trailing turn pairs are cut (never the visual block, never a
placeholder's value); a sample whose first exchange does not fit is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

import model_zoo
from llavast.data.records import GPT
from model_zoo.contract import IGNORE_INDEX, PLACEHOLDER_VARIABLES, MediaKind, ModelConfig

SYSTEM_PROMPT = "You are a helpful assistant."
LABEL_MASKS = ("assistant_content", "release")


class SampleTooLong(Exception):
    """The first human/gpt exchange (with its visual block) exceeds max_length; the sample is dropped."""


@dataclass(frozen=True)
class TokenizedSample:
    input_ids: np.ndarray  # (L,) int32
    labels: np.ndarray  # (L,) int32, -100 where not learned
    coord_values: np.ndarray  # (L,) float64: the quantiser rounds to 3 decimals, float32 could cross a tie
    truncated: bool  # trailing turns were cut to fit max_length


class ConversationTokenizer:
    """Turns validated conversations into model inputs for one (tokenizer, model config) pair."""

    def __init__(self, tokenizer: Any, config: ModelConfig, max_length: int,
                 label_mask: str = "assistant_content") -> None:
        if label_mask not in LABEL_MASKS:
            raise ValueError(f"label_mask {label_mask!r}: expected one of {', '.join(LABEL_MASKS)}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.label_mask = label_mask
        model = model_zoo.spec_of(config)
        self.visual = {kind: (kind.marker, model.media_token_id(config, kind), model.visual_token_count(config, kind))
                       for kind in (MediaKind.IMAGE, MediaKind.VIDEO)}
        for marker, token_id, _ in self.visual.values():
            if tokenizer.convert_tokens_to_ids(marker) != token_id:
                raise ValueError(f"tokenizer maps {marker} to {tokenizer.convert_tokens_to_ids(marker)} but the "
                                 f"model config expects {token_id}: load the tokenizer of the same checkpoint")
        placeholder_ids = model.placeholder_ids(config)
        self.placeholder_key = {placeholder_ids[p]: key for p, key in PLACEHOLDER_VARIABLES.items()}
        for placeholder, token_id in placeholder_ids.items():
            if tokenizer.convert_tokens_to_ids(placeholder) != token_id:
                raise ValueError(f"tokenizer has no single token {placeholder} at id {token_id}: load it with "
                                 f"model_zoo.spec({model.name!r}).load_tokenizer")
        self.header = {role: self._encode(f"<|im_start|>{role}\n") for role in ("system", "user", "assistant")}
        self.footer = self._encode("<|im_end|>\n")
        self.system = self.header["system"] + self._encode(SYSTEM_PROMPT) + self.footer
        newline = self._encode("\n")
        if len(newline) != 1:
            raise ValueError(f"the tokenizer encodes a newline as {len(newline)} tokens; the chat template needs one")
        # the release's preprocess_qwen unmasks these ids wherever they occur
        self.always_learned = np.asarray([self.header["system"][0], self.footer[0], newline[0]], dtype=np.int32)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _content(self, text: str, kind: MediaKind) -> list[int]:
        if kind == MediaKind.TEXT or kind.marker not in text:
            return self._encode(text)
        marker, token_id, count = self.visual[kind]
        before, after = text.split(marker, 1)
        return self._encode(before) + [token_id] * count + self._encode(after)

    def __call__(self, conversations: list[dict[str, str]], variables: dict[str, list[float]],
                 kind: MediaKind) -> TokenizedSample:
        ids, labels = list(self.system), [IGNORE_INDEX] * len(self.system)
        pair_ends = []
        for turn in conversations:
            learn = turn["from"] == GPT
            header = self.header["assistant" if learn else "user"]
            body = self._content(turn["value"], kind) + self.footer
            ids += header + body
            header_labels = header if learn and self.label_mask == "release" else [IGNORE_INDEX] * len(header)
            labels += header_labels + (body if learn else [IGNORE_INDEX] * len(body))
            if learn:
                pair_ends.append(len(ids))
        if not pair_ends:  # a prompt: the answer is the model's to write
            ids += self.header["assistant"]
            labels += [IGNORE_INDEX] * len(self.header["assistant"])
        truncated = False
        if len(ids) > self.max_length:
            fitting = [end for end in pair_ends if end <= self.max_length]
            if not fitting:  # a prompt without answer (evaluation) has no exchange to keep either
                needs = pair_ends[0] if pair_ends else len(ids)
                raise SampleTooLong(f"{len(ids)} tokens; the first exchange alone needs {needs} > "
                                    f"max_length {self.max_length}")
            ids, labels, truncated = ids[:fitting[-1]], labels[:fitting[-1]], True
        input_ids, label_ids = np.asarray(ids, dtype=np.int32), np.asarray(labels, dtype=np.int32)
        if self.label_mask == "release":
            always = np.isin(input_ids, self.always_learned)
            label_ids[always] = input_ids[always]
        return TokenizedSample(input_ids, label_ids, self._coord_values(ids, variables), truncated)

    def placeholder(self, kind: MediaKind) -> TokenizedSample:
        """A target-less sample of media `kind`: the system turn, a user turn with the visual block, no
        label. It stands in for a sample that could not be delivered, so the micro-batch keeps its size and
        media kind (every rank runs the same modules) and adds nothing to the gradient."""
        visual = [] if kind == MediaKind.TEXT else [self.visual[kind][1]] * self.visual[kind][2]
        ids = self.system + self.header["user"] + visual + self.footer
        return TokenizedSample(np.asarray(ids, dtype=np.int32), np.full(len(ids), IGNORE_INDEX, dtype=np.int32),
                               np.zeros(len(ids), dtype=np.float64), False)

    def _coord_values(self, ids: list[int], variables: dict[str, list[float]]) -> np.ndarray:
        values = np.zeros(len(ids), dtype=np.float64)
        cursor: dict[str, int] = {}
        for position, token_id in enumerate(ids):
            key = self.placeholder_key.get(token_id)
            if key is not None:
                k = cursor.get(key, 0)
                values[position] = variables[key][k]
                cursor[key] = k + 1
        return values
