"""Reading raw answers: the release's normalisation with M - 1 in place of 99, the answer shapes, parse status,
ELC captions, and the exact text the model is trained to write."""

import pytest

from llavast.evaluate.answers import (
    OK,
    UNPARSABLE,
    CoordinateBins,
    elc_predicted_caption,
    elc_reference_caption,
    normalise_answer,
    parse_answer,
)


def test_release_shape_tokens_become_k_over_99_with_commas_stripped_before_brackets():
    assert normalise_answer("{<TEMP-012><TEMP-040>}") == f"{{{12 / 99!r},{40 / 99!r}}}"
    assert normalise_answer("[<WIDTH-000><HEIGHT-099><WIDTH-050><HEIGHT-033>]") == (
        f"[0.0,1.0,{50 / 99!r},{33 / 99!r}]")


def test_training_text_commas_and_tube_keys_do_not_double_the_comma():
    text = "{<TEMP-010>,<TEMP-020>} <TEMP-003>:[<WIDTH-001>, <HEIGHT-002>,<WIDTH-003>,<HEIGHT-004>]"
    a, b, c = 10 / 99, 20 / 99, 3 / 99
    assert normalise_answer(text) == (
        f"{{{a!r},{b!r}}} {c!r}:[{1 / 99!r}, {2 / 99!r},{3 / 99!r},{4 / 99!r}]")


def test_end_of_turn_is_removed_other_special_tokens_and_text_kept():
    assert normalise_answer("<|im_start|>Ends in <TEMP-099> the cat<|im_end|>") == "<|im_start|>Ends in 1.0, the cat"


def test_number_of_bins_other_than_100_per_axis():
    bins = CoordinateBins(temporal=11, height=5, width=3)
    assert normalise_answer("{<TEMP-005><TEMP-010>}", bins) == "{0.5,1.0}"
    parsed = parse_answer("[<WIDTH-001><HEIGHT-001><WIDTH-002><HEIGHT-004>]", bins)
    assert parsed.box == (0.5, 0.25, 1.0, 1.0)
    assert parse_answer("{<TEMP-005><TEMP-010>}", 11).span == (0.5, 1.0)
    assert parse_answer("{<TEMP-050><TEMP-099>}", {"TEMP": 100, "HEIGHT": 2, "WIDTH": 2}).span == (50 / 99, 1.0)
    with pytest.raises(ValueError, match="M >= 2"):
        CoordinateBins.of(1)


def test_a_token_beyond_the_vocabulary_is_text_and_its_shape_does_not_parse():
    parsed = parse_answer("{<TEMP-005><TEMP-011>}", 11)  # k = 11 >= M = 11
    assert "<TEMP-011>" in parsed.text and parsed.span is None and parsed.status("tvg") == UNPARSABLE
    assert parse_answer("{<TEMP-005><TEMP-0100>}", 1001).span == (5 / 1000, 100 / 1000)  # M > 1000: 4 digits


def test_first_box_and_first_span_are_taken_spaces_ignored():
    parsed = parse_answer("{ 0.2 , 0.4 } then {0.5,0.6}; [ 0.1 , 0.2,0.3 ,0.4 ] and [0.5,0.6,0.7,0.8]")
    assert parsed.span == (0.2, 0.4)
    assert parsed.box == (0.1, 0.2, 0.3, 0.4)
    assert parsed.status("tvg") == OK and parsed.status("rec") == OK


def test_plain_numbers_in_the_answer_shapes():
    parsed = parse_answer("During the span of {0.1,0.5}. Object bounding box: 0.1:[0.1,0.2,0.3,0.4], "
                          "0.3:[0.2,0.2,0.4,0.4]")
    assert parsed.span == (0.1, 0.5)
    assert parsed.tube == {0.1: (0.1, 0.2, 0.3, 0.4), 0.3: (0.2, 0.2, 0.4, 0.4)}
    assert parsed.status("stvg") == OK


def test_tube_keys_read_as_times_and_a_later_duplicate_overwrites_in_place():
    parsed = parse_answer("<TEMP-000>:[0.1,0.1,0.2,0.2], <TEMP-009>:[0.3,0.3,0.4,0.4], <TEMP-000>:[0.5,0.5,0.6,0.6]",
                          10)
    assert list(parsed.tube.items()) == [(0.0, (0.5, 0.5, 0.6, 0.6)), (1.0, (0.3, 0.3, 0.4, 0.4))]


def test_elc_end_time():
    parsed = parse_answer("Ends in <TEMP-033>, the red circle moves left. Object bounding box: "
                          "<TEMP-033>:[<WIDTH-001><HEIGHT-002><WIDTH-003><HEIGHT-004>]")
    assert parsed.end == 33 / 99 and parsed.span is None
    assert parsed.status("elc") == OK and parsed.status("stvg") == UNPARSABLE
    assert parse_answer("Ends in 0.25, a dog runs.").end == 0.25


