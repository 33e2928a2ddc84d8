"""Planning and manifest reads at ST-Align's size: what the driver and each training worker pay before the
first sample is decoded, before and after the data-path redesign.

    .venv/bin/python -m benchmarks.scale_benchmark [--rows 4300000] [--worlds 8 48] [--out ...json]

1. A synthetic manifest of `--rows` rows (default 4.3M, ST-Align's size) is written once under `--manifest`
   in the index's own layout (`part-EEEEE-CCCCC.parquet`, 20,000 rows per shard in row groups of
   `ROWS_PER_BLOCK`, one source per mixture entry and media kind, `summary.json`). Rows carry realistic
   conversations (word counts drawn per task from a log-normal, coordinate placeholders and their values)
   and no media.
2. For each world size, in a fresh process per measurement:
   - after, driver: `read_layout` (Parquet footers + the int8 `media_kind` column) and `plan_stage` /
     `rank_plan` for every rank (one epoch, `shuffle: rows`);
   - after, worker: `read_rows` of its epoch-0 rows (its plan, as the driver hands it over);
   - before, driver and worker: the read path of `train/shard.py` before the redesign
     (`benchmarks/scale_before.py`): uids of every row into Python lists, the plan, then every shard
     read in full, all columns, keeping the rank's rows.
   Each reports wall seconds, peak RSS and RSS above the process's start (after imports), the peak of
   Arrow's memory pool (the data itself; the allocator keeps freed pages, so RSS stays above it), and the
   bytes it read from storage (`rchar` of /proc/self/io: every byte the process read, any filesystem).

The manifest is local, so after its first read it sits in the page cache: times are those of reads from
memory, and reads from S3 would add transfer time proportional to the bytes column. Prints a table and
writes JSON; it is not a test.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results" / "scale_planning.json"
ROWS_PER_SHARD = 20_000  # `llavast data index --rows-per-shard` default
POOL = 4096  # distinct conversations per source (rows draw from the pool; Parquet still stores each row)
WORDS = np.array([f"w{i}" for i in range(5000)])

# (source, task, media kind 0/1/2, share of rows, median words per conversation, coordinate placeholders)
SOURCES = [
    ("caption_video", "caption", 2, 0.22, 140, {}),
    ("tvg", "TVG", 2, 0.12, 40, {"TEMP-OUTPUT": 2}),
    ("dvc", "DVC", 2, 0.10, 110, {"TEMP-OUTPUT": 6}),
    ("stvg", "STVG", 2, 0.10, 45, {"TEMP-OUTPUT": 2, "WIDTH-OUTPUT": 4, "HEIGHT-OUTPUT": 4}),
    ("elc", "ELC", 2, 0.06, 50, {"TEMP-INPUT": 1, "WIDTH-INPUT": 2, "HEIGHT-INPUT": 2}),
    ("caption_image", "caption", 1, 0.16, 90, {}),
    ("rec", "REC", 1, 0.14, 30, {"WIDTH-OUTPUT": 2, "HEIGHT-OUTPUT": 2}),
    ("rc", "RC", 1, 0.06, 35, {"WIDTH-INPUT": 2, "HEIGHT-INPUT": 2}),
    ("text", "text", 0, 0.04, 120, {}),
]


def _conversation(rng: np.random.Generator, median_words: int, kind: int, placeholders: dict[str, int]) -> str:
    words = int(np.clip(rng.lognormal(np.log(median_words), 0.5), 4, 2000))
    ask = max(2, words // 4)
    marker = {0: "", 1: "<image>\n", 2: "<video>\n"}[kind]
    human = marker + " ".join(rng.choice(WORDS, ask)) + "".join(
        f" <{k}>" * n for k, n in placeholders.items() if k.endswith("INPUT"))
    gpt = " ".join(rng.choice(WORDS, words - ask)) + "".join(
        f" <{k}>" * n for k, n in placeholders.items() if k.endswith("OUTPUT"))
    return json.dumps([{"from": "human", "value": human}, {"from": "gpt", "value": gpt}])


def _source_pools(rng: np.random.Generator, source: tuple) -> tuple[Any, Any]:
    import pyarrow as pa

    from llavast.data.manifest import VARIABLES_TYPE
    from model_zoo.contract import PLACEHOLDER_VARIABLES

    _, _, kind, _, median, placeholders = source
    conversations = pa.array([_conversation(rng, median, kind, placeholders) for _ in range(POOL)], pa.string())
    variables = pa.array([{key: [float(v) for v in rng.random(placeholders.get(name.strip("<>"), 0))]
                           for name, key in PLACEHOLDER_VARIABLES.items()} for _ in range(POOL)], VARIABLES_TYPE)
    return conversations, variables


def generate(root: Path, rows: int) -> dict[str, Any]:
    """The synthetic manifest (skipped when `root` already holds one of `rows` rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from llavast.data.manifest import MANIFEST_DIR, ROWS_PER_BLOCK, SCHEMA, SUMMARY_FILE

    summary_path = root / SUMMARY_FILE
    if summary_path.exists() and json.loads(summary_path.read_text())["total"] == rows:
        return json.loads(summary_path.read_text())
    (root / MANIFEST_DIR).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    start, shards, by_media = time.perf_counter(), [], {}
    counts = np.floor(np.array([s[3] for s in SOURCES]) * rows).astype(int)
    counts[0] += rows - counts.sum()
    for entry, (source, count) in enumerate(zip(SOURCES, counts, strict=True)):
        name, task, kind = source[:3]
        conversations, variables = _source_pools(rng, source)
        by_media[str(kind)] = by_media.get(str(kind), 0) + int(count)
        for chunk, first in enumerate(range(0, count, ROWS_PER_SHARD)):
            index = np.arange(first, min(first + ROWS_PER_SHARD, count))
            pick = pa.array(rng.integers(0, POOL, len(index)))
            ext = "mp4" if kind == 2 else "jpg"
            table = pa.table({
                "uid": [f"{name}:{i}" for i in index], "id": [str(i) for i in index],
                "source": pa.array([name] * len(index)), "task": pa.array([task] * len(index)),
                "source_file": pa.array([f"s3://st-align/annotations/{name}.json"] * len(index)),
                "record_index": index, "media_kind": np.full(len(index), kind, np.int8),
                "media_uri": [f"s3://st-align/media/{name}/{i:08d}.{ext}" if kind else "" for i in index],
                "split_start": np.full(len(index), -1, np.int32), "split_end": np.full(len(index), -1, np.int32),
                "conversations": conversations.take(pick), "variables": variables.take(pick)}, schema=SCHEMA)
            shard = f"part-{entry:05d}-{chunk:05d}.parquet"
            pq.write_table(table, root / MANIFEST_DIR / shard, row_group_size=ROWS_PER_BLOCK)
            shards.append(shard)
    summary = {"total": rows, "shards": shards, "by_media": by_media, "synthetic": True,
               "rows_per_block": ROWS_PER_BLOCK, "generate_seconds": time.perf_counter() - start,
               "manifest_bytes": sum((root / MANIFEST_DIR / s).stat().st_size for s in shards)}
    summary_path.write_text(json.dumps(summary))
    return summary


def _read_bytes() -> int:
    """Bytes this process has read so far (every read call, any filesystem)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise RuntimeError("no rchar in /proc/self/io")


def _rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _measured(fn, *args) -> dict[str, Any]:
    """Run fn(*args) -> dict and add wall seconds, peak RSS, RSS above the start, and bytes read."""
    rss0, read0, t0 = _rss_mib(), _read_bytes(), time.perf_counter()
    out = fn(*args)
    seconds, read = time.perf_counter() - t0, _read_bytes() - read0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    import pyarrow as pa

    return {**out, "seconds": seconds, "bytes_read": read, "peak_rss_mib": peak, "above_start_mib": peak - rss0,
            "arrow_peak_mib": pa.default_memory_pool().max_memory() / 2**20}


def _after_driver(index: str, world: int, mb: int, gas: int, hand_over: str, ranks: list[int]) -> dict[str, Any]:
    import pickle

    from llavast.data.manifest import read_layout
    from llavast.data.plan import Batching, plan_stage, rank_plan, steps_per_epoch
    from llavast.storage import StorageOptions

    t0 = time.perf_counter()
    blocks, layout = read_layout(index, StorageOptions())
    t1 = time.perf_counter()
    batching = Batching(world, mb, gas)
    per_epoch = steps_per_epoch(layout, batching)
    epochs = plan_stage(layout, batching, "rows", 0, per_epoch)
    plans = [rank_plan(epochs, rank, layout, batching) for rank in range(world)]
    t2 = time.perf_counter()
    for rank in ranks:  # what the object store carries to these workers
        Path(hand_over, f"rank{rank}.pkl").write_bytes(pickle.dumps((blocks, plans[rank])))
    return {"layout_seconds": t1 - t0, "plan_seconds": t2 - t1, "steps_per_epoch": per_epoch,
            "left_out": epochs[0].left_out, "rows_per_rank": len(plans[0].rows[0]), "blocks": len(layout.block_rows)}


def _after_worker(hand_over: str, rank: int) -> dict[str, Any]:
    from llavast.data.manifest import read_rows
    from llavast.storage import StorageOptions

    blocks, plan = _unpickle(Path(hand_over, f"rank{rank}.pkl"))
    rows = plan.rows[0]

    def read() -> dict[str, Any]:
        table = read_rows(blocks, rows, StorageOptions())
        block_of = np.searchsorted(blocks.starts, rows, side="right") - 1
        return {"rows": table.num_rows, "table_mib": table.nbytes / 2**20, "blocks_read": len(np.unique(block_of))}

    return _measured(read)


def _unpickle(path: Path) -> Any:
    import pickle

    return pickle.loads(path.read_bytes())


def _before_driver(index: str, world: int) -> dict[str, Any]:
    from benchmarks import scale_before
    from llavast.data.manifest import manifest_files
    from llavast.storage import StorageOptions

    files = manifest_files(index, StorageOptions())
    uids = scale_before.plan_epoch(scale_before.read_samples(files, StorageOptions()), 0, 0, world)
    return {"planned": len(uids)}


def _before_worker(index: str, world: int, rank: int) -> dict[str, Any]:
    from benchmarks import scale_before
    from llavast.data.manifest import manifest_files
    from llavast.storage import StorageOptions

    options = StorageOptions()
    files = manifest_files(index, options)
    uids = scale_before.plan_epoch(scale_before.read_samples(files, options), 0, 0, world)
    table = scale_before.rank_rows(files, options, uids, world, rank)
    return {"rows": table.num_rows, "table_mib": table.nbytes / 2**20}


def _child(queue: Any, fn: Any, args: tuple) -> None:
    import pyarrow.parquet  # noqa: F401  imports are part of the start, not of the measurement

    from llavast.data import manifest, plan  # noqa: F401

    queue.put(_measured(fn, *args) if fn is not _after_worker else fn(*args))


def fresh(fn: Any, *args: Any) -> dict[str, Any]:
    """fn(*args), measured in a freshly spawned process (its own peak RSS and read counters)."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_child, args=(queue, fn, args))
    process.start()
    out = queue.get()
    process.join()
    if process.exitcode:
        raise RuntimeError(f"{fn.__name__}{args} exited {process.exitcode}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=4_300_000)
    parser.add_argument("--worlds", type=int, nargs="+", default=[8, 48])
    parser.add_argument("--micro-batch-size", type=int, default=1)
    parser.add_argument("--grad-accum", type=int, default=2)
    parser.add_argument("--manifest", type=Path, default=Path(tempfile.gettempdir()) / "llavast-scale-index")
    parser.add_argument("--skip-before", action="store_true", help="measure the new path only")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    load_start = os.getloadavg()
    summary = generate(args.manifest, args.rows)
    index = str(args.manifest)
    print(f"manifest: {summary['total']:,} rows, {len(summary['shards'])} shards, "
          f"{summary['manifest_bytes'] / 2**30:.2f} GiB ({args.manifest})")
    runs = []
    for world in args.worlds:
        ranks = sorted({0, world // 2, world - 1})
        with tempfile.TemporaryDirectory() as hand_over:
            driver = fresh(_after_driver, index, world, args.micro_batch_size, args.grad_accum, hand_over, ranks)
            runs.append({"design": "after", "role": "driver", "world": world, **driver})
            for rank in ranks:
                runs.append({"design": "after", "role": "worker", "world": world, "rank": rank,
                             **fresh(_after_worker, hand_over, rank)})
        if not args.skip_before:
            runs.append({"design": "before", "role": "driver", "world": world, **fresh(_before_driver, index, world)})
            runs.append({"design": "before", "role": "worker", "world": world, "rank": 0,
                         **fresh(_before_worker, index, world, 0)})

    print(f"\n{'design':8s}{'role':8s}{'world':>6s}{'rank':>6s}{'rows':>10s}{'seconds':>9s}{'read MiB':>10s}"
          f"{'peak RSS MiB':>14s}{'above start':>13s}{'Arrow peak':>12s}")
    for r in runs:
        rows = r.get("rows", r.get("planned", ""))
        print(f"{r['design']:8s}{r['role']:8s}{r['world']:6d}{r.get('rank', ''):>6}{rows:>10}{r['seconds']:9.2f}"
              f"{r['bytes_read'] / 2**20:10.1f}{r['peak_rss_mib']:14.0f}{r['above_start_mib']:13.0f}"
              f"{r['arrow_peak_mib']:12.0f}")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    results = {"machine": {"cpus": os.cpu_count(), "load_avg_at_start": load_start,
                           "load_avg_at_end": os.getloadavg(), "python": platform.python_version()},
               "date": time.strftime("%Y-%m-%d"), "commit": commit,
               "batching": {"micro_batch_size": args.micro_batch_size, "grad_accum_steps": args.grad_accum},
               "manifest": {k: v for k, v in summary.items() if k != "shards"} | {"shards": len(summary["shards"])},
               "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
