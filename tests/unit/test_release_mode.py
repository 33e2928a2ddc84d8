"""Released-weight inference: the first k2^2 N video positions hold the release's <vid_*> text embeddings."""

from __future__ import annotations

import pytest
import torch

from model_zoo.contract import MediaKind
from model_zoo.llava_st import LAPE, LlavaSTConfigError, from_llava_onevision, from_release_state_dict, tiny_config
from model_zoo.llava_st.convert import ReleaseCheckpointError, release_inference_fields, release_video_token_ids
from model_zoo.llava_st.policy import apply_stage

from .model_batches import make_batch
from .test_convert import to_released_name

# The tiny embedding has V = 1024 rows = L + 14, so L = 1010 and, in the release's order of added tokens
# (im_start, im_end, im_patch, vid_start, vid_end, vid_patch, ...), vid_start = L+3, vid_end = L+4, vid_patch = L+5.
VID_START, VID_END, VID_PATCH = 1013, 1014, 1015


@pytest.fixture
def released_state_dict(tiny_model):
    """The tiny model's weights under the release's names, with distinct random rows in the embedding."""
    released = {to_released_name(key): value.clone() for key, value in tiny_model.state_dict().items()}
    gen = torch.Generator().manual_seed(5)
    embed = released["model.embed_tokens.weight"]
    embed.copy_(torch.randn(embed.shape, generator=gen))
    return released


@pytest.fixture
def batch():
    """One video sample (row 0) and one image sample (row 1)."""
    config = tiny_config()
    return make_batch(config, [{"kind": MediaKind.VIDEO, "prompt": [10, 11, 12], "answer": [20, 21]},
                               {"kind": MediaKind.IMAGE, "prompt": [13, 14], "answer": [22]}])


def llm_inputs(model, batch) -> torch.Tensor:
    """The inputs_embeds the LLM receives in `forward` (captured at its entry)."""
    seen = {}

    def hook(_module, _args, kwargs):
        seen["embeds"] = kwargs["inputs_embeds"].detach().clone()

    handle = model.language_model.model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            model(**{k: v for k, v in batch.items() if k != "labels"})
    finally:
        handle.remove()
    return seen["embeds"]


def packer_outputs(model, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """F_s (k2^2 N, D), F_t (k1^2 sigma, D) of the video and the image's 729 tokens, computed step by step."""
    config = model.config
    with torch.no_grad():
        tables = model.lape()
        frames = batch["pixel_values"]
        hidden = model.vision_tower(frames, output_hidden_states=True).hidden_states[config.vision_feature_layer]
        features = model.mm_projector(hidden)
        video = LAPE.inject(features[:config.num_frames], tables, config.grid_size, True)
        image = LAPE.inject(features[config.num_frames:], tables, config.grid_size, False)
        f_s, f_t = model.stp(video)
    return f_s.flatten(0, 1), f_t.flatten(0, 1), image[0]


def test_converter_computes_the_release_rows():
    assert release_video_token_ids(151_646) == {
        "vid_start_token_id": 151_649, "vid_patch_token_id": 151_651, "vid_end_token_id": 151_650}
    fields = release_inference_fields({"model.embed_tokens.weight": torch.zeros(151_660, 2)})
    assert fields == {"video_fast_tokens": "release_text", "vid_start_token_id": 151_649,
                      "vid_patch_token_id": 151_651, "vid_end_token_id": 151_650}
    explicit = release_inference_fields({"model.embed_tokens.weight": torch.zeros(151_680, 2)}, 151_646)
    assert explicit["vid_start_token_id"] == 151_649
    with pytest.raises(ReleaseCheckpointError, match="does not fit"):
        release_inference_fields({"model.embed_tokens.weight": torch.zeros(151_650, 2)}, 151_646)
    with pytest.raises(ReleaseCheckpointError, match="embed_tokens"):
        release_inference_fields({"lm_head.weight": torch.zeros(4, 2)})


def test_loading_a_release_sets_the_mode_and_loads_every_weight(released_state_dict):
    model = from_release_state_dict(released_state_dict, tiny_config())
    c = model.config
    assert c.video_fast_tokens == "release_text"
    assert (c.vid_start_token_id, c.vid_patch_token_id, c.vid_end_token_id) == (VID_START, VID_PATCH, VID_END)
    assert not model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, released_state_dict[to_released_name(key)]), key
    with pytest.raises(ValueError, match="vocab_size"):
        from_release_state_dict(released_state_dict, tiny_config(text_config={**tiny_config().text_config.to_dict(),
                                                                               "vocab_size": 1030}))