@pytest.mark.parametrize("text", ["", "I cannot tell.", "{0.1}", "[0.1,0.2,0.3]", "Ends in soon, a dog.",
                                  "{<TEMP-010>}", "[<WIDTH-001>,<HEIGHT-002>,<WIDTH-003>]", "{<TEMP-999><TEMP-998>}",
                                  "<TEMP-0x1>", "{<TEMP-010>" * 1000, "\x00\uffff<<<>>>"])
def test_empty_and_unshaped_answers_are_unparsable_for_every_task(text):
    parsed = parse_answer(text)
    assert parsed.box is None and parsed.span is None and parsed.end is None and parsed.tube == {}
    for task in ("stvg", "svg", "elc", "tvg", "rec"):
        assert parsed.status(task) == UNPARSABLE


def test_status_needs_every_shape_the_task_scores():
    span_only = parse_answer("During the span of {0.1,0.5}.")
    assert span_only.status("tvg") == OK and span_only.status("stvg") == UNPARSABLE
    tube_only = parse_answer("0.1:[0.1,0.2,0.3,0.4]")
    assert tube_only.status("svg") == OK and tube_only.status("stvg") == UNPARSABLE
    assert tube_only.status("ELC") == UNPARSABLE  # no "Ends in"
    with pytest.raises(ValueError, match="unknown evaluation task"):
        tube_only.status("dvc")


def test_elc_captions():
    answer = ("Ends in <TEMP-050>, the red circle moves left. Object bounding box: "
              "<TEMP-010>:[<WIDTH-000>,<HEIGHT-001>,<WIDTH-002>,<HEIGHT-003>], <TEMP-020>:[...]")
    assert elc_predicted_caption(answer) == "the red circle moves left"
    assert elc_predicted_caption(normalise_answer(answer)) == "the red circle moves left"  # "0.50.." ends nothing
    assert elc_predicted_caption("Ends in 0.5, the dog, wet, shakes. Then it sleeps.") == "shakes"
    assert elc_predicted_caption("Ends in 0.5, a dog shakes Object bounding box: 0.1:[0.1,0.2,0.3,0.4]") == (
        "a dog shakes")
    assert elc_predicted_caption("") == ""
    reference = "Ends in <e>, the red circle moves left. Object bounding box: <bboxes>"
    assert elc_reference_caption(reference) == "the red circle moves left."


def test_parses_exactly_what_the_model_is_trained_to_write():
    """A benchmark record through the training renderer (`to_training_record`, then the vocabulary's nearest
    tokens at M_t = 50, M_h = 20, M_w = 30) parses back to the tokens' values."""
    from llavast.data.benchmark import parse_benchmark_record, to_training_record
    from llavast.data.records import Task
    from model_zoo.llava_st.tiny import tiny_config
    from model_zoo.llava_st.vocab import CoordinateVocab, nearest_index

    raw = {"video_path": "v.mp4", "meta": {
        "width": 200, "height": 100, "split": [10, 59],
        "spatial_token": {"<bboxes>": {"20": [20, 10, 40, 30], "35": [60, 20, 20, 50]}},
        "time_token": {"<s>": 20, "<e>": 35}},
        "conversations": [{"from": "human", "value": "<video>\nWhere is it?"},
                          {"from": "gpt", "value": "During the span of {<s>,<e>}. Object bounding box: <bboxes>"}]}
    record = to_training_record(parse_benchmark_record(raw, 0, "mem"), Task.STVG)
    vocab = CoordinateVocab(tiny_config(m_t=50, m_h=20, m_w=30))
    answer = vocab.render(record["conversations"][1]["value"], record["variables"]) + "<|im_end|>"
    assert "<TEMP-" in answer and "<WIDTH-" in answer

    parsed = parse_answer(answer, {"TEMP": 50, "HEIGHT": 20, "WIDTH": 30})

    def t(frame: int) -> float:
        return nearest_index((frame - 10) / 49, 50) / 49

    def box(x: float, y: float, w: float, h: float) -> tuple[float, ...]:
        return (nearest_index(x / 200, 30) / 29, nearest_index(y / 100, 20) / 19,
                nearest_index((x + w) / 200, 30) / 29, nearest_index((y + h) / 100, 20) / 19)

    assert parsed.status("stvg") == OK
    assert parsed.span == (t(20), t(35))
    assert parsed.tube == {t(20): box(20, 10, 40, 30), t(35): box(60, 20, 20, 50)}
