"""NTP and LAPE, checked against the formulas of REFERENCE.md 1.2."""

import math

import pytest
import torch

from model_zoo.llava_st import load_model, tiny_config
from model_zoo.llava_st.lape import LAPE, LAPETables, ntp, ntp_matrix, resample


def test_ntp_forward_value_is_the_table():
    w = torch.randn(7, 5)
    assert torch.equal(ntp(w, ntp_matrix(7)), w)


def test_ntp_gradient_propagates_to_neighbours_with_halving_weights():
    m, d = 6, 3
    w = torch.randn(m, d, requires_grad=True)
    g = torch.randn(m, d)
    (ntp(w, ntp_matrix(m)) * g).sum().backward()
    for i in range(m):
        expected = g[i] + sum(2.0 ** -abs(i - j) * g[j] for j in range(m))
        torch.testing.assert_close(w.grad[i], expected)


def test_resample_is_linear_interpolation_with_align_corners_false():
    table = torch.tensor([[0.0], [10.0], [20.0], [40.0]])  # M = 4 rows, D = 1
    # by hand: source x_i = (i + 0.5) * 4/6 - 0.5, clamped to [0, 3]
    # x = 0 (clamped), 0.5, 1.1667, 1.8333, 2.5, 3 (clamped)
    expected = torch.tensor([0.0, 5.0, 10 + 10 / 6, 10 + 50 / 6, 30.0, 40.0])
    torch.testing.assert_close(resample(table, 6)[:, 0], expected)
    assert torch.equal(resample(table, 4), table)


def _tables(m_t: int, m_h: int, m_w: int, d: int) -> LAPETables:
    g = torch.Generator().manual_seed(0)
    inputs = {a: torch.randn(m, d, generator=g) for a, m in zip(("temporal", "height", "width"), (m_t, m_h, m_w))}
    outputs = {a: torch.randn(m, d, generator=g) for a, m in zip(("temporal", "height", "width"), (m_t, m_h, m_w))}
    return LAPETables(inputs, outputs)


def test_rho_is_the_mean_of_input_and_output_tables():
    tables = _tables(4, 5, 6, 3)
    torch.testing.assert_close(tables.rho("height"), (tables.inputs["height"] + tables.outputs["height"]) / 2)


def test_video_injection_adds_resampled_rho_per_axis():
    tables, grid, frames, d = _tables(4, 4, 4, 2), 6, 6, 2
    out = LAPE.inject(torch.zeros(frames, grid * grid, d), tables, grid, is_video=True).reshape(frames, grid, grid, d)
    rt, rh, rw = (resample(tables.rho(a), n) for a, n in (("temporal", frames), ("height", grid), ("width", grid)))
    for t, y, x in [(0, 0, 0), (1, 2, 3), (5, 5, 1), (3, 4, 5)]:
        torch.testing.assert_close(out[t, y, x], rt[t] + rh[y] + rw[x])
    # the temporal axis is resampled too: N = 6 frames from M_t = 4 rows (the release requires N == M_t)
    assert not torch.allclose(rt[1], tables.rho("temporal")[1])


def test_image_injection_uses_temporal_row_zero():
    tables, grid, d = _tables(4, 5, 5, 2), 5, 2
    out = LAPE.inject(torch.zeros(1, grid * grid, d), tables, grid, is_video=False).reshape(grid, grid, d)
    torch.testing.assert_close(out[2, 3], tables.rho("temporal")[0] + tables.rho("height")[2] + tables.rho("width")[3])


def test_lape_off_leaves_visual_features_unchanged(tiny_model, video_batch):
    model = tiny_model
    tables = model.lape()
    model.config.lape_enabled = False
    try:
        off = model.encode_media(video_batch["pixel_values"], video_batch["media_kind"], tables)[0]
        stp_only = torch.cat([t.flatten(0, 1) for t in model.stp(_projected(model, video_batch))])
        torch.testing.assert_close(off, stp_only)
    finally:
        model.config.lape_enabled = True
    on = model.encode_media(video_batch["pixel_values"], video_batch["media_kind"], tables)[0]
    assert not torch.allclose(on, off)


