"""The manifest read path training used before the data-path redesign (`train/shard.py` at commit 3775fb0),
kept only as the baseline of `benchmarks/scale_benchmark.py`.

Every rank (and the driver, to count steps) read the `uid` and `media_kind` of every row into Python lists
and planned the epoch itself; then every rank read every shard in full, all columns, and kept its own rows.
The functions are the old ones with what the benchmark does not need removed (pad rows, ZeRO-3 grouping).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from llavast import storage
from llavast.data import manifest
from llavast.storage import StorageOptions

Sample = tuple[str, int]  # (uid, media kind)


def read_samples(files: list[str], options: StorageOptions) -> list[list[Sample]]:
    """(uid, media kind) of every row, per shard."""
    out = []
    for uri in files:
        fs, path = storage.arrow_filesystem(uri, options)
        table = pq.read_table(path, filesystem=fs, columns=["uid", "media_kind"])
        out.append(list(zip(table.column("uid").to_pylist(), table.column("media_kind").to_pylist())))
    return out


def plan_epoch(samples_per_file: list[list[Sample]], seed: int, epoch: int, world_size: int) -> list[str]:
    """The epoch's global order ("rows": a seeded permutation), padded to a multiple of world_size."""
    rng = np.random.default_rng([seed, epoch])
    order = [s for samples in samples_per_file for s in samples]
    order = [order[i] for i in rng.permutation(len(order))]
    uids = [uid for uid, _ in order]
    return uids + [""] * (-len(uids) % world_size)


def rank_rows(files: list[str], options: StorageOptions, uids: list[str], world_size: int, rank: int) -> pa.Table:
    """Rank `rank`'s rows in list order: every shard read in full, all columns, filtered to the rank's uids."""
    real = [uid for uid in uids[rank::world_size] if uid]
    wanted = pa.array(real, type=pa.string())
    parts = []
    for uri in files:
        fs, path = storage.arrow_filesystem(uri, options)
        table = pq.read_table(path, filesystem=fs, schema=manifest.SCHEMA)
        parts.append(table.filter(pc.is_in(table.column("uid"), value_set=wanted)))
    table = pa.concat_tables(parts)
    position = {uid: i for i, uid in enumerate(real)}
    found = table.column("uid").to_pylist()
    return table.take(pa.array(sorted(range(len(found)), key=lambda i: position[found[i]]), type=pa.int64()))
