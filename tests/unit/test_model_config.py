"""Config validation: each constraint fails with a message that names it."""

import pytest

from model_zoo.llava_st import LlavaSTConfig, LlavaSTConfigError, SpatialTemporalPacker, tiny_config


@pytest.mark.parametrize("overrides, message", [
    ({"k1": 10}, "k1 must divide the feature grid W1"),
    ({"k2": 2}, "k2 must divide k1"),
    ({"sigma": 3}, "sigma must divide the frame count N"),
    ({"num_frames": 0}, "num_frames"),
    ({"m_t": -1}, "m_t must be a positive integer"),
    ({"m_w": 1}, "m_w must be >= 2"),
    ({"stp_heads": 5}, "stp_heads must divide stp_width"),
    ({"stp_query_pool": "max"}, "stp_query_pool"),
    ({"lora_dropout": 1.5}, "LoRA"),
])
def test_invalid_settings_name_the_constraint(overrides, message):
    with pytest.raises(LlavaSTConfigError, match=message):
        tiny_config(**overrides)


def test_packer_refuses_an_invalid_config():
    config = tiny_config()
    config.k2 = 4
    with pytest.raises(LlavaSTConfigError, match="k2 must divide k1"):
        SpatialTemporalPacker(config)


def test_defaults_are_the_papers():
    c = LlavaSTConfig().validate()
    assert (c.num_frames, c.m_t, c.m_h, c.m_w, c.k1, c.k2, c.sigma) == (100, 100, 100, 100, 9, 3, 20)
    assert (c.hidden_size, c.grid_size, c.image_size, c.stp_width, c.stp_heads) == (3584, 27, 384, 1024, 8)


def test_config_round_trips_through_json(tmp_path):
    c = tiny_config(sigma=4, m_t=50)
    c.save_pretrained(tmp_path)
    back = LlavaSTConfig.from_pretrained(tmp_path)
    assert (back.sigma, back.m_t, back.text_config.hidden_size, back.vision_config.patch_size) == (4, 50, 64, 2)
