"""`llavast data index`: a Ray Data job from a stage mixture to a validated Parquet manifest.

Stage 1 (one task per annotation file): read the file, apply the entry's sampling strategy, cut the
kept records into chunks of `rows_per_shard`. Stage 2 (one task per chunk): validate every record, check
that its media exists, detect its task, write the chunk's manifest shard and return its counts and
quarantined records. The driver then writes `quarantine.jsonl` and, last, `summary.json`.
Shard names come from (entry, chunk) and rows keep file order, so the output does not depend on
scheduling: the same mixture and seed give the same manifest.
"""

from __future__ import annotations

import json
import logging
import posixpath
from collections import Counter
from functools import partial
from typing import Any

import pyarrow.parquet as pq
import ray

from llavast import storage
from llavast.data import manifest
from llavast.data.annotations import MixtureEntry, Unparsable, iter_sampled, load_mixture, read_annotations
from llavast.data.records import media_of
from llavast.data.tasks import detect_task
from llavast.data.validate import TOLERANCES, VALIDATIONS, Issue, tolerate, validate_record
from llavast.errors import DataError, LlavastError
from llavast.storage import StorageOptions

log = logging.getLogger(__name__)
_UNPARSABLE = "__unparsable__"


def _read_entry(row: dict[str, Any], entries: list[MixtureEntry], seed: int, rows_per_shard: int,
                options: StorageOptions) -> list[dict[str, Any]]:
    """Chunks of (record index, record) the entry keeps; an unreadable file becomes one error chunk."""
    entry = entries[row["entry"]]
    try:
        records = read_annotations(entry.json_path, options)
    except LlavastError as exc:
        return [{"entry": row["entry"], "chunk": 0, "records": "[]", "sampled": 0, "error": str(exc)}]
    kept = [(i, {_UNPARSABLE: r.detail} if isinstance(r, Unparsable) else r)
            for i, r in iter_sampled(records, entry, seed)]
    chunks = [kept[i:i + rows_per_shard] for i in range(0, len(kept), rows_per_shard)] or [[]]
    return [{"entry": row["entry"], "chunk": c, "records": json.dumps(chunk), "sampled": len(kept), "error": ""}
            for c, chunk in enumerate(chunks)]


class _MediaCheck:
    """Existence of media objects, listing each parent folder once per chunk (one LIST, not one HEAD each)."""

    def __init__(self, options: StorageOptions) -> None:
        self.options = options
        self.listings: dict[str, set[str]] = {}

    def exists(self, uri: str) -> bool:
        parent, name = posixpath.split(uri)
        if parent not in self.listings:
            self.listings[parent] = storage.list_names(parent, self.options)
        return name in self.listings[parent]


def _quarantine_line(entry: MixtureEntry, index: int | None, record: Any, issue: Issue) -> dict[str, Any]:
    record_id = record.get("id") if isinstance(record, dict) else None
    return {"uid": manifest.uid_of(entry.source, index) if index is not None else None,
            "id": None if record_id is None else str(record_id), "source": entry.source,
            "source_file": entry.json_path, "record_index": index, "reason": issue.reason, "detail": issue.detail}


def _process_chunk(row: dict[str, Any], entries: list[MixtureEntry], out_uri: str, check_media: bool,
                   options: StorageOptions, validation: str) -> dict[str, Any]:
    """Repair (validation "release"), validate one chunk, write its shard, and return its counts and
    quarantine lines."""
    entry = entries[row["entry"]]
    quarantine: list[dict[str, Any]] = []
    tolerated: Counter[str] = Counter()
    if row["error"]:
        issue = Issue("annotation_unreadable", row["error"])
        quarantine.append(_quarantine_line(entry, None, None, issue))
    rows = []
    media = _MediaCheck(options)
    for index, record in json.loads(row["records"]):
        if isinstance(record, dict) and _UNPARSABLE in record:
            quarantine.append(_quarantine_line(entry, index, None, Issue("json", record[_UNPARSABLE])))
            continue
        applied: list[str] = []
        if validation == "release":
            record, applied = tolerate(record)
        issue = validate_record(record)
        if issue is None and check_media:
            _, path = media_of(record)
            if path is not None and not media.exists(storage.join(entry.data_folder, path)):
                issue = Issue("media_missing", f"{storage.join(entry.data_folder, path)} does not exist")
        if issue is not None:
            quarantine.append(_quarantine_line(entry, index, record, issue))
            continue
        rows.append(manifest.manifest_row(record, entry, index, detect_task(record, entry.task)))
        tolerated.update(applied)  # kept records only: what trains differently from the raw annotation
    shard = ""
    if rows:
        shard = f"part-{row['entry']:05d}-{row['chunk']:05d}.parquet"
        fs, path = storage.arrow_filesystem(storage.join(out_uri, manifest.MANIFEST_DIR, shard), options)
        pq.write_table(manifest.rows_to_table(rows), path, filesystem=fs, row_group_size=manifest.ROWS_PER_BLOCK)
    counts = {"task": dict(Counter(r["task"] for r in rows)), "media": dict(Counter(r["media_kind"] for r in rows)),
              "tolerated": dict(tolerated)}
    return {"entry": row["entry"], "chunk": row["chunk"], "rows": len(rows), "sampled": row["sampled"],
            "shard": shard, "counts": json.dumps(counts), "quarantine": json.dumps(quarantine)}


