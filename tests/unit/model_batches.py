"""Hand-built model batches for unit tests (the data pipeline builds real ones in its own tests)."""

from __future__ import annotations

import torch

import model_zoo
from model_zoo.contract import IGNORE_INDEX, MediaKind


def placeholder_id(config, name: str) -> int:
    order = ["<TEMP-INPUT>", "<TEMP-OUTPUT>", "<HEIGHT-INPUT>", "<HEIGHT-OUTPUT>", "<WIDTH-INPUT>", "<WIDTH-OUTPUT>"]
    return config.text_vocab_size + config.coord_vocab_size + order.index(name)


def make_batch(config, samples: list[dict]) -> dict[str, torch.Tensor]:
    """Right-pad hand-written samples: {"kind", "prompt" ids, "answer" ids, "values" {position: value}}.

    Visual tokens are inserted after the first prompt token; labels cover the answer only.
    """
    rows, frames, kinds = [], [], []
    g = torch.Generator().manual_seed(1)
    model = model_zoo.spec_of(config)
    for s in samples:
        kind = s.get("kind", MediaKind.TEXT)
        visual = ([] if kind == MediaKind.TEXT else
                  [model.media_token_id(config, kind)] * model.visual_token_count(config, kind))
        ids = s["prompt"][:1] + visual + s["prompt"][1:] + s["answer"]
        labels = [IGNORE_INDEX] * (len(ids) - len(s["answer"])) + s["answer"]
        values = [0.0] * len(ids)
        for pos, v in s.get("values", {}).items():  # positions counted from the end of the sequence
            values[len(ids) + pos] = v
        rows.append((ids, labels, values))
        n = model.frames_per_sample(config, kind)
        frames.append(torch.rand(n, 3, config.image_size, config.image_size, generator=g) * 2 - 1)
        kinds.append(kind)
    length = max(len(r[0]) for r in rows)

    def pad(x, fill):
        return x + [fill] * (length - len(x))

    return {
        "input_ids": torch.tensor([pad(r[0], 0) for r in rows]),
        "attention_mask": torch.tensor([pad([1] * len(r[0]), 0) for r in rows]),
        "labels": torch.tensor([pad(r[1], IGNORE_INDEX) for r in rows]),
        "coord_values": torch.tensor([pad(r[2], 0.0) for r in rows]),
        "pixel_values": torch.cat(frames),
        "media_kind": torch.tensor(kinds),
    }
