"""Each worker's slice of the data, in a fixed order, so a resumed stage skips exactly what it trained on.

Ray Train's `streaming_split` hands blocks to whichever worker asks first, so which samples a worker
saw by step k is not reproducible, and a restart could neither skip them nor keep the workers' step
counts equal. Instead every worker computes the same plan from the manifest's uids and the seed:

    canonical order: manifest shards by name, rows in file order ("none"); a seeded permutation of it
        per epoch ("rows"), or of its shards ("blocks")
    under ZeRO-3: regrouped so that each global micro-step holds a single media kind
    padded to a multiple of world_size with pad rows; position p goes to rank p % world_size
    rank r's list: its positions in order; a resume at sample k of the epoch starts at list[k]

and streams its list through the data pipeline's decoding actors (`PrepareSamples`): read the manifest
keeping this rank's rows past the resume point, order them by list position, decode, tokenise.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from llavast import storage
from llavast.config.data import DataConfig
from llavast.config.secrets import SecretEnv
from llavast.data import manifest
from llavast.data.pipeline import PrepareSamples, check_against_model
from llavast.errors import ConfigError, DataError

log = logging.getLogger(__name__)


Sample = tuple[str, int]  # (uid, media kind)


@dataclass(frozen=True)
class ShardPlan:
    """Which manifest rows each rank trains on, in which order, for one epoch."""

    uids: list[str]  # padded global order; "" marks a pad row
    world_size: int
    left_out: int = 0  # samples this epoch leaves out to keep micro-steps single-media (grouped plans)

    @property
    def per_rank(self) -> int:
        return len(self.uids) // self.world_size

    def rank_uids(self, rank: int) -> list[str]:
        return self.uids[rank::self.world_size]


def manifest_files(cfg: DataConfig) -> list[str]:
    """The manifest's Parquet shards in canonical (name) order."""
    manifest.read_summary(cfg.manifest, cfg.storage)  # refuses an unfinished index
    files = storage.list_files(storage.join(cfg.manifest, manifest.MANIFEST_DIR), cfg.storage, suffix=".parquet")
    if not files:
        raise DataError(f"{cfg.manifest} has no manifest shards; re-run `llavast data index`")
    return files


def read_samples(cfg: DataConfig, files: list[str]) -> list[list[Sample]]:
    """(uid, media kind) of every row, per shard (cheap: rows hold no media)."""
    out = []
    for uri in files:
        fs, path = storage.arrow_filesystem(uri, cfg.storage)
        table = pq.read_table(path, filesystem=fs, columns=["uid", "media_kind"])
        out.append(list(zip(table.column("uid").to_pylist(), table.column("media_kind").to_pylist())))
    return out


def plan_epoch(samples_per_file: list[list[Sample]], shuffle: str, seed: int, epoch: int, world_size: int,
               group_size: int | None = None) -> ShardPlan:
    """The epoch's global order (deterministic in seed and epoch), padded to a multiple of world_size.

    With `group_size` (= world_size x micro_batch_size) every run of `group_size` consecutive positions,
    i.e. every global micro-step, holds one media kind, so all ranks run the same modules in the same
    order (ZeRO-3 gathers parameters module by module and needs that); the samples of a kind that do
    not fill a last group are left out of this epoch (a reshuffled epoch leaves out others).
    """
    rng = np.random.default_rng([seed, epoch])
    if shuffle == "blocks":
        order = [s for i in rng.permutation(len(samples_per_file)) for s in samples_per_file[i]]
    else:
        order = [s for samples in samples_per_file for s in samples]
        if shuffle == "rows":
            order = [order[i] for i in rng.permutation(len(order))]
    if group_size is None:
        uids = [uid for uid, _ in order]
        return ShardPlan(uids=uids + [""] * (-len(uids) % world_size), world_size=world_size)
    if group_size % world_size:
        raise ValueError(f"group_size {group_size} is not a multiple of world_size {world_size}")
    by_kind: dict[int, list[str]] = {}
    for uid, kind in order:
        by_kind.setdefault(kind, []).append(uid)
    groups = [uids[i:i + group_size] for _, uids in sorted(by_kind.items())
              for i in range(0, len(uids) - len(uids) % group_size, group_size)]
    grouped = [uid for i in rng.permutation(len(groups)) for uid in groups[i]]
    return ShardPlan(uids=grouped, world_size=world_size, left_out=len(order) - len(grouped))


def group_size_for(zero_stage: int, world_size: int, micro_batch_size: int) -> int | None:
    """Single-media micro-steps are needed under ZeRO-3 only (see `train/step.py`)."""
    return world_size * micro_batch_size if zero_stage == 3 else None


def check_data_config(cfg: DataConfig) -> None:
    if cfg.local_shuffle_buffer is not None:
        raise ConfigError("data.local_shuffle_buffer: not supported for training: an exact resume needs a "
                          "deterministic order; use data.shuffle: rows (a seeded global shuffle)")