def build_index(mixture_uri: str, out_uri: str, options: StorageOptions, *, seed: int = 0, strict: bool = False,
                check_media: bool = True, rows_per_shard: int = 20_000, validation: str = "release") -> dict[str, Any]:
    """Index a stage mixture into `out_uri` and return the summary; needs a running Ray (`ray.init`).

    `validation` "release" first repairs what the authors' release accepts (`validate.tolerate`; each repair
    counted in the summary's `tolerated`), "strict" repairs nothing. Bad records are quarantined and
    counted; with `strict` the first few raise `DataError` instead and no index is left behind. Re-running
    replaces the previous index at `out_uri`.
    """
    if validation not in VALIDATIONS:
        raise DataError(f"validation {validation!r}: expected one of {', '.join(VALIDATIONS)}")
    if not ray.is_initialized():
        raise LlavastError("build_index runs on Ray: call ray.init(...) first (the CLI does)")
    mixture = load_mixture(mixture_uri, options)
    entries = list(mixture.entries)
    storage.remove(storage.join(out_uri, manifest.SUMMARY_FILE), options)
    storage.remove(storage.join(out_uri, manifest.MANIFEST_DIR), options)
    storage.makedirs(storage.join(out_uri, manifest.MANIFEST_DIR), options)
    ds = ray.data.from_items([{"entry": i} for i in range(len(entries))], override_num_blocks=len(entries))
    ds = ds.flat_map(partial(_read_entry, entries=entries, seed=seed, rows_per_shard=rows_per_shard,
                             options=options))
    ds = ds.map(partial(_process_chunk, entries=entries, out_uri=out_uri, check_media=check_media,
                        options=options, validation=validation))
    results = sorted(ds.take_all(), key=lambda r: (r["entry"], r["chunk"]))

    quarantine = [line for r in results for line in json.loads(r["quarantine"])]
    if strict and quarantine:
        storage.remove(storage.join(out_uri, manifest.MANIFEST_DIR), options)
        shown = "; ".join(f"{q['source_file']} record {q['record_index']} ({q['id']}): {q['reason']}: {q['detail']}"
                          for q in quarantine[:5])
        raise DataError(f"--strict: {len(quarantine)} bad record(s) in {mixture_uri}: {shown}. Fix them, or "
                        "index without --strict to quarantine them")
    storage.write_text(storage.join(out_uri, manifest.QUARANTINE_FILE),
                       "".join(json.dumps(q, sort_keys=True) + "\n" for q in quarantine), options)
    summary = _summarise(mixture_uri, out_uri, seed, entries, results, quarantine) | {"validation": validation}
    storage.write_text(storage.join(out_uri, manifest.SUMMARY_FILE), json.dumps(summary, indent=1, sort_keys=True),
                       options)
    log.info("indexed %d samples (%d quarantined) from %s into %s", summary["total"], summary["quarantined"],
             mixture_uri, out_uri)
    return summary


def _summarise(mixture_uri: str, out_uri: str, seed: int, entries: list[MixtureEntry],
               results: list[dict[str, Any]], quarantine: list[dict[str, Any]]) -> dict[str, Any]:
    by_task: Counter[str] = Counter()
    by_media: Counter[str] = Counter()
    by_source: Counter[str] = Counter()
    tolerated: Counter[str] = Counter({name: 0 for name in TOLERANCES})
    sampled: dict[str, int] = {}
    for r in results:
        source = entries[r["entry"]].source
        counts = json.loads(r["counts"])
        by_task.update(counts["task"])
        by_media.update({["text", "image", "video"][int(k)]: v for k, v in counts["media"].items()})
        tolerated.update(counts["tolerated"])
        by_source[source] += r["rows"]
        sampled[source] = r["sampled"]
    return {
        "mixture": mixture_uri, "index": out_uri, "seed": seed,
        "total": sum(by_source.values()), "quarantined": len(quarantine),
        "sampled": sampled, "by_source": dict(by_source), "by_task": dict(by_task), "by_media": dict(by_media),
        "quarantined_by_reason": dict(Counter(q["reason"] for q in quarantine)), "tolerated": dict(tolerated),
        "shards": [r["shard"] for r in results if r["shard"]],
        "strategies": {e.source: e.sampling_strategy for e in entries},
    }
