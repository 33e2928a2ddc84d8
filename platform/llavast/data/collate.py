"""The last step: sample rows -> the model's batch, plus the count of samples the pipeline dropped.

`iter_batches(dataset, ...)` wraps `iter_torch_batches` with `LlavaSTCollate`, which pads and stacks
every row (a dropped sample arrives as a target-less stand-in of its media kind: `data/pipeline.py`) on the
right for training, on the left for generation (every prompt then ends where the answers start), turns uint8
frames into normalised float pixels, and counts every dropped row by reason. The counts travel with the batch to
the consumer, so they are exact across decoding actors and workers without any shared counter; `DataStats`
accumulates them for the trainer to log.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from ray.data.collate_fn import ArrowBatchCollateFn

from llavast.data.pipeline import OK
from model_zoo.contract import IGNORE_INDEX


@dataclass
class StreamBatch:
    """One micro-batch: `inputs` is `model(**inputs)`'s keyword arguments, every row of it included
    (delivered samples and target-less stand-ins of dropped ones); `uids` are the delivered samples."""

    inputs: dict[str, torch.Tensor]
    uids: list[str]
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> count
    num_truncated: int = 0
    media_bytes: int = 0

    @property
    def size(self) -> int:
        return len(self.uids)

    @property
    def num_dropped(self) -> int:
        return sum(self.dropped.values())

    @property
    def media_kinds(self) -> set[int]:
        return set(self.inputs["media_kind"].tolist())

    def to(self, device: torch.device | str) -> StreamBatch:
        return replace(self, inputs={k: v.to(device, non_blocking=True) for k, v in self.inputs.items()})


@dataclass
class DataStats:
    """Running totals of what the stream delivered and dropped, as metrics a trainer can log."""

    samples: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    truncated: int = 0
    media_bytes: int = 0

    def update(self, batch: StreamBatch) -> None:
        self.samples += batch.size
        self.dropped.update(batch.dropped)
        self.truncated += batch.num_truncated
        self.media_bytes += batch.media_bytes

    def metrics(self, prefix: str = "data/") -> dict[str, float]:
        out = {f"{prefix}samples": self.samples, f"{prefix}dropped": sum(self.dropped.values()),
               f"{prefix}truncated": self.truncated, f"{prefix}media_bytes": self.media_bytes}
        out.update({f"{prefix}dropped_{reason}": n for reason, n in sorted(self.dropped.items())})
        return {k: float(v) for k, v in out.items()}


class LlavaSTCollate(ArrowBatchCollateFn):
    """pa.Table of sample rows -> StreamBatch with the model's batch contract (docs/data.md)."""

    def __init__(self, pad_token_id: int, image_size: int, padding_side: str = "right") -> None:
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        self.pad_token_id = pad_token_id
        self.image_size = image_size
        self.padding_side = padding_side

    def __call__(self, batch: pa.Table) -> StreamBatch:
        rows = batch.drop_columns(["frames"]).to_pylist()
        delivered = [r for r in rows if r["status"] == OK]
        return StreamBatch(inputs=self._stack(rows, _binary_views(batch.column("frames"))),
                           uids=[r["uid"] for r in delivered],
                           dropped=dict(Counter(r["status"] for r in rows if r["status"] != OK)),
                           num_truncated=sum(r["truncated"] for r in delivered),
                           media_bytes=int(sum(r["media_bytes"] for r in rows)))

    def _stack(self, rows: list[dict[str, Any]], frames: list[np.ndarray]) -> dict[str, torch.Tensor]:
        length = max(len(r["input_ids"]) for r in rows)
        b = len(rows)
        input_ids = torch.full((b, length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((b, length), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((b, length), dtype=torch.long)
        values = torch.zeros((b, length), dtype=torch.float64)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            at = slice(0, n) if self.padding_side == "right" else slice(length - n, length)
            input_ids[i, at] = torch.tensor(r["input_ids"], dtype=torch.long)
            labels[i, at] = torch.tensor(r["labels"], dtype=torch.long)
            values[i, at] = torch.tensor(r["coord_values"], dtype=torch.float64)
            attention[i, at] = 1
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels, "coord_values": values,
                "pixel_values": self._pixels(rows, frames),
                "media_kind": torch.tensor([r["media_kind"] for r in rows], dtype=torch.long)}

    def _pixels(self, rows: list[dict[str, Any]], frames: list[np.ndarray]) -> torch.Tensor:
        """(F, 3, S, S) float32 (x/255 - 0.5)/0.5, written in one pass from the uint8 Arrow buffers."""
        s = self.image_size
        counts = [r["num_media_frames"] for r in rows]
        pixels = torch.empty((sum(counts), 3, s, s), dtype=torch.float32)
        start = 0
        with warnings.catch_warnings():  # the Arrow buffer is read-only; it is only read from
            warnings.simplefilter("ignore", UserWarning)
            for count, view in zip(counts, frames, strict=True):
                if count:
                    uint8 = torch.from_numpy(view.reshape(count, s, s, 3))
                    pixels[start:start + count].copy_(uint8.permute(0, 3, 1, 2))
                    start += count
        return pixels.div_(127.5).sub_(1.0)


def _binary_views(column: pa.ChunkedArray) -> list[np.ndarray]:
    """Zero-copy uint8 views of each value of a large_binary column."""
    views: list[np.ndarray] = []
    for chunk in column.chunks:
        _, offsets_buffer, data_buffer = chunk.buffers()
        offsets = np.frombuffer(offsets_buffer, dtype=np.int64)[chunk.offset:chunk.offset + len(chunk) + 1]
        data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
        views += [data[offsets[i]:offsets[i + 1]] for i in range(len(chunk))]
    return views


def iter_batches(dataset: Any, batch_size: int, pad_token_id: int, image_size: int,
                 prefetch_batches: int = 2) -> Iterator[StreamBatch]:
    """StreamBatches of a dataset (`build_dataset`) or a Ray Train dataset shard, in order, one pass.

    Batches stay on the CPU; call `batch.to(device)`.
    """
    yield from dataset.iter_torch_batches(
        batch_size=batch_size, collate_fn=LlavaSTCollate(pad_token_id, image_size), prefetch_batches=prefetch_batches,
        drop_last=False)
