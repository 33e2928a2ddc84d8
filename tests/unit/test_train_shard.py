"""The per-rank data plan: deterministic, disjoint, complete, resumable at any position."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llavast.config.data import DataConfig
from llavast.data import manifest
from llavast.errors import ConfigError, DataError
from llavast.train.shard import (
    check_data_config,
    plan_epoch,
    rank_rows,
    remaining_rows,
    steps_per_epoch,
    total_steps,
)

UIDS = [[f"a:{i}" for i in range(5)], [f"b:{i}" for i in range(4)]]  # 9 samples in two shards
FILES = [[(uid, 2) for uid in uids] for uids in UIDS]  # (uid, media kind): all videos


def test_plan_is_deterministic_and_each_epoch_reshuffles() -> None:
    first, again = plan_epoch(FILES, "rows", 7, 0, 2), plan_epoch(FILES, "rows", 7, 0, 2)
    assert first == again
    assert plan_epoch(FILES, "rows", 7, 1, 2).uids != first.uids
    assert plan_epoch(FILES, "none", 7, 0, 2).uids == UIDS[0] + UIDS[1] + [""]
    blocks = plan_epoch(FILES, "blocks", 7, 0, 1).uids
    assert blocks in (UIDS[0] + UIDS[1], UIDS[1] + UIDS[0])


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_ranks_are_disjoint_complete_and_equal_sized(world: int) -> None:
    plan = plan_epoch(FILES, "rows", 0, 0, world)
    lists = [plan.rank_uids(r) for r in range(world)]
    assert all(len(rank) == plan.per_rank for rank in lists)
    real = [uid for rank in lists for uid in rank if uid]
    assert sorted(real) == sorted(UIDS[0] + UIDS[1])
    for rank in lists:  # pads only at the tail of a rank's list
        assert "" not in rank[:len([u for u in rank if u])]


def test_grouped_plans_make_every_micro_step_single_media() -> None:
    kinds = {0: 3, 1: 7, 2: 10}  # text, image, video samples
    files = [[(f"{k}:{i}", k) for k, n in kinds.items() for i in range(n)]]
    world, micro = 2, 2
    plan = plan_epoch(files, "rows", 1, 0, world, group_size=world * micro)
    kind_of = {uid: k for uid, k in files[0]}
    assert plan.left_out == sum(n % (world * micro) for n in kinds.values()) == 3 + 3 + 2
    assert len(plan.uids) == sum(kinds.values()) - plan.left_out and "" not in plan.uids
    ranks = [plan.rank_uids(r) for r in range(world)]
    for step in range(plan.per_rank // micro):  # the same single kind on every rank at every micro-step
        assert len({kind_of[uid] for rank in ranks for uid in rank[step * micro:(step + 1) * micro]}) == 1
    assert plan_epoch(files, "rows", 1, 1, world, group_size=4).uids != plan.uids
    assert len(plan_epoch(files, "rows", 1, 1, world, group_size=4).uids) == len(plan.uids)


def test_steps_and_totals() -> None:
    plan = plan_epoch(FILES, "none", 0, 0, 2)  # 5 positions per rank
    assert steps_per_epoch(plan, 2) == 2  # the fifth position waits for the next epoch
    assert total_steps(None, 2.5, 2) == 5 and total_steps(7, 1.0, 2) == 7
    with pytest.raises(DataError, match="fewer than one step needs"):
        steps_per_epoch(plan, 6)
    with pytest.raises(ConfigError, match="data.local_shuffle_buffer"):
        check_data_config(DataConfig(manifest="x", local_shuffle_buffer=4))


def _row(uid: str) -> dict:
    return {"uid": uid, "id": uid, "source": uid[0], "task": "caption", "source_file": "f", "record_index": 0,
            "media_kind": 0, "media_uri": "", "split_start": -1, "split_end": -1, "conversations": "[]",
            "variables": {k: [] for k in manifest.VARIABLES_TYPE.names}}


def test_rank_rows_follow_the_plan_from_the_resume_point(tmp_path: Path) -> None:
    files = []
    for i, uids in enumerate(UIDS):
        path = tmp_path / f"part-{i}.parquet"
        pq.write_table(pa.Table.from_pylist([_row(u) for u in uids], schema=manifest.SCHEMA), path)
        files.append(str(path))
    cfg = DataConfig(manifest=str(tmp_path))
    plan = plan_epoch(FILES, "rows", 3, 0, 2)
    for rank in range(2):
        for skip in (0, 2, plan.per_rank - 1):
            rows = rank_rows(cfg, files, plan, rank, skip)
            assert rows.schema.equals(manifest.SCHEMA)
            assert rows.column("uid").to_pylist() == plan.rank_uids(rank)[skip:]


def test_remaining_rows_continue_mid_epoch_into_the_next_epochs(tmp_path: Path) -> None:
    (tmp_path / "manifest").mkdir()
    for i, uids in enumerate(UIDS):
        rows = [dict(_row(u), media_kind=2) for u in uids]
        pq.write_table(pa.Table.from_pylist(rows, schema=manifest.SCHEMA), tmp_path / "manifest" / f"part-{i}.parquet")
    (tmp_path / "summary.json").write_text('{"total": 9}')
    cfg = DataConfig(manifest=str(tmp_path), shuffle="rows", seed=5)
    per_step, world = 2, 2  # 5 positions per rank -> 2 steps per epoch
    for rank in range(world):
        lists = [plan_epoch(FILES, "rows", 5, e, world).rank_uids(rank)[:4] for e in range(3)]
        got = remaining_rows(cfg, 2, rank, world, per_step, 2, step=1, total_steps=5).column("uid").to_pylist()
        assert got == lists[0][2:] + lists[1] + lists[2][:2]  # steps 2-5: epoch 0 half, epoch 1, epoch 2 half
        assert remaining_rows(cfg, 2, rank, world, per_step, 2, step=5, total_steps=5).num_rows == 0
