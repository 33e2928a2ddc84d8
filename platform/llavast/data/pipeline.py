"""The one streaming builder: manifest rows -> Ray Data -> decoded frames + tokens, ready for the collate.

    rows (pa.Table, from `manifest.read_rows`) -> blocks of decode_batch_size -> map_batches(PrepareSamples)

Training (each rank streams the rows its plan gives it: `data/plan.py`), the data benchmark and
evaluation all build their stream here. `PrepareSamples` runs in a pool of actors: it fetches media bytes
through `llavast.storage` on a thread pool, decodes frames (decord, PyAV fallback) and images, and
tokenises the conversation. A sample that cannot be fetched, decoded or fitted is not an exception: its
row carries `status` = the reason and a target-less stand-in of the same media kind (zero frames, no
label), so the micro-batch keeps its size and kind, and the collate counts it at the consumer.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from llavast import storage
from llavast.config.data import DecodeSection
from llavast.config.secrets import SecretEnv
from llavast.data.media import MediaDecodeError, decode_image, decode_video
from llavast.data.tokenize import ConversationTokenizer, SampleTooLong
from llavast.errors import ConfigError, StorageError
from llavast.storage import StorageOptions
from model_zoo.contract import MediaKind, ModelConfig

log = logging.getLogger(__name__)

OK = "ok"
SAMPLE_SCHEMA = pa.schema([
    pa.field("uid", pa.string()),
    pa.field("task", pa.string()),
    pa.field("status", pa.string()),  # "ok", or why the sample was dropped (its row is then a stand-in)
    pa.field("detail", pa.string()),
    pa.field("media_kind", pa.int8()),
    pa.field("num_media_frames", pa.int32()),
    pa.field("frames", pa.large_binary()),  # (num_media_frames, S, S, 3) uint8, C order
    pa.field("media_bytes", pa.int64()),  # encoded bytes fetched from storage
    pa.field("input_ids", pa.list_(pa.int32())),
    pa.field("labels", pa.list_(pa.int32())),
    pa.field("coord_values", pa.list_(pa.float64())),
    pa.field("truncated", pa.bool_()),
])


class PrepareSamples:
    """Ray Data actor: manifest rows -> sample rows (frames as uint8 bytes, token ids, labels, values)."""

    def __init__(self, tokenizer: Any, config: ModelConfig, max_length: int, options: StorageOptions,
                 fetch_threads: int, secrets: SecretEnv | None = None, label_mask: str = "assistant_content",
                 frame_resize: str = "decoder") -> None:
        if secrets is not None:
            secrets.apply()  # this actor's own process: storage clients read credentials from the environment
        self.tokenize = ConversationTokenizer(tokenizer, config, max_length, label_mask)
        self.size = config.image_size
        self.frames = {MediaKind.TEXT: 0, MediaKind.IMAGE: 1, MediaKind.VIDEO: config.num_frames}
        self.options = options
        self.frame_resize = frame_resize
        self.pool = ThreadPoolExecutor(max_workers=fetch_threads)

    def _media(self, row: dict[str, Any]) -> tuple[np.ndarray | None, int, str, str]:
        """(frames, fetched bytes, status, detail) of one row; fetch + decode run on the thread pool."""
        kind = MediaKind(row["media_kind"])
        if kind == MediaKind.TEXT:
            return np.zeros((0, self.size, self.size, 3), np.uint8), 0, OK, ""
        try:
            data = storage.read_bytes(row["media_uri"], self.options)
        except StorageError as exc:
            return None, 0, "fetch_error", str(exc)
        try:
            if kind == MediaKind.IMAGE:
                return decode_image(data, self.size), len(data), OK, ""
            window = (row["split_start"], row["split_end"]) if row["split_start"] >= 0 else None
            return decode_video(data, self.frames[kind], self.size, window, self.frame_resize), len(data), OK, ""
        except MediaDecodeError as exc:
            return None, len(data), "decode_error", f"{row['media_uri']}: {exc}"

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        media = list(self.pool.map(self._media, rows))
        out = []
        for row, (frames, nbytes, status, detail) in zip(rows, media, strict=True):
            kind = MediaKind(row["media_kind"])
            sample = {"uid": row["uid"], "task": row["task"], "media_kind": kind, "media_bytes": nbytes,
                      "status": status, "detail": detail}
            if status == OK:
                try:
                    sample.update(frames=frames, tokens=self.tokenize(json.loads(row["conversations"]),
                                                                      row["variables"], kind))
                except SampleTooLong as exc:
                    sample.update(status="too_long", detail=str(exc))
            if sample["status"] != OK:
                log.warning("dropping sample %s: %s: %s", row["uid"], sample["status"], sample["detail"])
                sample.update(frames=np.zeros((self.frames[kind], self.size, self.size, 3), np.uint8),
                              tokens=self.tokenize.placeholder(kind))
            out.append(sample)
        return _to_table(out)


def _list_column(arrays: list[np.ndarray], dtype: type, pa_type: pa.DataType) -> pa.Array:
    """A list<...> column from per-row numpy arrays with one concatenation (no per-element Python objects)."""
    offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
    np.cumsum([len(a) for a in arrays], out=offsets[1:])
    flat = np.concatenate(arrays).astype(dtype, copy=False) if arrays else np.zeros(0, dtype)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=pa_type))


def _to_table(samples: list[dict[str, Any]]) -> pa.Table:
    """Sample rows as Arrow, frames packed into one large_binary buffer (one copy of the pixels)."""
    tokens = [s["tokens"] for s in samples]
    frames = [np.ascontiguousarray(s["frames"]).reshape(-1) for s in samples]
    offsets = np.zeros(len(frames) + 1, dtype=np.int64)
    np.cumsum([f.size for f in frames], out=offsets[1:])
    pixels = np.concatenate(frames) if frames else np.zeros(0, np.uint8)
    frames_column = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(frames), [None, pa.py_buffer(offsets), pa.py_buffer(pixels)])
    columns = {
        "uid": pa.array([s["uid"] for s in samples], pa.string()),
        "task": pa.array([s["task"] for s in samples], pa.string()),
        "status": pa.array([s["status"] for s in samples], pa.string()),
        "detail": pa.array([s["detail"] for s in samples], pa.string()),
        "media_kind": pa.array([int(s["media_kind"]) for s in samples], pa.int8()),
        "num_media_frames": pa.array([len(s["frames"]) for s in samples], pa.int32()),
        "frames": frames_column,
        "media_bytes": pa.array([s["media_bytes"] for s in samples], pa.int64()),
        "input_ids": _list_column([t.input_ids for t in tokens], np.int32, pa.int32()),
        "labels": _list_column([t.labels for t in tokens], np.int32, pa.int32()),
        "coord_values": _list_column([t.coord_values for t in tokens], np.float64, pa.float64()),
        "truncated": pa.array([t.truncated for t in tokens], pa.bool_()),
    }
    return pa.table(columns, schema=SAMPLE_SCHEMA)


def check_against_model(cfg: DecodeSection, config: ModelConfig) -> None:
    """The data section may restate N and the frame size; a mismatch with the model is a config error."""
    if cfg.num_frames is not None and cfg.num_frames != config.num_frames:
        raise ConfigError(f"data.num_frames = {cfg.num_frames} but the model samples N = {config.num_frames} "
                          "frames; remove data.num_frames or make them equal")
    if cfg.image_size is not None and cfg.image_size != config.image_size:
        raise ConfigError(f"data.image_size = {cfg.image_size} but the model's vision tower takes "
                          f"{config.image_size} px frames; remove data.image_size or make them equal")


def build_dataset(rows: pa.Table, cfg: DecodeSection, options: StorageOptions, config: ModelConfig, tokenizer: Any,
                  secrets: SecretEnv | None = None) -> ray.data.Dataset:
    """The decoded samples of manifest-shaped `rows` (media fetched with `options`), one per row, in row order
    when the caller's DataContext preserves order (the train loop sets it; a sample's place in the plan is then
    its place in the stream). Evaluation builds its rows from benchmark prompts (`evaluate/runner.py`).

    Blocks of `decode_batch_size` rows let the actor pool decode in parallel. The tokenizer must be the
    model's (coordinate tokens added). Each actor applies `secrets` (the job's resolved `${env:NAME}`
    variables: S3 credentials, for one) to its own environment.
    """
    check_against_model(cfg, config)
    size = cfg.decode_batch_size
    blocks = [rows.slice(i, size) for i in range(0, rows.num_rows, size)]
    # from_blocks reads each block's metadata here; from_arrow would run a 1-CPU task per block for it, which
    # never schedules on a cluster whose CPUs are all held (sweep trials side by side, fractional workers)
    return ray.data.from_blocks(blocks).map_batches(
        PrepareSamples, batch_size=size, batch_format="pyarrow", zero_copy_batch=True,
        compute=ray.data.ActorPoolStrategy(size=cfg.decode_concurrency), num_cpus=cfg.decode_num_cpus,
        udf_modifying_row_count=False,
        fn_constructor_kwargs={"tokenizer": tokenizer, "config": config, "max_length": cfg.max_length,
                               "options": options, "fetch_threads": cfg.fetch_threads, "secrets": secrets,
                               "label_mask": cfg.label_mask, "frame_resize": cfg.frame_resize})