def rank_rows(cfg: DataConfig, files: list[str], plan: ShardPlan, rank: int, skip: int) -> pa.Table:
    """Rank `rank`'s manifest rows from list position `skip` on, in list order (pad rows last).

    Read with pyarrow, shard by shard, keeping only this rank's rows: a rank holds its own share of the
    manifest (rows carry text and URIs, no media), never the whole of it.
    """
    mine = plan.rank_uids(rank)[skip:]
    real = [uid for uid in mine if uid]
    if mine[len(real):] != [""] * (len(mine) - len(real)):
        raise AssertionError("pad rows must close the rank's list")
    wanted = pa.array(real, type=pa.string())
    parts = []
    for uri in files:
        fs, path = storage.arrow_filesystem(uri, cfg.storage)
        table = pq.read_table(path, filesystem=fs, schema=manifest.SCHEMA)
        parts.append(table.filter(pc.is_in(table.column("uid"), value_set=wanted)))
    table = pa.concat_tables(parts) if parts else manifest.SCHEMA.empty_table()
    position = {uid: i for i, uid in enumerate(real)}
    found = table.column("uid").to_pylist()
    if len(found) != len(real):
        missing = sorted(set(real) - set(found))[:3]
        raise DataError(f"{cfg.manifest}: rows {missing} vanished from the manifest while training; re-index")
    ordered = table.take(pa.array(sorted(range(len(found)), key=lambda i: position[found[i]]), type=pa.int64()))
    return pa.concat_tables([ordered, manifest.pad_rows(len(mine) - len(real))])


def rank_dataset(cfg: DataConfig, rows: pa.Table, model_config: Any, tokenizer: Any,
                 secrets: SecretEnv) -> ray.data.Dataset:
    """The decoded samples of `rows`, in order, through the data pipeline's decoding actors.

    Blocks of `decode_batch_size` rows let the actor pool decode in parallel; the caller's DataContext
    must preserve order (the train loop sets it). Each actor applies `secrets` (the job's resolved
    `${env:NAME}` variables: S3 credentials, for one) to its own environment.
    """
    check_against_model(cfg, model_config)
    size = cfg.decode_batch_size
    blocks = [rows.slice(i, size) for i in range(0, rows.num_rows, size)]
    return ray.data.from_arrow(blocks).map_batches(
        PrepareSamples, batch_size=size, batch_format="pyarrow", zero_copy_batch=True,
        compute=ray.data.ActorPoolStrategy(size=cfg.decode_concurrency), num_cpus=cfg.decode_num_cpus,
        fn_constructor_kwargs={"tokenizer": tokenizer, "config": model_config, "max_length": cfg.max_length,
                               "options": cfg.storage, "fetch_threads": cfg.fetch_threads,
                               "secrets": secrets})


def remaining_rows(cfg: DataConfig, zero_stage: int, rank: int, world_size: int, per_step: int,
                   micro_batch_size: int, step: int, total_steps: int) -> pa.Table:
    """Rank `rank`'s rows for steps `step` .. `total_steps`: the rest of the current epoch's list, then
    the lists of the following (reshuffled) epochs, so one stream serves every remaining epoch."""
    files = manifest_files(cfg)
    samples = read_samples(cfg, files)
    group = group_size_for(zero_stage, world_size, micro_batch_size)
    per_epoch = steps_per_epoch(plan_epoch(samples, "none", 0, 0, world_size, group), per_step)
    epoch, in_epoch = divmod(step, per_epoch)
    need, parts = (total_steps - step) * per_step, []
    while need > 0:
        plan = plan_epoch(samples, cfg.shuffle, cfg.seed, epoch, world_size, group)
        skip = in_epoch * per_step if not parts else 0
        take = min(need, per_epoch * per_step - skip)
        parts.append(rank_rows(cfg, files, plan, rank, skip).slice(0, take))
        need, epoch = need - take, epoch + 1
    return pa.concat_tables(parts) if parts else manifest.SCHEMA.empty_table()


def steps_per_epoch(plan: ShardPlan, samples_per_step: int) -> int:
    """Optimizer steps one epoch gives: each rank consumes samples_per_step per step; the tail that
    does not fill a whole step is left out of that epoch (every rank does the same number of steps)."""
    steps = plan.per_rank // samples_per_step
    if steps == 0:
        raise DataError(f"the manifest has {plan.per_rank} samples per worker, fewer than one step needs "
                        f"({samples_per_step} = micro_batch_size x grad_accum_steps); lower them or add data")
    return steps


def total_steps(max_steps: int | None, epochs: float, per_epoch: int) -> int:
    return max_steps if max_steps is not None else max(1, math.ceil(epochs * per_epoch))
