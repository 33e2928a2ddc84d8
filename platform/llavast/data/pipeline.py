"""The streaming pipeline: manifest (Parquet) -> Ray Data -> decoded frames + tokens, ready for the collate.

    read_parquet(manifest) -> [pad to a multiple of world_size] -> shuffle -> map_batches(PrepareSamples)

`PrepareSamples` runs in a pool of actors: it fetches media bytes through `llavast.storage` on a thread
pool, decodes frames (decord, PyAV fallback) and images, and tokenises the conversation. A sample that
cannot be fetched, decoded or fitted is not an exception: its row carries `status` = the reason and no
payload, so it still occupies its place in the split, and the collate counts it at the consumer.

Ray Train's DataConfig splits datasets with `streaming_split(equal=True)`, which truncates the remainder
when rows do not divide by the worker count. `build_dataset(world_size=...)` therefore appends
`status="pad"` rows up to a multiple of world_size: no sample is lost, every worker gets the same number
of rows (hence of batches, which keeps collectives in step), and the collate drops the pads.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from llavast import storage
from llavast.config.data import DataConfig
from llavast.config.secrets import SecretEnv
from llavast.data import manifest
from llavast.data.media import MediaDecodeError, decode_image, decode_video
from llavast.data.tokenize import ConversationTokenizer, SampleTooLong
from llavast.errors import ConfigError, StorageError
from llavast.storage import StorageOptions
from model_zoo.contract import MediaKind, ModelConfig

log = logging.getLogger(__name__)

OK, PAD = "ok", "pad"
SAMPLE_SCHEMA = pa.schema([
    pa.field("uid", pa.string()),
    pa.field("task", pa.string()),
    pa.field("status", pa.string()),  # "ok", "pad", or why the sample was dropped
    pa.field("detail", pa.string()),
    pa.field("media_kind", pa.int8()),
    pa.field("num_media_frames", pa.int32()),
    pa.field("frames", pa.large_binary()),  # (num_media_frames, S, S, 3) uint8, C order
    pa.field("media_bytes", pa.int64()),  # encoded bytes fetched from storage
    pa.field("input_ids", pa.list_(pa.int32())),
    pa.field("labels", pa.list_(pa.int32())),
    pa.field("coord_values", pa.list_(pa.float32())),
    pa.field("truncated", pa.bool_()),
])


class PrepareSamples:
    """Ray Data actor: manifest rows -> sample rows (frames as uint8 bytes, token ids, labels, values)."""

    def __init__(self, tokenizer: Any, config: ModelConfig, max_length: int, options: StorageOptions,
                 fetch_threads: int, secrets: SecretEnv | None = None) -> None:
        if secrets is not None:
            secrets.apply()  # this actor's own process: storage clients read credentials from the environment
        self.tokenize = ConversationTokenizer(tokenizer, config, max_length)
        self.num_frames = config.num_frames
        self.size = config.image_size
        self.options = options
        self.pool = ThreadPoolExecutor(max_workers=fetch_threads)

    def _media(self, row: dict[str, Any]) -> tuple[np.ndarray | None, int, str, str]:
        """(frames, fetched bytes, status, detail) of one row; fetch + decode run on the thread pool."""
        kind = MediaKind(row["media_kind"])
        if row["uid"] == "" or kind == MediaKind.TEXT:
            return np.zeros((0, self.size, self.size, 3), np.uint8), 0, OK, ""
        try:
            data = storage.read_bytes(row["media_uri"], self.options)
        except StorageError as exc:
            return None, 0, "fetch_error", str(exc)
        try:
            if kind == MediaKind.IMAGE:
                return decode_image(data, self.size), len(data), OK, ""
            window = (row["split_start"], row["split_end"]) if row["split_start"] >= 0 else None
            return decode_video(data, self.num_frames, self.size, window), len(data), OK, ""
        except MediaDecodeError as exc:
            return None, len(data), "decode_error", f"{row['media_uri']}: {exc}"

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        media = list(self.pool.map(self._media, rows))
        out = []
        for row, (frames, nbytes, status, detail) in zip(rows, media, strict=True):
            sample = {"uid": row["uid"], "task": row["task"], "media_kind": row["media_kind"], "media_bytes": nbytes,
                      "frames": _NO_FRAMES, "tokens": None, "status": PAD if row["uid"] == "" else status,
                      "detail": detail}
            if sample["status"] == OK:
                try:
                    sample["tokens"] = self.tokenize(json.loads(row["conversations"]), row["variables"],
                                                     MediaKind(row["media_kind"]))
                    sample["frames"] = frames
                except SampleTooLong as exc:
                    sample.update(status="too_long", detail=str(exc))
            if sample["status"] not in (OK, PAD):
                log.warning("dropping sample %s: %s: %s", row["uid"], sample["status"], sample["detail"])
            out.append(sample)
        return _to_table(out)


_NO_FRAMES = np.zeros((0, 1, 1, 3), np.uint8)


def _list_column(arrays: list[np.ndarray], dtype: type, pa_type: pa.DataType) -> pa.Array:
    """A list<...> column from per-row numpy arrays with one concatenation (no per-element Python objects)."""
    offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
    np.cumsum([len(a) for a in arrays], out=offsets[1:])
    flat = np.concatenate(arrays).astype(dtype, copy=False) if arrays else np.zeros(0, dtype)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=pa_type))


def _to_table(samples: list[dict[str, Any]]) -> pa.Table:
    """Sample rows as Arrow, frames packed into one large_binary buffer (one copy of the pixels)."""
    empty = np.zeros(0, np.int32)
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
        "media_kind": pa.array([s["media_kind"] for s in samples], pa.int8()),
        "num_media_frames": pa.array([len(s["frames"]) for s in samples], pa.int32()),
        "frames": frames_column,
        "media_bytes": pa.array([s["media_bytes"] for s in samples], pa.int64()),
        "input_ids": _list_column([t.input_ids if t else empty for t in tokens], np.int32, pa.int32()),
        "labels": _list_column([t.labels if t else empty for t in tokens], np.int32, pa.int32()),
        "coord_values": _list_column([t.coord_values if t else empty for t in tokens], np.float32, pa.float32()),
        "truncated": pa.array([bool(t and t.truncated) for t in tokens], pa.bool_()),
    }
    return pa.table(columns, schema=SAMPLE_SCHEMA)


def check_against_model(cfg: DataConfig, config: ModelConfig) -> None:
    """The data section may restate N and the frame size; a mismatch with the model is a config error."""
    if cfg.num_frames is not None and cfg.num_frames != config.num_frames:
        raise ConfigError(f"data.num_frames = {cfg.num_frames} but the model samples N = {config.num_frames} "
                          "frames; remove data.num_frames or make them equal")
    if cfg.image_size is not None and cfg.image_size != config.image_size:
        raise ConfigError(f"data.image_size = {cfg.image_size} but the model's vision tower takes "
                          f"{config.image_size} px frames; remove data.image_size or make them equal")


def _read_shards(batch: pa.Table, options: StorageOptions) -> pa.Table:
    """The manifest rows of the shards (Parquet files) named in `batch`."""
    tables = []
    for uri in batch.column("shard").to_pylist():
        fs, path = storage.arrow_filesystem(uri, options)
        tables.append(pq.read_table(path, filesystem=fs, schema=manifest.SCHEMA))
    return pa.concat_tables(tables)


def build_dataset(cfg: DataConfig, config: ModelConfig, tokenizer: Any, world_size: int = 1) -> ray.data.Dataset:
    """The training dataset of `cfg.manifest`: one row per manifest sample (plus < world_size pad rows).

    Pass it to `TorchTrainer(datasets={"train": ...})` and read each worker's shard with
    `llavast.data.collate.iter_batches`. The tokenizer must be the model's (coordinate tokens added).
    Shards are read by light tasks (`read_num_cpus`) rather than `read_parquet`, whose listing task asks
    for a whole CPU and deadlocks a small cluster whose CPUs the decoding actors and trainers hold.
    """
    check_against_model(cfg, config)
    summary = manifest.read_summary(cfg.manifest, cfg.storage)
    shards = [storage.join(cfg.manifest, manifest.MANIFEST_DIR, name) for name in summary["shards"]]
    light = {"num_cpus": cfg.read_num_cpus}
    ds = ray.data.from_items([{"shard": uri} for uri in shards], override_num_blocks=max(1, len(shards)))
    ds = ds.map_batches(_read_shards, fn_kwargs={"options": cfg.storage}, batch_size=1, batch_format="pyarrow",
                        **light)
    pads = -summary["total"] % world_size
    if pads:
        ds = ds.union(ray.data.from_arrow(manifest.pad_rows(pads)))
    if cfg.shuffle == "rows":
        ds = ds.random_shuffle(seed=cfg.seed, **light)
    elif cfg.shuffle == "blocks":
        ds = ds.randomize_block_order(seed=cfg.seed)
    log.info("streaming %d samples (+%d pad rows) from %s", summary["total"], pads, cfg.manifest)
    return ds.map_batches(
        PrepareSamples, batch_size=cfg.decode_batch_size, batch_format="pyarrow", zero_copy_batch=True,
        compute=ray.data.ActorPoolStrategy(size=cfg.decode_concurrency), num_cpus=cfg.decode_num_cpus,
        udf_modifying_row_count=False,
        fn_constructor_kwargs={"tokenizer": tokenizer, "config": config, "max_length": cfg.max_length,
                               "options": cfg.storage, "fetch_threads": cfg.fetch_threads},
    )
