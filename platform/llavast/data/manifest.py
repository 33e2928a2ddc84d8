"""The manifest: Parquet shards with one row per valid sample, plus a summary and a quarantine file.

Layout of an index at URI `out`:
    out/manifest/part-EEEEE-CCCCC.parquet   rows of mixture entry E, chunk C (sorted by record index), in
                                            row groups of ROWS_PER_BLOCK rows
    out/quarantine.jsonl                    one line per rejected record: uid, id, source, source_file,
                                            record_index, reason, detail
    out/summary.json                        counts per source / task / media kind / quarantine reason
The summary is written last and marks the index complete; the streaming pipeline refuses an index
without one. Nothing in these files depends on time or process, so a re-run gives the same bytes.

Reading, for planning and streaming (`data/plan.py` numbers rows block by block; a block is a row group):
    read_layout(index)          the driver: row-group sizes and the `media_kind` column, nothing else
    read_rows(blocks, rows)     a rank: only the row groups holding its rows, only STREAM_COLUMNS
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from llavast import storage
from llavast.data.annotations import MixtureEntry
from llavast.data.plan import Layout
from llavast.data.records import VARIABLE_KEYS, Task, media_of, split_window
from llavast.errors import DataError
from llavast.storage import StorageOptions

VARIABLES_TYPE = pa.struct([pa.field(k, pa.list_(pa.float64())) for k in VARIABLE_KEYS])
SCHEMA = pa.schema([
    pa.field("uid", pa.string()),  # "<source>:<record index in its file>", unique in the manifest
    pa.field("id", pa.string()),  # the record's own id ("" when it has none)
    pa.field("source", pa.string()),
    pa.field("task", pa.string()),
    pa.field("source_file", pa.string()),
    pa.field("record_index", pa.int64()),
    pa.field("media_kind", pa.int8()),  # 0 text, 1 image, 2 video (the model's media_kind)
    pa.field("media_uri", pa.string()),  # absolute URI ("" for text-only samples)
    pa.field("split_start", pa.int32()),  # meta.split window, -1/-1 for the whole clip
    pa.field("split_end", pa.int32()),
    pa.field("conversations", pa.string()),  # JSON text of the conversations list
    pa.field("variables", VARIABLES_TYPE),
])
ROWS_PER_BLOCK = 5_000  # rows per Parquet row group: a rank reads whole row groups, "blocks" shuffles them
MANIFEST_DIR = "manifest"
SUMMARY_FILE = "summary.json"
QUARANTINE_FILE = "quarantine.jsonl"


def uid_of(source: str, index: int) -> str:
    return f"{source}:{index}"


def manifest_row(record: dict[str, Any], entry: MixtureEntry, index: int, task: Task) -> dict[str, Any]:
    """The manifest row of a validated record."""
    kind, path = media_of(record)
    window = split_window(record)
    variables = record.get("variables") or {}
    return {
        "uid": uid_of(entry.source, index),
        "id": "" if record.get("id") is None else str(record["id"]),
        "source": entry.source,
        "task": task.value,
        "source_file": entry.json_path,
        "record_index": index,
        "media_kind": int(kind),
        "media_uri": storage.join(entry.data_folder, path) if path else "",
        "split_start": window[0] if window else -1,
        "split_end": window[1] if window else -1,
        "conversations": json.dumps(record["conversations"], ensure_ascii=False),
        "variables": {k: [float(v) for v in variables.get(k) or []] for k in VARIABLE_KEYS},
    }


def rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def read_summary(index_uri: str, options: StorageOptions) -> dict[str, Any]:
    """The summary of a finished index; an index without one is incomplete (an interrupted run)."""
    uri = storage.join(index_uri, SUMMARY_FILE)
    if not storage.exists(uri, options):
        raise DataError(f"{index_uri} has no {SUMMARY_FILE}: it is not a finished index; run "
                        "`llavast data index MIXTURE.yaml --out URI` first")
    return json.loads(storage.read_text(uri, options))


def summary_digest(summary: dict[str, Any]) -> str:
    """A short digest of an index (10 hex digits of the summary's sha256): the summary names the mixture, the
    seed, the index's URI, every count and every shard, and a re-run of the same index writes the same one."""
    return hashlib.sha256(json.dumps(summary, sort_keys=True).encode()).hexdigest()[:10]


STREAM_COLUMNS = ("uid", "task", "media_kind", "media_uri", "split_start", "split_end", "conversations",
                  "variables")  # what decoding and tokenising read; provenance columns stay in storage


@dataclass(frozen=True)
class Blocks:
    """Where each block (row group) of a manifest lives, and the number of its first row."""

    files: tuple[str, ...]  # manifest shards in canonical (name) order
    file_of: np.ndarray  # (blocks,) index into files
    row_group: np.ndarray  # (blocks,) row group within its file
    starts: np.ndarray  # (blocks + 1,) first row number of each block, then the total


def manifest_files(index_uri: str, options: StorageOptions) -> list[str]:
    """The Parquet shards of a finished index, in canonical (name) order."""
    summary = read_summary(index_uri, options)  # refuses an unfinished index
    files = [storage.join(index_uri, MANIFEST_DIR, name) for name in sorted(summary["shards"])]
    if not files:
        raise DataError(f"{index_uri} has no manifest shards; re-run `llavast data index`")
    return files


def read_layout(index_uri: str, options: StorageOptions, threads: int = 16) -> tuple[Blocks, Layout]:
    """Blocks and the planning layout of an index: Parquet footers and one int8 column per shard."""
    files = manifest_files(index_uri, options)

    def one(uri: str) -> tuple[list[int], np.ndarray]:
        fs, path = storage.arrow_filesystem(uri, options)
        with fs.open_input_file(path) as handle:
            parquet = pq.ParquetFile(handle)
            sizes = [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)]
            kinds = parquet.read(columns=["media_kind"]).column("media_kind").to_numpy()
        return sizes, kinds.astype(np.int8)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        shards = list(pool.map(one, files))
    sizes = [n for group_sizes, _ in shards for n in group_sizes]
    blocks = Blocks(files=tuple(files),
                    file_of=np.array([f for f, (s, _) in enumerate(shards) for _ in s], np.int32),
                    row_group=np.array([g for s, _ in shards for g in range(len(s))], np.int32),
                    starts=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))
    kinds = np.concatenate([k for _, k in shards]) if shards else np.zeros(0, np.int8)
    return blocks, Layout(block_rows=np.asarray(sizes, np.int64), kinds=kinds)


