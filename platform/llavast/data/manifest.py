"""The manifest: Parquet shards with one row per valid sample, plus a summary and a quarantine file.

Layout of an index at URI `out`:
    out/manifest/part-EEEEE-CCCCC.parquet   rows of mixture entry E, chunk C (sorted by record index)
    out/quarantine.jsonl                    one line per rejected record: uid, id, source, source_file,
                                            record_index, reason, detail
    out/summary.json                        counts per source / task / media kind / quarantine reason
The summary is written last and marks the index complete; the streaming pipeline refuses an index
without one. Nothing in these files depends on time or process, so a re-run gives the same bytes.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from llavast import storage
from llavast.data.annotations import MixtureEntry
from llavast.data.records import VARIABLE_KEYS, Task, media_of, split_window
from llavast.errors import DataError
from llavast.storage import StorageOptions
from model_zoo.contract import MediaKind

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


def pad_rows(count: int) -> pa.Table:
    """`count` empty text-only rows: they fill a split so every worker gets the same number of rows;
    the collate turns them into target-less samples."""
    empty = {k: [] for k in VARIABLES_TYPE.names}
    rows = [{"uid": "", "id": "", "source": "", "task": "", "source_file": "", "record_index": -1,
             "media_kind": int(MediaKind.TEXT), "media_uri": "", "split_start": -1, "split_end": -1,
             "conversations": "[]", "variables": empty} for _ in range(count)]
    return pa.Table.from_pylist(rows, schema=SCHEMA)