def test_release_mode_puts_the_vid_rows_at_the_fast_positions(released_state_dict, batch):
    model = from_release_state_dict(released_state_dict, tiny_config())
    c = model.config
    n_fast, n_slow = c.k2**2 * c.num_frames, c.k1**2 * c.sigma  # 36, 162
    embeds = llm_inputs(model, batch)
    video_pos = (batch["input_ids"][0] == c.video_token_id).nonzero()[:, 0]
    assert video_pos.tolist() == list(range(1, 1 + n_fast + n_slow))
    fast, slow = embeds[0, video_pos[:n_fast]], embeds[0, video_pos[n_fast:]]

    rows = released_state_dict["model.embed_tokens.weight"]
    assert torch.equal(fast[0], rows[VID_START])
    assert torch.equal(fast[-1], rows[VID_END])
    assert torch.equal(fast[1:-1], rows[VID_PATCH].expand(n_fast - 2, -1))
    assert not torch.equal(rows[VID_START], rows[VID_PATCH]) and not torch.equal(rows[VID_END], rows[VID_PATCH])

    f_s, f_t, image = packer_outputs(model, batch)
    torch.testing.assert_close(slow, f_t, atol=1e-5, rtol=1e-5)  # F_t positions: the packer's output
    assert not torch.allclose(fast, f_s, atol=1e-3)
    image_pos = batch["input_ids"][1] == c.image_token_id
    torch.testing.assert_close(embeds[1, image_pos], image, atol=1e-5, rtol=1e-5)  # images unaffected


def test_default_mode_keeps_both_streams_and_modes_differ_only_at_the_fast_block(released_state_dict, batch):
    model = from_release_state_dict(released_state_dict, tiny_config())
    release = llm_inputs(model, batch)
    model.config.video_fast_tokens = "stp"
    default = llm_inputs(model, batch)
    c = model.config
    n_fast = c.k2**2 * c.num_frames
    video_pos = (batch["input_ids"][0] == c.video_token_id).nonzero()[:, 0]
    f_s, f_t, _ = packer_outputs(model, batch)
    torch.testing.assert_close(default[0, video_pos[:n_fast]], f_s, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(default[0, video_pos[n_fast:]], f_t, atol=1e-5, rtol=1e-5)
    differs = (default != release).any(-1)
    expected = torch.zeros_like(differs)
    expected[0, video_pos[:n_fast]] = True
    assert torch.equal(differs, expected)  # text, F_t and image positions are bit-identical across modes


def test_config_validates_the_mode_and_rows(tmp_path):
    with pytest.raises(LlavaSTConfigError, match="video_fast_tokens"):
        tiny_config(video_fast_tokens="text")
    with pytest.raises(LlavaSTConfigError, match="vid_patch_token_id"):
        tiny_config(video_fast_tokens="release_text", vid_start_token_id=1, vid_end_token_id=2)
    with pytest.raises(LlavaSTConfigError, match="vid_end_token_id"):
        tiny_config(video_fast_tokens="release_text", vid_start_token_id=1, vid_patch_token_id=2,
                    vid_end_token_id=1024)
    config = tiny_config(video_fast_tokens="release_text", vid_start_token_id=1, vid_patch_token_id=2,
                         vid_end_token_id=3)
    config.save_pretrained(tmp_path)
    back = type(config).from_pretrained(tmp_path).validate()
    assert (back.video_fast_tokens, back.release_video_text_ids) == ("release_text", (1, 2, 3))


def test_training_keeps_both_streams(tiny_checkpoint, released_state_dict):
    assert from_llava_onevision(tiny_checkpoint).config.video_fast_tokens == "stp"
    model = from_release_state_dict(released_state_dict, tiny_config())
    with pytest.raises(ValueError, match="training keeps both streams"):
        apply_stage(model, {"stp"}, lape_enabled=True)
