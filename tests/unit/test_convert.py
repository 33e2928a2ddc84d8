"""Released LLaVA-ST checkpoint names -> this project's names, checked by loading with strict=True."""

from __future__ import annotations

import pytest
import torch

from benchmarks.stp_loop_baseline import stp_loop
from model_zoo.llava_st import LlavaSTForCausalLM, tiny_config
from model_zoo.llava_st.convert import ReleaseCheckpointError, convert_release_state_dict
from model_zoo.llava_st.stp import SpatialTemporalPacker
from tests.fixtures.stp import SETTINGS, make_config

RELEASED_PACKERS = {"token_packer": "step1", "token_packer_fast": "spatial", "token_packer_slow": "temporal"}


def released_packer_tensors(dim: int, width: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """The parameters of one released ``TokenPackerAttention`` (its names and shapes), filled at random."""
    def rand(*shape: int) -> torch.Tensor:
        return 0.1 * torch.randn(*shape, generator=gen)

    tensors = {}
    for p in "qkv":
        tensors |= {f"to_{p}.0.weight": rand(width, dim), f"to_{p}.0.bias": rand(width),
                    f"to_{p}.2.weight": rand(width, width), f"to_{p}.2.bias": rand(width),
                    f"ln_{p}.weight": 1 + rand(width), f"ln_{p}.bias": rand(width)}
    return tensors | {"attn.in_proj_weight": rand(3 * width, width), "attn.in_proj_bias": rand(3 * width),
                      "attn.out_proj.weight": rand(width, width), "attn.out_proj.bias": rand(width),
                      "to_out.weight": rand(dim, width)}


def released_stp_state_dict(dim: int, width: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    return {f"model.vision_resampler.{packer}.devide_attention.{name}": tensor
            for packer in RELEASED_PACKERS for name, tensor in released_packer_tensors(dim, width, gen).items()}


def test_released_stp_weights_load_and_run():
    released = released_stp_state_dict(dim=32, width=16)
    converted = convert_release_state_dict(released)
    assert all(key.startswith("stp.") for key in converted)
    stp = SpatialTemporalPacker(make_config(**SETTINGS[2])).eval()
    stp.load_state_dict({key.removeprefix("stp."): value for key, value in converted.items()}, strict=True)
    for packer, ours in RELEASED_PACKERS.items():
        for name, param in getattr(stp, ours).named_parameters():
            assert torch.equal(param, released[f"model.vision_resampler.{packer}.devide_attention.{name}"])
    x = torch.randn(stp.frames, stp.grid**2, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        f_s, f_t = stp(x)
        ref_s, ref_t = stp_loop(stp, x)
    torch.testing.assert_close(f_s, ref_s, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(f_t, ref_t, atol=1e-5, rtol=1e-5)


# The inverse of the converter's table, written out independently: our name prefix -> released prefix.
OURS_TO_RELEASED = [
    ("vision_tower.", "model.vision_tower.vision_tower.vision_model."),
    ("mm_projector.", "model.mm_projector."),
    ("stp.step1.", "model.vision_resampler.token_packer.devide_attention."),
    ("stp.spatial.", "model.vision_resampler.token_packer_fast.devide_attention."),
    ("stp.temporal.", "model.vision_resampler.token_packer_slow.devide_attention."),
    ("lape.temporal_input", "model.temporal_input_embeddings.weight"),
    ("lape.temporal_output", "model.temporal_output_embeddings.weight"),
    ("lape.height_input", "model.spatial_height_input_embeddings.weight"),
    ("lape.height_output", "model.spatial_height_output_embeddings.weight"),
    ("lape.width_input", "model.spatial_width_input_embeddings.weight"),
    ("lape.width_output", "model.spatial_width_output_embeddings.weight"),
    ("language_model.model.", "model."),
    ("language_model.lm_head.", "lm_head."),
]


def to_released_name(key: str) -> str:
    for ours, released in OURS_TO_RELEASED:
        if key.startswith(ours):
            return released + key[len(ours):]
    raise AssertionError(f"the test's inverse table does not cover {key!r}")


def test_whole_tiny_model_round_trips_through_released_names(tiny_model):
    """Rename the tiny model's own state dict to released names (plus unused extras) and back."""
    ours = tiny_model.state_dict()
    d = tiny_model.config.hidden_size
    released = {to_released_name(key): value for key, value in ours.items()}
    released |= {  # present in real releases, unused by the model
        "model.image_newline": torch.zeros(d),
        "model.vision_tower.vision_tower.vision_model.head.probe": torch.zeros(1, 1, 32),
        "model.vision_tower.vision_tower.vision_model.head.attention.in_proj_weight": torch.zeros(96, 32),
        "model.temporal_reparam_mat": torch.ones(100, 100),
        "model.spatial_height_reparam_mat": torch.ones(100, 100),
    }
    converted = convert_release_state_dict(released)
    assert converted.keys() == ours.keys()
    torch.manual_seed(1)
    fresh = LlavaSTForCausalLM(tiny_config())
    result = fresh.load_state_dict(converted, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, ours[key]), key


@pytest.mark.parametrize("key", [
    "model.vision_resampler.token_packer_medium.devide_attention.to_q.0.weight",
    "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight",
    "model.faster_token",
])
def test_unknown_keys_raise_naming_the_key(key):
    with pytest.raises(ReleaseCheckpointError, match=key.replace(".", r"\.")) as info:
        convert_release_state_dict({"lm_head.weight": torch.zeros(2, 2), key: torch.zeros(1)})
    assert isinstance(info.value, ValueError)