def _projected(model, batch):
    hidden = model.vision_tower(batch["pixel_values"], output_hidden_states=True).hidden_states
    return model.mm_projector(hidden[model.config.vision_feature_layer])


def _table_stats(lape: LAPE) -> dict[str, tuple[float, float, float]]:
    """(mean, std, max |x|) of the three input tables together and of the three output tables together."""
    out = {}
    for kind in ("input", "output"):
        x = torch.cat([getattr(lape, f"{axis}_{kind}").detach().flatten() for axis in ("temporal", "height", "width")])
        out[kind] = (x.mean().item(), x.std().item(), x.abs().max().item())
    return out


def test_lape_init_small_and_release(tiny_checkpoint):
    """small: N(0, initializer_range) for all six tables; release (the authors' tables, created after the base
    weights load with PyTorch's defaults): inputs N(0, 1), outputs U(+-1/sqrt(D)). Both through the stage-1 path
    (a base checkpoint, the option as a model override)."""
    torch.manual_seed(0)
    small = _table_stats(load_model(tiny_checkpoint).lape)
    release_model = load_model(tiny_checkpoint, lape_init="release")
    release = _table_stats(release_model.lape)
    std = tiny_config().text_config.initializer_range
    bound = 1 / math.sqrt(release_model.config.hidden_size)
    for kind in ("input", "output"):
        assert abs(small[kind][0]) < 0.1 * std and small[kind][1] == pytest.approx(std, rel=0.05)
    assert abs(release["input"][0]) < 0.05 and release["input"][1] == pytest.approx(1.0, rel=0.05)
    assert release["output"][2] <= bound and release["output"][2] > 0.95 * bound  # uniform fills its range
    assert release["output"][1] == pytest.approx(bound / math.sqrt(3), rel=0.05)
    with pytest.raises(ValueError, match="lape_init"):
        tiny_config(lape_init="large")


def test_lape_init_sincos_is_smooth_language_aligned_and_keeps_the_axes_apart(tiny_checkpoint):
    """sincos (the tiny learning recipe's init): an axis' input and output tables start equal (rho = E_in = E_out,
    so a patch's position and the token naming it are one vector), neighbouring coordinates are closer than far
    ones, the three axes live in disjoint dimensions (rho^t + rho^h + rho^w can be told apart), and a row's norm
    is an N(0, initializer_range) row's, through the stage-1 path (a base checkpoint, the option as an override)."""
    model = load_model(tiny_checkpoint, lape_init="sincos")
    lape, d = model.lape, model.config.hidden_size
    std = model.config.text_config.initializer_range
    tables = {axis: getattr(lape, f"{axis}_input").detach() for axis in ("temporal", "height", "width")}
    for axis, table in tables.items():
        assert torch.equal(table, getattr(lape, f"{axis}_output").detach())
        assert table.norm(dim=1) == pytest.approx(torch.full((table.shape[0],), math.sqrt(d) * std), rel=1e-5)
        unit = table / table.norm(dim=1, keepdim=True)
        similarity = unit[50] @ unit.t()  # row 50 against every row: near rows alike, far rows unrelated
        near, middle = similarity[[48, 49, 51, 52]].mean(), similarity[[*range(40, 47), *range(54, 61)]].mean()
        far = similarity[[*range(0, 20), *range(80, 100)]].mean()
        assert similarity[49] > 0.8 and similarity[51] > 0.8
        assert near > middle + 0.2 and middle > far + 0.2 and abs(far) < 0.1
    used = [set(torch.nonzero(t.abs().sum(0)).flatten().tolist()) for t in tables.values()]
    assert not (used[0] & used[1]) and not (used[0] & used[2]) and not (used[1] & used[2])
    assert all(len(u) >= 2 for u in used)
    assert lape.temporal_input.requires_grad  # a start, not a constant: the tables still train
