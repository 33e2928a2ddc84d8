"""The Spatial-Temporal Packer against REFERENCE.md 1.3: shapes, a loop reference, pooling, locality."""

from __future__ import annotations

import pytest
import torch

from benchmarks.stp_loop_baseline import stp_loop
from model_zoo.llava_st.config import LlavaSTConfigError
from model_zoo.llava_st.stp import (
    SpatialTemporalPacker,
    SpatialWindows,
    TemporalWindows,
    pool_space,
    pool_time,
)
from tests.fixtures.stp import DEFAULTS, SETTINGS, make_config

# The loop reference costs ~1 ms a window: the same geometries with fewer frames (odd 5-frame and
# even 2-frame temporal windows), and k1 = grid on a 12 x 12 grid.
LOOP_SETTINGS = [
    dict(grid=27, frames=5, k1=9, k2=3, sigma=1),
    dict(grid=12, frames=2, k1=12, k2=4, sigma=1),
    SETTINGS[2],
]


def make_stp(seed: int = 0, **kw) -> SpatialTemporalPacker:
    torch.manual_seed(seed)
    return SpatialTemporalPacker(make_config(**kw)).eval()


def video(stp: SpatialTemporalPacker, dim: int = 32, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(stp.frames, stp.grid * stp.grid, dim, generator=gen)


@pytest.mark.parametrize("setting", [DEFAULTS, *SETTINGS])
def test_output_shapes(setting):
    stp = make_stp(**setting)
    f_s, f_t = stp(video(stp))
    n, k1, k2, sigma = setting["frames"], setting["k1"], setting["k2"], setting["sigma"]
    assert f_s.shape == (n, k2 * k2, 32)
    assert f_t.shape == (sigma, k1 * k1, 32)


def test_token_counts_of_the_defaults():
    config = make_config(**DEFAULTS)
    assert SpatialTemporalPacker.num_tokens(config) == 2520 == config.video_seq_len
    assert config.image_seq_len == 729
    f_s, f_t = SpatialTemporalPacker(config)(torch.randn(100, 729, 32))
    assert f_s.shape[0] * f_s.shape[1] + f_t.shape[0] * f_t.shape[1] == 2520


@pytest.mark.parametrize("pool", ["interpolate", "mean"])
@pytest.mark.parametrize("setting", LOOP_SETTINGS, ids=lambda s: "g{grid}-n{frames}-k{k1}-{k2}-s{sigma}".format(**s))
def test_vectorised_equals_loop_reference(setting, pool):
    stp = make_stp(pool=pool, **setting)
    x = video(stp)
    with torch.no_grad():
        f_s, f_t = stp(x)
        ref_s, ref_t = stp_loop(stp, x)
    torch.testing.assert_close(f_s, ref_s, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(f_t, ref_t, atol=1e-5, rtol=1e-5)


def _grid_values(frames: int, grid: int) -> torch.Tensor:
    """x[t, r*grid + c] = (t, r, c) encoded as 1e4 t + 100 r + c, so pooled values reveal the sources."""
    t, r, c = torch.meshgrid(torch.arange(frames), torch.arange(grid), torch.arange(grid), indexing="ij")
    return (1e4 * t + 100 * r + c).double().reshape(frames, grid * grid, 1)


def test_interpolate_picks_window_centres_for_odd_factors():
    pooled = pool_space(_grid_values(1, 27), 27, 9, "interpolate").reshape(9, 9)
    i = torch.arange(9).double()
    assert torch.equal(pooled, 100 * (3 * i + 1)[:, None] + (3 * i + 1)[None, :])
    series = torch.arange(100).double().reshape(100, 1, 1)
    assert torch.equal(pool_time(series, 20, "interpolate").flatten(), 5 * torch.arange(20).double() + 2)


def test_interpolate_averages_the_two_middle_elements_for_even_factors():
    pooled = pool_space(_grid_values(1, 12), 12, 3, "interpolate").reshape(3, 3)  # windows of 4: (1 + 2) / 2
    i = torch.arange(3).double()
    assert torch.equal(pooled, 100 * (4 * i + 1.5)[:, None] + (4 * i + 1.5)[None, :])
    series = torch.arange(8).double().reshape(8, 1, 1)
    assert torch.equal(pool_time(series, 4, "interpolate").flatten(), 2 * torch.arange(4).double() + 0.5)


def test_mean_pooling_is_the_window_mean():
    x = torch.randn(3, 27 * 27, 5, dtype=torch.float64)
    windows = x.reshape(3, 9, 3, 9, 3, 5).mean(dim=(2, 4)).reshape(3, 81, 5)
    torch.testing.assert_close(pool_space(x, 27, 9, "mean"), windows)
    y = torch.randn(100, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(pool_time(y, 20, "mean"), y.reshape(20, 5, 4, 5).mean(1))


def test_pooling_runs_in_fp32_and_keeps_the_input_dtype():
    x = torch.randn(2, 81, 4).bfloat16()
    assert pool_space(x, 9, 3, "mean").dtype == torch.bfloat16
    assert pool_time(x, 1, "interpolate").dtype == torch.bfloat16


def _changed(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Which tokens (all but the feature axis) differ."""
    return (a != b).any(dim=-1)


def test_step1_is_local_to_its_3x3_window():
    """Perturbing the 3x3 block (row-block 4, col-block 7) of frame 3 changes only step-1 query (3, 4*9+7)."""
    stp = make_stp(**DEFAULTS)
    x = video(stp)
    y = x.clone()
    y[3].reshape(27, 27, 32)[12:15, 21:24] += 1.0
    with torch.no_grad():
        step1 = [stp.step1(pool_space(v, 27, 9, "interpolate"), v, SpatialWindows(27, 9)) for v in (x, y)]
    expected = torch.zeros(100, 81, dtype=torch.bool)
    expected[3, 4 * 9 + 7] = True
    assert torch.equal(_changed(*step1), expected)


def test_temporal_packer_is_local_to_its_frame_window():
    """N=10, sigma=2 (windows of 5 frames): perturbing frame 6 at position 40 changes only F_t[1, 40]."""
    stp = make_stp(**SETTINGS[0])
    f_hat = torch.randn(10, 81, 32)
    g_hat = f_hat.clone()
    g_hat[6, 40] += 1.0
    with torch.no_grad():
        f_t = [stp.temporal(pool_time(v, 2, "interpolate"), v, TemporalWindows(10, 2)) for v in (f_hat, g_hat)]
    expected = torch.zeros(2, 81, dtype=torch.bool)
    expected[1, 40] = True
    assert torch.equal(_changed(*f_t), expected)


def test_whole_packer_locality():
    """A change in frame 6, step-1 window (row 4, col 7) reaches F_s only at frame 6, k2-block (1, 2), and
    F_t only at temporal window 6 // 5 = 1, position 4*9 + 7."""
    stp = make_stp(**SETTINGS[0])
    x = video(stp)
    y = x.clone()
    y[6].reshape(27, 27, 32)[12:15, 21:24] += 1.0
    with torch.no_grad():
        (fs_x, ft_x), (fs_y, ft_y) = stp(x), stp(y)
    expected_s = torch.zeros(10, 9, dtype=torch.bool)
    expected_s[6, 1 * 3 + 2] = True
    expected_t = torch.zeros(2, 81, dtype=torch.bool)
    expected_t[1, 4 * 9 + 7] = True
    assert torch.equal(_changed(fs_x, fs_y), expected_s)
    assert torch.equal(_changed(ft_x, ft_y), expected_t)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (dict(k1=8), "k1"),
        (dict(k2=2), "k2"),
        (dict(sigma=3), "sigma"),
        (dict(k1=0), "k1"),
        (dict(sigma=-4), "sigma"),
        (dict(width=15, heads=2), "stp_heads"),
    ],
)
def test_invalid_settings_raise_the_config_error(change, named):
    setting = {**DEFAULTS, **change}
    with pytest.raises(LlavaSTConfigError, match=named):
        SpatialTemporalPacker(make_config(**setting))


def test_wrong_input_shape_is_refused():
    stp = make_stp(**SETTINGS[0])
    with pytest.raises(ValueError, match="N, g\\*g, D"):
        stp(torch.randn(9, 729, 32))


def test_gradients_reach_every_parameter():
    stp = make_stp(**SETTINGS[0]).train()
    f_s, f_t = stp(video(stp))
    (f_s.square().mean() + f_t.square().mean()).backward()
    for name, param in stp.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_released_parameter_names_and_init():
    stp = make_stp(**SETTINGS[0])
    names = {name for name, _ in stp.step1.named_parameters()}
    assert names == {
        *(f"to_{p}.{i}.{w}" for p in "qkv" for i in (0, 2) for w in ("weight", "bias")),
        *(f"ln_{p}.{w}" for p in "qkv" for w in ("weight", "bias")),
        "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias",
        "to_out.weight",
    }
    for prefix in ("step1", "spatial", "temporal"):
        block = getattr(stp, prefix)
        assert torch.equal(block.ln_k.weight, torch.ones(16)) and torch.equal(block.ln_k.bias, torch.zeros(16))
        assert torch.equal(block.to_q[0].bias, torch.zeros(16))
        assert torch.equal(block.attn.out_proj.bias, torch.zeros(16))
    big = SpatialTemporalPacker(make_config(**SETTINGS[0], dim=256, width=256)).step1.to_k[0].weight
    assert abs(big.std().item() - 0.02) < 0.002


def test_bf16_input_gives_bf16_output_close_to_fp32():
    stp = make_stp(**SETTINGS[0])
    x = video(stp)
    with torch.no_grad():
        f_s, f_t = stp(x)
        b_s, b_t = stp.to(torch.bfloat16)(x.bfloat16())
    assert b_s.dtype == b_t.dtype == torch.bfloat16
    torch.testing.assert_close(b_s.float(), f_s, atol=0.1, rtol=0.05)
    torch.testing.assert_close(b_t.float(), f_t, atol=0.1, rtol=0.05)
