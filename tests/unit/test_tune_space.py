"""The sweep's space: token counts from the paper's formula, constraint filtering, budgets, and the job schema."""

from __future__ import annotations

import pytest

from llavast.config.loader import parse_job
from llavast.errors import ConfigError
from llavast.tune.space import (
    PAPER_VISUAL_TOKENS,
    Shapes,
    activation_gib,
    assignments,
    build_space,
    paper_table,
    space_rows,
    visual_tokens,
)

# The 7B model's shapes: W1 = 384 // 14 = 27, N = 100, Qwen2-7B (D 3584, 28 layers, 28 heads).
SHAPES = Shapes(grid_size=27, num_frames=100, hidden_size=3584, num_layers=28, num_heads=28, text_tokens=512,
                micro_batch_size=1, gradient_checkpointing=True,
                defaults={"m_t": 100, "m_h": 100, "m_w": 100, "k1": 9, "k2": 3, "sigma": 20})


class Values:
    """A stand-in for a ParameterSpec with values (build_space reads .values, .kind, .low, .high)."""

    def __init__(self, *values: float) -> None:
        self.values = values


def test_visual_tokens_at_the_paper_values_are_2520():
    assert visual_tokens(9, 3, 20, 100) == 3 * 3 * 100 + 9 * 9 * 20 == PAPER_VISUAL_TOKENS == 2520


def test_grid_keeps_exactly_the_points_that_divide():
    space = build_space({"k1": Values(9, 6, 3), "k2": Values(3, 2), "sigma": Values(20, 30)}, SHAPES)
    kept = sorted((p.values["k1"], p.values["k2"], p.values["sigma"]) for p in space.valid)
    # k1 | 27 -> 9, 3; k2 | k1 -> (9, 3), (3, 3); sigma | 100 -> 20.
    assert kept == [(3, 3, 20), (9, 3, 20)]
    assert len(space.removed) == 12 - 2
    # Each removed point names the first rule it breaks, in the order W1 % k1, k1 % k2, N % sigma:
    # k1 = 6 (4 points); k2 = 2 with k1 in {9, 3} (4); sigma = 30 with (9, 3) and (3, 3) (2).
    assert space.removed_by_reason() == {"W1 % k1 == 0 (W1=27)": 4, "k1 % k2 == 0": 4, "N % sigma == 0 (N=100)": 2}
    tokens = {p.values["k1"]: p.tokens for p in space.valid}
    assert tokens == {9: 2520, 3: 3 * 3 * 100 + 3 * 3 * 20}


def test_unswept_parameters_keep_the_models_values():
    space = build_space({"sigma": Values(10, 25, 7)}, SHAPES)  # 7 does not divide 100
    assert [p.values for p in space.valid] == [{"sigma": 10}, {"sigma": 25}]
    rows = space_rows(space.valid, SHAPES)
    assert rows[0]["k1"] == 9 and rows[0]["k2"] == 3 and rows[0]["m_t"] == 100
    assert rows[0]["visual_tokens"] == 900 + 81 * 10 and rows[0]["vs_paper"] == round(1710 / 2520, 3)


def test_a_space_with_no_valid_point_is_an_error_naming_the_constraints():
    with pytest.raises(ConfigError) as err:
        build_space({"k1": Values(6, 4), "sigma": Values(30)}, SHAPES)
    message = str(err.value)
    assert "no valid point" in message and "W1 % k1 == 0" in message and "2 points" in message


def test_the_token_budget_removes_points_above_it():
    space = build_space({"k1": Values(9, 3)}, SHAPES, max_tokens=2000)
    assert [p.values["k1"] for p in space.valid] == [3]  # 900 + 9 * 20 = 1080 <= 2000 < 2520
    assert space.removed == [({"k1": 9}, "visual tokens <= 2000")]


