"""Greedy answers: `AnswerGenerator` turns decoded sample rows into answer rows with a model that is ready
(the inference actors', and a sweep trial's validation on the model being trained, `tune/validation.py`);
`GenerateAnswers` is the Ray Data actor that loads a version's model once and answers with it."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import torch

from llavast.config.secrets import SecretEnv
from llavast.data.collate import LlavaSTCollate
from llavast.data.pipeline import OK
from llavast.evaluate.answers import END_OF_TURN
from llavast.evaluate.model import ModelSource, load_model_for_eval

ANSWER_SCHEMA = pa.schema([
    pa.field("uid", pa.string()),
    pa.field("status", pa.string()),  # "ok", or why the sample got no answer (its decode status)
    pa.field("detail", pa.string()),
    pa.field("output", pa.string()),
    pa.field("new_tokens", pa.int32()),
])


class AnswerGenerator:
    """Greedy answers of a model that is ready (eval mode): the inference actors' and a sweep trial's
    validation (`tune/validation.py`, on the model being trained)."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, max_new_tokens: int, device: torch.device) -> None:
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.collate = LlavaSTCollate(tokenizer.pad_token_id, model.config.image_size, padding_side="left")
        self.eos = tokenizer.convert_tokens_to_ids(END_OF_TURN)
        self.max_new_tokens = max_new_tokens

    def answer(self, batch: pa.Table) -> pa.Table:
        """Decoded sample rows -> answer rows (ANSWER_SCHEMA); a sample that was not decoded gets no answer."""
        answered = batch.filter(pc.equal(batch["status"], OK))
        outputs: dict[str, tuple[str, int]] = {}
        if answered.num_rows:
            outputs = dict(zip(answered.column("uid").to_pylist(), self.generate(answered), strict=True))
        rows = []
        for row in batch.select(["uid", "status", "detail"]).to_pylist():
            output, new_tokens = outputs.get(row["uid"], ("", 0))
            rows.append({**row, "output": output, "new_tokens": new_tokens})
        return pa.Table.from_pylist(rows, schema=ANSWER_SCHEMA)

    @torch.no_grad()
    def generate(self, batch: pa.Table) -> list[tuple[str, int]]:
        """(answer text with special tokens, new tokens) per decoded sample, in order."""
        inputs = self.collate(batch).inputs  # left-padded prompts, each ending with the assistant header
        on = {key: inputs[key].to(self.device) for key in ("input_ids", "attention_mask", "coord_values", "media_kind")}
        pixels = inputs["pixel_values"].to(self.device, self.model.dtype)
        new = self.model.generate(on["input_ids"], on["attention_mask"], on["coord_values"], pixels, on["media_kind"],
                                  max_new_tokens=self.max_new_tokens, eos_token_id=self.eos).cpu()
        answers = []
        for row in new.tolist():
            if self.eos in row:
                row = row[:row.index(self.eos) + 1]
            answers.append((self.tokenizer.decode(row, skip_special_tokens=False), len(row)))
        return answers


class GenerateAnswers:
    """Ray Data actor: decoded sample rows -> answers. Holds one model (on its GPU, or the CPU)."""

    def __init__(self, source: ModelSource, max_new_tokens: int, use_gpu: bool,
                 secrets: SecretEnv | None = None) -> None:
        if secrets is not None:
            secrets.apply()
        device = torch.device("cuda") if use_gpu else torch.device("cpu")
        with tempfile.TemporaryDirectory(prefix="llavast-eval-") as tmp:  # the model is in memory once loaded
            model, tokenizer = load_model_for_eval(source, Path(tmp), device)
        self.generator = AnswerGenerator(model, tokenizer, max_new_tokens, device)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.generator.answer(batch)