def read_rows(blocks: Blocks, rows: np.ndarray, options: StorageOptions,
              columns: tuple[str, ...] = STREAM_COLUMNS) -> pa.Table:
    """Manifest rows `rows` (row numbers), in that order: each needed row group is read once, with
    `columns` only; memory and bytes read follow len(rows), not the manifest's size."""
    rows = np.asarray(rows, np.int64)
    if len(rows) == 0:
        return SCHEMA.empty_table().select(list(columns))
    if rows.min() < 0 or rows.max() >= blocks.starts[-1]:
        raise DataError(f"row numbers outside the manifest's {int(blocks.starts[-1])} rows; was it re-indexed "
                        "while a stage was running? Re-run the stage")
    block_of = np.searchsorted(blocks.starts, rows, side="right") - 1
    by_block = np.argsort(block_of, kind="stable")
    parts, opened = [], {}
    for block in np.unique(block_of):
        file = int(blocks.file_of[block])
        if file not in opened:
            fs, path = storage.arrow_filesystem(blocks.files[file], options)
            opened = {file: pq.ParquetFile(fs.open_input_file(path))}  # one shard open at a time
        group = opened[file].read_row_group(int(blocks.row_group[block]), columns=list(columns))
        wanted = rows[block_of == block] - blocks.starts[block]
        parts.append(group.take(pa.array(wanted)))
    table = pa.concat_tables(parts).combine_chunks()  # rows grouped by block, in `by_block` order; one
    del parts  # contiguous copy first, so the reorder below holds two copies at most, not three
    return table.take(pa.array(np.argsort(by_block, kind="stable")))
