"""Which manifest rows each rank trains on, in which order: pure functions of the manifest's layout and
the seed (no I/O), so the driver plans once and a resumed stage skips exactly what it trained on.

Rows are numbered block by block in canonical order (manifest shards by name, row groups in file
order, rows in file order); a *block* is one Parquet row group, the smallest unit a reader can fetch.
For epoch e (rng seeded with [seed, e]):

    1. block order: canonical ("none"), or a permutation of the blocks ("rows", "blocks")
    2. per media kind, that kind's rows in block order, cut into `world` equal contiguous ranges
       (truncated to a multiple of world x micro_batch_size): rank r takes range r of every kind,
       so it reads ~rows/world rows from ~blocks/world blocks, and every rank holds the same
       number of micro-batches of each kind
    3. "rows": each rank permutes its rows within each kind
    4. the global micro-step sequence: every micro-step holds ONE media kind on every rank (all ranks
       run the same modules in the same order, which DeepSpeed's collectives need: train/step.py);
       the kinds' micro-steps are interleaved by a permutation shared by all ranks ("none": by
       position in the manifest)
    5. micro-steps that do not fill a whole optimizer step close the epoch and are left out

The rows left out (kind remainders in 2, the tail in 5) are counted in `EpochPlan.left_out`; a
reshuffled epoch leaves out others. The number of steps per epoch depends only on the kind counts,
so it is the same in every epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from llavast.errors import DataError

SHUFFLES = ("rows", "blocks", "none")


@dataclass(frozen=True)
class Layout:
    """What planning knows of a manifest: each block's size and each row's media kind."""

    block_rows: np.ndarray  # (blocks,) rows per block, canonical order
    kinds: np.ndarray  # (rows,) int8 media kind of every row, rows numbered block by block

    def __post_init__(self) -> None:
        if int(self.block_rows.sum()) != len(self.kinds):
            raise ValueError(f"blocks hold {int(self.block_rows.sum())} rows but {len(self.kinds)} kinds were given")

    @property
    def block_starts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.block_rows)[:-1]]).astype(np.int64)


@dataclass(frozen=True)
class Batching:
    """How the rows become steps: ranks, samples per micro-batch, micro-batches per optimizer step."""

    world_size: int
    micro_batch_size: int
    grad_accum_steps: int

    @property
    def rows_per_rank_step(self) -> int:
        return self.micro_batch_size * self.grad_accum_steps


@dataclass(frozen=True)
class EpochPlan:
    """One epoch: rank r trains on `rows[r]` in order, micro-batch j holding media kind `micro_kinds[j]`."""

    epoch: int
    micro_kinds: np.ndarray  # (micro_steps,) int8, the same on every rank
    rows: np.ndarray  # (world, micro_steps x micro_batch_size) int64 row numbers
    left_out: int  # manifest rows this epoch does not train on

    def rank_rows(self, rank: int) -> np.ndarray:
        return self.rows[rank]


def micro_steps_per_kind(layout: Layout, batching: Batching) -> dict[int, int]:
    """Global micro-steps each media kind fills (its rows, truncated to whole world x micro-batch groups)."""
    group = batching.world_size * batching.micro_batch_size
    kinds, counts = np.unique(layout.kinds, return_counts=True)
    return {int(k): int(c) // group for k, c in zip(kinds, counts)}


def steps_per_epoch(layout: Layout, batching: Batching) -> int:
    """Optimizer steps one epoch gives; the same for every epoch (it depends only on the kind counts)."""
    steps = sum(micro_steps_per_kind(layout, batching).values()) // batching.grad_accum_steps
    if steps == 0:
        raise DataError(
            f"the manifest's {len(layout.kinds)} rows give no optimizer step: one needs, per media kind, "
            f"{batching.world_size} workers x {batching.micro_batch_size} (micro_batch_size) rows per micro-step "
            f"and {batching.grad_accum_steps} micro-steps (grad_accum_steps); lower them or add data")
    return steps


def total_steps(max_steps: int | None, epochs: float, per_epoch: int) -> int:
    return max_steps if max_steps is not None else max(1, math.ceil(epochs * per_epoch))


def plan_epoch(layout: Layout, batching: Batching, shuffle: str, seed: int, epoch: int) -> EpochPlan:
    """Epoch `epoch`'s plan for every rank (see the module docstring)."""
    if shuffle not in SHUFFLES:
        raise ValueError(f"shuffle must be one of {SHUFFLES}, not {shuffle!r}")
    world, mb = batching.world_size, batching.micro_batch_size
    rng = np.random.default_rng([seed, epoch])
    blocks = rng.permutation(len(layout.block_rows)) if shuffle != "none" else np.arange(len(layout.block_rows))
    starts = layout.block_starts
    order = np.concatenate([np.arange(starts[b], starts[b] + layout.block_rows[b]) for b in blocks]) \
        if len(blocks) else np.zeros(0, np.int64)
    order_kinds = layout.kinds[order]

    per_kind = micro_steps_per_kind(layout, batching)
    rank_kind_rows: dict[int, np.ndarray] = {}  # kind -> (world, micro-steps of the kind, mb)
    for kind, steps in per_kind.items():
        rows = order[order_kinds == kind][:steps * world * mb].reshape(world, steps * mb)
        if shuffle == "rows":
            rows = np.stack([r[rng.permutation(len(r))] for r in rows])
        rank_kind_rows[kind] = rows.reshape(world, steps, mb)

    micro_kinds = np.concatenate([np.full(steps, kind, np.int8) for kind, steps in per_kind.items()])
    if shuffle == "none":  # manifest order: by the position of rank 0's first row of each micro-step
        first = np.concatenate([rank_kind_rows[k][0, :, 0] for k in per_kind]) if per_kind else np.zeros(0)
        interleave = np.argsort(first, kind="stable")
    else:
        interleave = rng.permutation(len(micro_kinds))
    micro_kinds = micro_kinds[interleave]
    rows = np.zeros((world, len(micro_kinds), mb), np.int64)
    for kind in per_kind:
        rows[:, micro_kinds == kind] = rank_kind_rows[kind]

    kept = len(micro_kinds) - len(micro_kinds) % batching.grad_accum_steps
    micro_kinds, rows = micro_kinds[:kept], rows[:, :kept]
    return EpochPlan(epoch=epoch, micro_kinds=micro_kinds, rows=rows.reshape(world, kept * mb),
                     left_out=len(layout.kinds) - world * kept * mb)


