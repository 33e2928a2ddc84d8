"""The coordinate vocabulary: ids, quantisation, soft labels, rendering and answer decoding."""

import math

import pytest
import torch

from model_zoo.llava_st.tiny import tiny_config
from model_zoo.llava_st.vocab import (
    PLACEHOLDERS,
    CoordinateVocab,
    coordinate_tokens,
    nearest_index,
    normalise,
    quantize,
    soft_label,
)


@pytest.fixture(scope="module")
def vocab() -> CoordinateVocab:
    return CoordinateVocab(tiny_config())


def test_token_strings_and_order_follow_the_release():
    tokens = coordinate_tokens(tiny_config())
    assert tokens[:2] == ["<TEMP-000>", "<TEMP-001>"] and tokens[99] == "<TEMP-099>"
    assert tokens[100] == "<HEIGHT-000>" and tokens[200] == "<WIDTH-000>" and len(tokens) == 300
    assert PLACEHOLDERS == ("<TEMP-INPUT>", "<TEMP-OUTPUT>", "<HEIGHT-INPUT>", "<HEIGHT-OUTPUT>",
                            "<WIDTH-INPUT>", "<WIDTH-OUTPUT>")


def test_tokenizer_ids_start_at_the_embedding_size(tiny_tokenizer):
    config = tiny_config()
    v = config.text_vocab_size
    ids = tiny_tokenizer.convert_tokens_to_ids(["<TEMP-000>", "<HEIGHT-000>", "<WIDTH-099>", "<TEMP-INPUT>",
                                                "<WIDTH-OUTPUT>"])
    assert ids == [v, v + 100, v + 299, v + 300, v + 305]
    assert tiny_tokenizer.convert_tokens_to_ids(["<image>", "<video>"]) == [config.image_token_id,
                                                                           config.video_token_id]


@pytest.mark.parametrize("value, m, expected", [
    (0.0, 100, (0, 0, 0.0)), (1.0, 100, (99, 99, 0.0)), (0.5, 100, (49, 50, 0.5)),
    (0.25, 5, (1, 1, 0.0)), (1.7, 100, (99, 99, 0.0)), (-0.2, 100, (0, 0, 0.0)),
    (0.12345, 11, (1, 2, 0.23)),  # rounded to 0.123 first
])
def test_quantize_floor_ceil_ratio(value, m, expected):
    f, c, r = quantize(value, m)
    assert (f, c) == expected[:2] and math.isclose(r, expected[2], abs_tol=1e-9)


@pytest.mark.parametrize("value, rounded", [
    (0.0125, 0.013), (0.0135, 0.014), (0.0145, 0.015), (0.0005, 0.001), (0.9995, 1.0), (0.1234999, 0.123),
    (-0.0004, 0.0), (1.0004, 1.0),
])
def test_the_quantiser_rounds_to_3_decimals_with_ties_up(value, rounded):
    assert normalise(value) == rounded
    assert quantize(value, 1001)[:2] == (round(rounded * 1000),) * 2  # on a 1001-row table v' is a row


TIES_AND_OTHERS = [0.0125, 0.0135, 0.0145, 0.0005, 0.9995, 0.5, 0.777, 0.12345, 0.0, 1.0]


def test_the_model_and_the_vocabulary_quantise_alike(tiny_model):
    """One quantiser: the model's (on float64 coord_values, as the data path delivers them) and the
    vocabulary's give the same floor, ceil and ratio on every axis, ties included (they once disagreed on 0.0125)."""
    c = tiny_model.config
    sizes, offsets = (c.m_t, c.m_h, c.m_w), (0, c.m_t, c.m_t + c.m_h)
    values = torch.tensor(TIES_AND_OTHERS * 3, dtype=torch.float64)
    axis = torch.arange(3).repeat_interleave(len(TIES_AND_OTHERS))
    floor, ceil, ratio = tiny_model._quantize(values, axis)
    for v, a, f, c_, r in zip(values.tolist(), axis.tolist(), floor.tolist(), ceil.tolist(), ratio.tolist(),
                              strict=True):
        expected = quantize(v, sizes[a])
        assert (f - offsets[a], c_ - offsets[a]) == expected[:2] and math.isclose(r, expected[2], abs_tol=1e-6)


def test_the_nearest_token_is_the_quantisers_floor_or_ceil():
    assert nearest_index(0.0125, 100) == 1  # 0.013 * 99 = 1.287
    assert nearest_index(0.505, 100) == 50  # 49.995
    assert nearest_index(0.5, 2) == 1  # p = 0.5 exactly: half goes up
    assert nearest_index(0.25, 3) == 1


@pytest.mark.parametrize("value", [0.0, 0.013, 0.5, 0.777, 1.0])
def test_soft_labels_sum_to_one(value):
    label = soft_label(value, 100)
    assert math.isclose(sum(label.values()), 1.0) and all(w >= 0 for w in label.values())


def test_text_values_tokens_text_round_trip(vocab):
    text = "The dog runs during {<TEMP-OUTPUT>,<TEMP-OUTPUT>} at [<WIDTH-OUTPUT>,<HEIGHT-OUTPUT>,<WIDTH-OUTPUT>," \
           "<HEIGHT-OUTPUT>]."
    variables = {"temporal_output_locations": [0.1, 0.85], "spatial_width_output_locations": [0.2, 0.9],
                 "spatial_height_output_locations": [0.0, 0.4]}
    rendered = vocab.render(text, variables)
    assert "<TEMP-010>" in rendered and "<WIDTH-089>" in rendered and "OUTPUT" not in rendered
    template, values = vocab.templatize(rendered)
    assert template == text
    for key, expected in variables.items():
        assert all(abs(a - b) <= 0.5 / 99 for a, b in zip(values[key], expected, strict=True))
    assert vocab.render(template, values) == rendered


def test_render_refuses_a_placeholder_without_value(vocab):
    with pytest.raises(ValueError, match="TEMP-OUTPUT"):
        vocab.render("<TEMP-OUTPUT> and <TEMP-OUTPUT>", {"temporal_output_locations": [0.3]})
