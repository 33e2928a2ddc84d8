"""The data plan (pure) and the manifest reads it drives: every rank gets the same number of micro-batches,
each global micro-step holds one media kind, ranks are disjoint, what is left out is counted, and a rank
reads only the row groups that hold its rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llavast.data import manifest
from llavast.data.plan import Batching, Layout, plan_epoch, plan_stage, rank_plan, steps_per_epoch, total_steps
from llavast.errors import DataError
from llavast.storage import StorageOptions


def _layout(kinds_per_block: list[list[int]]) -> Layout:
    return Layout(block_rows=np.array([len(b) for b in kinds_per_block]),
                  kinds=np.array([k for b in kinds_per_block for k in b], np.int8))


# 40 blocks of 25 rows: blocks of videos (2) and of images (1), as ST-Align's per-source shards are
MIXED = _layout([[2] * 25 if b % 3 else [1] * 25 for b in range(40)])


@pytest.mark.parametrize("shuffle", ["rows", "blocks", "none"])
@pytest.mark.parametrize("world,mb,accum", [(1, 1, 1), (2, 2, 1), (4, 3, 2), (8, 1, 3)])
def test_every_micro_step_is_single_media_and_ranks_are_equal_disjoint_and_counted(
        shuffle: str, world: int, mb: int, accum: int) -> None:
    batching = Batching(world, mb, accum)
    plan = plan_epoch(MIXED, batching, shuffle, seed=3, epoch=0)
    micro = len(plan.micro_kinds)
    assert micro % accum == 0 and micro // accum == steps_per_epoch(MIXED, batching)
    assert plan.rows.shape == (world, micro * mb)
    per_micro = plan.rows.reshape(world, micro, mb)
    assert (MIXED.kinds[per_micro] == plan.micro_kinds[None, :, None]).all()  # one kind per global micro-step
    used = plan.rows.reshape(-1)
    assert len(np.unique(used)) == len(used)  # no row twice
    assert plan.left_out == len(MIXED.kinds) - len(used)
    # left out: per kind, less than one global micro-step, then less than one optimizer step
    assert plan.left_out < 2 * world * mb + (accum - 1) * world * mb


def test_a_rank_reads_about_its_share_of_blocks() -> None:
    world = 8
    plan = plan_epoch(MIXED, Batching(world, 1, 1), "rows", seed=0, epoch=0)
    block_of = np.searchsorted(MIXED.block_starts, plan.rows, side="right") - 1
    for rank in range(world):
        touched = len(np.unique(block_of[rank]))
        assert touched <= 40 / world + 2 * 2  # its share, plus a partial block at each end of each kind's range


def test_plans_are_deterministic_and_epochs_reshuffle() -> None:
    batching = Batching(2, 2, 1)
    a, b = plan_epoch(MIXED, batching, "rows", 0, 0), plan_epoch(MIXED, batching, "rows", 0, 0)
    assert np.array_equal(a.rows, b.rows) and np.array_equal(a.micro_kinds, b.micro_kinds)
    c = plan_epoch(MIXED, batching, "rows", 0, 1)
    assert not np.array_equal(a.rows, c.rows) and len(a.micro_kinds) == len(c.micro_kinds)
    none = plan_epoch(MIXED, batching, "none", 0, 5)
    assert np.array_equal(none.rows, plan_epoch(MIXED, batching, "none", 9, 0).rows)


def test_counts_from_the_kind_totals() -> None:
    layout = _layout([[2] * 10, [1] * 7])
    # world 2 x mb 2 = 4 rows per micro-step: 10 videos give 2, 7 images give 1; 5 rows left out
    plan = plan_epoch(layout, Batching(2, 2, 1), "rows", 0, 0)
    assert sorted(plan.micro_kinds.tolist()) == [1, 2, 2] and plan.left_out == 5
    assert steps_per_epoch(layout, Batching(2, 2, 2)) == 1  # 3 micro-steps make one step of 2
    assert plan_epoch(layout, Batching(2, 2, 2), "rows", 0, 0).left_out == 17 - 8
    assert total_steps(None, 2.5, 4) == 10 and total_steps(7, 2.5, 4) == 7
    with pytest.raises(DataError, match="no optimizer step"):
        steps_per_epoch(layout, Batching(8, 2, 1))


def test_rank_plan_positions_a_resumed_step() -> None:
    batching = Batching(2, 2, 3)  # 6 rows per rank per step
    epochs = plan_stage(MIXED, batching, "rows", 0, total=steps_per_epoch(MIXED, batching) + 2)
    assert len(epochs) == 2
    plan = rank_plan(epochs, 1, MIXED, batching)
    per_epoch = plan.steps_per_epoch
    assert plan.position(0) == (0, 0) and plan.position(5) == (0, 30) and plan.position(per_epoch + 1) == (1, 6)
    assert np.array_equal(plan.rows[1], epochs[1].rows[1])


def _write_manifest(root: Path, shards: list[list[int]], row_group_size: int) -> str:
    """A finished index whose shards hold rows of the given media kinds, in row groups of `row_group_size`."""
    (root / manifest.MANIFEST_DIR).mkdir(parents=True)
    names, n = [], 0
    for s, kinds in enumerate(shards):
        rows = [{**{f.name: None for f in manifest.SCHEMA}, "uid": f"src:{n + i}", "id": "", "source": "src",
                 "task": "TVG", "source_file": "a.json", "record_index": n + i, "media_kind": k,
                 "media_uri": f"v{n + i}.mp4", "split_start": -1, "split_end": -1, "conversations": "[]",
                 "variables": {key: [] for key in manifest.VARIABLES_TYPE.names}} for i, k in enumerate(kinds)]
        name = f"part-{s:05d}-00000.parquet"
        pq.write_table(manifest.rows_to_table(rows), root / manifest.MANIFEST_DIR / name, row_group_size=row_group_size)
        names.append(name)
        n += len(kinds)
    (root / manifest.SUMMARY_FILE).write_text(f'{{"shards": {names!r}, "total": {n}}}'.replace("'", '"'))
    return str(root)


def test_a_rank_reads_only_its_rows_in_plan_order(tmp_path: Path) -> None:
    index = _write_manifest(tmp_path, [[2] * 20, [1] * 12, [2] * 20], row_group_size=5)
    blocks, layout = manifest.read_layout(index, StorageOptions())
    assert layout.block_rows.tolist() == [5] * 4 + [5, 5, 2] + [5] * 4 and len(blocks.files) == 3
    plan = plan_epoch(layout, Batching(2, 2, 1), "rows", 0, 0)
    rows = plan.rank_rows(0)
    table = manifest.read_rows(blocks, rows, StorageOptions())
    assert table.column_names == list(manifest.STREAM_COLUMNS)  # provenance columns stay in storage
    assert table.column("uid").to_pylist() == [f"src:{r}" for r in rows]

    # rows of the first shard only: the other shards are never opened (here: they are gone)
    (tmp_path / manifest.MANIFEST_DIR / "part-00001-00000.parquet").unlink()
    (tmp_path / manifest.MANIFEST_DIR / "part-00002-00000.parquet").unlink()
    first = np.array([7, 3, 19, 0])
    assert manifest.read_rows(blocks, first, StorageOptions()).column("uid").to_pylist() == \
        ["src:7", "src:3", "src:19", "src:0"]
    assert manifest.read_rows(blocks, np.zeros(0, np.int64), StorageOptions()).num_rows == 0
    with pytest.raises(DataError, match="re-indexed"):
        manifest.read_rows(blocks, np.array([52]), StorageOptions())


def test_read_rows_reads_only_the_needed_row_groups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    index = _write_manifest(tmp_path, [[2] * 40], row_group_size=10)
    blocks, _ = manifest.read_layout(index, StorageOptions())
    read: list[int] = []
    original = pq.ParquetFile.read_row_group

    def counting(self: pq.ParquetFile, i: int, *args: object, **kwargs: object) -> pa.Table:
        read.append(i)
        return original(self, i, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", counting)
    manifest.read_rows(blocks, np.array([31, 12, 38, 15]), StorageOptions())
    assert read == [1, 3]  # each needed row group once, the others never