def test_activation_estimate_follows_korthikanti_and_the_memory_budget_uses_it():
    small = Shapes(grid_size=4, num_frames=4, hidden_size=8, num_layers=2, num_heads=2, text_tokens=0,
                   micro_batch_size=1, gradient_checkpointing=False, defaults={})
    s, b, h, a = 10, 1, 8, 2
    per_layer = s * b * h * (34 + 5 * a * s / h)
    assert activation_gib(10, small) == pytest.approx(2 * per_layer / 2**30)
    checkpointed = Shapes(**{**small.__dict__, "gradient_checkpointing": True})
    assert activation_gib(10, checkpointed) == pytest.approx((2 * s * b * h * 2 + per_layer) / 2**30)
    # At the 7B shapes, the paper's point costs more than a 0.5x-token point; a budget between them keeps one.
    cheap, paper = build_space({"k1": Values(3, 9)}, SHAPES).valid
    assert cheap.activation_gib < paper.activation_gib
    budget = (cheap.activation_gib + paper.activation_gib) / 2
    kept = build_space({"k1": Values(3, 9)}, SHAPES, max_gib=budget)
    assert [p.values["k1"] for p in kept.valid] == [3]
    assert kept.removed[0][1] == f"activation memory <= {budget:g} GiB"


def test_coordinate_vocabularies_below_two_bins_are_removed():
    space = build_space({"m_t": Values(1, 50)}, SHAPES)
    assert [p.values for p in space.valid] == [{"m_t": 50}]
    assert space.removed == [({"m_t": 1}, "m_t >= 2")]


def test_assignments_map_parameters_to_job_fields():
    assert assignments({"m_t": 50.0, "k1": 3, "lr": 3e-4, "lora_r": 16}) == {
        "model.overrides.m_t": 50, "model.overrides.k1": 3, "train.lr": 3e-4, "lora.r": 16}
    with pytest.raises(ConfigError, match="unknown sweep parameter"):
        assignments({"dropout": 0.1})


def test_paper_table_holds_the_paper_row():
    rows = paper_table([9, 6, 3], [3, 1], [20, 10])
    paper = [r for r in rows if (r["k1"], r["k2"], r["sigma"]) == (9, 3, 20)]
    assert paper == [{"k1": 9, "k2": 3, "sigma": 20, "N_s = k2^2 N": 900, "N_t = k1^2 sigma": 1620,
                      "visual tokens": 2520, "vs paper": 1.0}]
    assert all(r["k1"] % r["k2"] == 0 for r in rows)


SWEEP = {"kind": "sweep", "name": "s", "base": [{"job": "stage.yaml"}],
         "validation": {"task": "stvg", "annotations": "b.json"},
         "tracking": {"uri": "http://127.0.0.1:1", "experiment": "e"}, "storage": {"root": "/tmp/x"}}


@pytest.mark.parametrize(("space", "search", "message"), [
    ({"dropout": {"values": [0.1]}}, {}, "unknown parameter 'dropout'"),
    ({"k1": {"uniform": [1, 9]}}, {"num_samples": 2}, "k1: give a list of values"),
    ({"k1": {"values": [2.5]}}, {"num_samples": 2}, "positive integers"),
    ({"lr": {"loguniform": [0, 1]}}, {"num_samples": 2}, "low > 0 for loguniform"),
    ({"lr": {"loguniform": [1e-4, 1e-3]}}, {"algorithm": "grid"}, "grid needs values for every parameter"),
    ({"k1": {"values": [3]}}, {"algorithm": "random"}, "needs num_samples"),
])
def test_sweep_job_schema_refuses(space, search, message):
    with pytest.raises(ConfigError, match=message):
        parse_job({**SWEEP, "space": space, "search": search})


def test_sweep_objective_defaults_per_task():
    job = parse_job({**SWEEP, "space": {"k1": {"values": [3, 9]}}, "search": {"algorithm": "grid"}})
    assert job.objective_metric == "mean_tIoU_sIoU"
    tvg = parse_job({**SWEEP, "space": {"k1": {"values": [3]}}, "search": {"algorithm": "grid"},
                     "validation": {"task": "tvg", "annotations": "t.json"}, "objective": {"metric": "R@0.5"}})
    assert tvg.objective_metric == "R@0.5"


def test_docs_tuning_md_holds_the_current_computed_tables():
    from pathlib import Path

    from llavast.tune.tables import markdown

    docs = (Path(__file__).resolve().parents[2] / "docs" / "tuning.md").read_text()
    assert markdown() in docs, "docs/tuning.md is stale: regenerate its tables with python -m llavast.tune.tables"


def test_the_tables_7b_shapes_are_the_models_defaults():
    from llavast.tune.space import shapes_of
    from llavast.tune.tables import PAPER_7B
    from model_zoo.llava_st.config import LlavaSTConfig

    assert shapes_of(LlavaSTConfig(), 32768, 1, gradient_checkpointing=True) == PAPER_7B