@dataclass(frozen=True)
class RankPlan:
    """One rank's share of a whole stage: its rows of every epoch the stage reaches, and how steps map
    onto them. What the driver hands each worker (`rows` lives in Ray's object store)."""

    rows: list[np.ndarray]  # per epoch, this rank's row numbers in training order
    micro_kinds: list[np.ndarray]  # per epoch, the media kind of each micro-batch
    left_out: list[int]  # per epoch, manifest rows the epoch does not train on (all ranks together)
    steps_per_epoch: int
    batching: Batching

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, row offset in that epoch's list) where optimizer step `step` starts."""
        epoch, in_epoch = divmod(step, self.steps_per_epoch)
        return epoch, in_epoch * self.batching.rows_per_rank_step


def plan_stage(layout: Layout, batching: Batching, shuffle: str, seed: int, total: int) -> list[EpochPlan]:
    """The plans of every epoch `total` optimizer steps reach (the last one possibly in part)."""
    per_epoch = steps_per_epoch(layout, batching)
    return [plan_epoch(layout, batching, shuffle, seed, e) for e in range(math.ceil(total / per_epoch))]


def rank_plan(plans: list[EpochPlan], rank: int, layout: Layout, batching: Batching) -> RankPlan:
    return RankPlan(rows=[p.rank_rows(rank) for p in plans], micro_kinds=[p.micro_kinds for p in plans],
                    left_out=[p.left_out for p in plans], steps_per_epoch=steps_per_epoch(layout, batching),
                    batching=batching)
