"""The benchmark metrics against hand-computed cases (docs/evaluation.md, "Metrics")."""

import shutil

import pytest

from llavast.evaluate.answers import parse_answer
from llavast.evaluate.metrics import (
    STScores,
    STTruth,
    box_iou,
    caption_scores,
    elc_summary,
    frame_to_time,
    pixel_box,
    rec_iou,
    rec_summary,
    rec_truth_box,
    sampled_frames,
    st_sample_scores,
    st_summary,
    temporal_iou,
    time_to_frame,
    truth_frames,
    tube_frames,
    tube_scores,
    tvg_iou,
    tvg_summary,
)

ST_KEYS = ["m_tIoU", "tIoU@0.3", "tIoU@0.5", "tIoU@0.7", "m_sIoU", "sIoU@0.3", "sIoU@0.5", "sIoU@0.7",
           "m_vIoU", "vIoU@0.3", "vIoU@0.5", "vIoU@0.7"]


# ---- box and span overlap ----

@pytest.mark.parametrize(("a", "b", "expected"), [
    ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),
    ((0, 0, 2, 2), (1, 0, 3, 2), 2 / 6),
    ((0, 0, 10, 10), (0, 0, 10, 5), 0.5),  # no +1: with it, 66/121
    ((0, 0, 1, 1), (2, 2, 3, 3), 0.0),  # disjoint
    ((0, 0, 1, 1), (1, 0, 2, 1), 0.0),  # touching edges
    ((-10, -10, 10, 10), (0, 0, 10, 10), 0.25),  # outside the image: not clipped
    ((0.1, 0.1, 0.1, 0.5), (0.1, 0.1, 0.1, 0.5), 0.0),  # zero area, zero union: 0, no ZeroDivisionError
    ((5, 5, 0, 0), (0, 0, 5, 5), 0.0),  # inverted box
])
def test_box_iou(a, b, expected):
    assert box_iou(a, b) == pytest.approx(expected)
    assert box_iou(b, a) == pytest.approx(expected)


@pytest.mark.parametrize(("a", "b", "expected"), [
    ((0.0, 1.0), (0.0, 1.0), 1.0),
    ((0.0, 0.5), (0.25, 1.0), 0.25),  # intersection 0.25 over hull 1
    ((0.0, 0.5), (0.0, 1.0), 0.5),
    ((0.0, 0.2), (0.5, 1.0), 0.0),  # disjoint
    ((0.3, 0.3), (0.3, 0.3), 0.0),  # two identical zero-length spans: hull 0, guarded
    ((0.4, 0.4), (0.0, 1.0), 0.0),  # zero-length inside a span
    ((0.6, 0.2), (0.0, 1.0), 0.0),  # reversed
])
def test_temporal_iou(a, b, expected):
    assert temporal_iou(a, b) == pytest.approx(expected)
    assert temporal_iou(b, a) == pytest.approx(expected)


# ---- REC ----

def test_rec_truth_box_is_normalised_to_3_decimals_and_clipped():
    assert rec_truth_box((10, 20, 30, 40), 200, 100) == (0.05, 0.2, 0.2, 0.6)
    assert rec_truth_box((100, 0, 100, 100), 300, 300) == (0.333, 0.0, 0.667, 0.333)
    assert rec_truth_box((-20, 90, 250, 30), 200, 100) == (0.0, 0.9, 1.0, 1.0)  # outside the image: clipped


def test_rec_unparsable_answer_is_a_miss_in_the_denominator():
    truth = rec_truth_box((0, 0, 100, 100), 100, 100)
    assert rec_iou(parse_answer("[0,0,0.5,1]").box, truth) == 0.5
    assert rec_iou(parse_answer("no box").box, truth) == 0.0
    assert rec_iou(parse_answer("[-1,0,1,1]").box, truth) == 0.5  # prediction outside the image: not clipped
    ious = [1.0, 0.5, 0.4999, rec_iou(None, truth)]
    table = rec_summary(ious, [True, True, True, False])
    assert list(table) == ["mIoU", "Acc@0.5", "parse_rate", "count"]
    assert table["mIoU"] == pytest.approx(100 * 1.9999 / 4)
    assert table["Acc@0.5"] == 50.0  # 0.5 counts (>=), 0.4999 does not; the release would say 2/3
    assert table["parse_rate"] == 75.0 and table["count"] == 4


# ---- TVG ----

def test_tvg_recall_is_strictly_greater_and_unparsed_is_a_miss():
    assert tvg_iou(None, (0.1, 0.2)) == 0.0
    assert tvg_iou(parse_answer("{0.0,0.5}").span, (0.0, 1.0)) == 0.5
    table = tvg_summary([0.5, 0.7, 0.3, 0.71, 0.0], [True, True, True, True, False])
    assert list(table) == ["mIoU", "R@0.3", "R@0.5", "R@0.7", "parse_rate", "count"]
    assert table["mIoU"] == pytest.approx(100 * 2.21 / 5)
    assert table["R@0.3"] == pytest.approx(60.0)  # 0.3 itself is not > 0.3
    assert table["R@0.5"] == pytest.approx(40.0)  # 0.5 itself is not > 0.5
    assert table["R@0.7"] == pytest.approx(20.0)
    assert table["parse_rate"] == 80.0 and table["count"] == 5


def test_empty_tables_are_zero_with_count_zero():
    assert tvg_summary([], []) == {"mIoU": 0.0, "R@0.3": 0.0, "R@0.5": 0.0, "R@0.7": 0.0, "parse_rate": 0.0,
                                   "count": 0}
    with pytest.raises(ValueError, match="differ in length"):
        rec_summary([1.0], [])


# ---- frames ----

def test_sampled_frames():
    assert sampled_frames((10, 19), 4) == [10, 13, 16, 19]
    assert sampled_frames((0, 5), 3) == [0, 2, 5]  # round(2.5) = 2, half to even as Python
    assert sampled_frames((0, 2), 5) == [0, 0, 1, 2, 2]  # shorter window than N: repeats
    assert sampled_frames((7, 7), 3) == [7, 7, 7]
    assert sampled_frames((4, 9), 1) == [6]  # the middle frame, as the data path decodes it


def test_time_frame_and_pixel_conversions():
    assert time_to_frame(50 / 99, (0, 198)) == 100  # token 50 of M_t = 100
    assert time_to_frame(5 / 10, (0, 9)) == 4  # token 5 of M_t = 11: round(4.5) = 4
    assert time_to_frame(1.0, (20, 30)) == 30
    assert frame_to_time(6, (0, 9)) == 0.667 and frame_to_time(3, (3, 3)) == 0.0
    assert pixel_box((0.104, 0.5, 0.996, 1.0), 100, 50) == (10, 25, 100, 50)


def test_several_tube_keys_on_one_frame_the_later_wins():
    # split (0, 9): keys 0.0 and 0.04 both land on frame 0 (round(0.36) = 0); 0.04 comes later in the tube.
    tube = parse_answer("0.0:[0.1,0.1,0.2,0.2], 0.04:[0.3,0.3,0.4,0.4], 1.0:[0,0,1,1]").tube
    assert tube_frames(tube, (0, 9), 100, 100) == {0: (30, 30, 40, 40), 9: (0, 0, 100, 100)}
    # a later duplicate key overwrites the box but keeps its place: key 0.0 still precedes 0.04
    tube = parse_answer("0.0:[0.1,0.1,0.2,0.2], 0.04:[0.3,0.3,0.4,0.4], 0.0:[0.5,0.5,0.6,0.6]").tube
    assert tube_frames(tube, (0, 9), 100, 100) == {0: (30, 30, 40, 40)}


def test_tube_scores_intersection_and_union():
    truth = {0: (0, 0, 10, 10), 3: (0, 0, 10, 10), 6: (0, 0, 10, 10)}
    predicted = {0: (0, 0, 10, 10), 3: (0, 0, 10, 5), 9: (0, 0, 1, 1)}
    siou, viou = tube_scores(predicted, truth)
    assert siou == pytest.approx(1.5 / 2)  # I = {0, 3}
    assert viou == pytest.approx(1.5 / 4)  # U = {0, 3, 6, 9}
    assert tube_scores({}, truth) == (0.0, 0.0)
    assert tube_scores({1: (0, 0, 1, 1)}, truth) == (0.0, 0.0)  # no common frame


# ---- STVG / SVG / ELC ----

# split (0, 9), N = 4 sampled frames -> {0, 3, 6, 9}; the ground truth has frames 0..3 and 6: frames 1 and 2
# are not sampled and do not count; frame 9 is sampled but not in the ground truth.
TRUTH = STTruth(split=(0, 9), width=100, height=100,
                boxes={0: (0, 0, 10, 10), 1: (0, 0, 10, 10), 2: (0, 0, 10, 10), 3: (0, 0, 10, 10),
                       6: (0, 0, 10, 10)},
                start=0, end=6)
# keys: 0.0 -> frame 0 (IoU 1, the box 0.104 rounds to 10 px); 1/3 -> frame 3 (IoU 0.5); 0.1 -> frame 1
# (round(0.9)): a ground-truth frame that was not sampled, so predicted only; 1.0 -> frame 9: predicted only.
TUBE = (f"0.0:[0,0,0.104,0.1], {1 / 3!r}:[0,0,0.1,0.05], 0.1:[0,0,0.1,0.1], 1.0:[0.5,0.5,0.6,0.6]")


def test_truth_frames_are_the_sampled_ones_in_xyxy_pixels():
    assert truth_frames(TRUTH, 4) == {0: (0, 0, 10, 10), 3: (0, 0, 10, 10), 6: (0, 0, 10, 10)}
    assert set(truth_frames(TRUTH, 10)) == {0, 1, 2, 3, 6}


def test_stvg_sample_hand_computed():
    scores = st_sample_scores("stvg", parse_answer("During the span of {0.0,0.5}. Object bounding box: " + TUBE),
                              TRUTH, num_frames=4)
    assert scores.tiou == pytest.approx(0.5 / 0.667)  # truth (0, round(6/9, 3) = 0.667)
    assert scores.siou == pytest.approx(1.5 / 2)  # I = {0, 3}
    assert scores.viou == pytest.approx(1.5 / 5)  # U = {0, 1, 3, 6, 9}


def test_frames_present_in_only_one_tube():
    only_truth = st_sample_scores("svg", parse_answer("0.0:[0,0,0.1,0.1]"), TRUTH, 4)  # truth also has 3, 6
    assert (only_truth.siou, only_truth.viou) == (pytest.approx(1.0), pytest.approx(1 / 3))
    only_predicted = st_sample_scores("svg", parse_answer("0.0:[0,0,0.1,0.1], 1.0:[0,0,0.1,0.1]"),
                                      STTruth((0, 9), 100, 100, {0: (0, 0, 10, 10)}), 4)
    assert (only_predicted.siou, only_predicted.viou) == (pytest.approx(1.0), pytest.approx(0.5))


def test_boxes_outside_the_image_are_scored_unclipped():
    truth = STTruth(split=(0, 9), width=100, height=100, boxes={0: (-5, 0, 10, 10)}, start=0, end=9)
    scores = st_sample_scores("svg", parse_answer("0.0:[0,0,0.05,0.1]"), truth, 4)  # (0,0,5,10) vs (-5,0,5,10)
    assert scores.siou == pytest.approx(0.5)
    scores = st_sample_scores("svg", parse_answer("0.0:[-0.05,0,0.05,0.1]"), truth, 4)
    assert scores.siou == pytest.approx(1.0)


def test_empty_and_unparsable_st_answers_score_zero():
    assert st_sample_scores("stvg", None, TRUTH, 4) == STScores(0.0, 0.0, 0.0)
    assert st_sample_scores("stvg", parse_answer("I don't know"), TRUTH, 4) == STScores(0.0, 0.0, 0.0)
    span_only = st_sample_scores("stvg", parse_answer("During the span of {0.0,0.667}."), TRUTH, 4)
    assert span_only == STScores(pytest.approx(1.0), 0.0, 0.0)


def test_elc_span_starts_at_the_given_start():
    answer = parse_answer("Ends in 0.5, the box moves. Object bounding box: " + TUBE)
    scores = st_sample_scores("elc", answer, TRUTH, 4)
    assert scores.tiou == pytest.approx(0.5 / 0.667)  # [0 (given), 0.5] vs [0, 0.667]
    assert scores.siou == pytest.approx(0.75)
    # a {a,b} in an ELC answer is not its span (the release's bug 5 read it, and got ~0 on real answers)
    with_braces = parse_answer("Ends in 0.667, {0.9,1.0}. Object bounding box: " + TUBE)
    assert st_sample_scores("elc", with_braces, TRUTH, 4).tiou == pytest.approx(1.0)
    late = STTruth(split=(0, 9), width=100, height=100, boxes=TRUTH.boxes, start=3, end=6)  # (0.333, 0.667)
    assert st_sample_scores("elc", parse_answer("Ends in 0.5, x. " + TUBE), late, 4).tiou == pytest.approx(
        (0.5 - 0.333) / (0.667 - 0.333))


def test_svg_has_no_tiou_even_with_a_span():
    scores = st_sample_scores("svg", parse_answer("{0.0,0.667} " + TUBE), TRUTH, 4)
    assert scores.tiou == 0.0 and scores.siou == pytest.approx(0.75)
    with pytest.raises(ValueError, match="stvg, svg or elc"):
        st_sample_scores("tvg", None, TRUTH, 4)


def test_m_t_other_than_100_maps_token_keys_to_frames():
    # M_t = 10: token 3 -> 3/9; split (0, 18) -> frame round(3/9 * 18) = 6; with the release's 99 it would be 1
    truth = STTruth(split=(0, 18), width=100, height=100, boxes={6: (0, 0, 50, 50)}, start=0, end=18)
    answer = parse_answer("<TEMP-003>:[<WIDTH-000><HEIGHT-000><WIDTH-005><HEIGHT-005>]",
                          {"TEMP": 10, "HEIGHT": 11, "WIDTH": 11})
    assert st_sample_scores("svg", answer, truth, num_frames=19).siou == pytest.approx(1.0)


def test_st_summary_thresholds_are_greater_or_equal_and_over_all_samples():
    scores = [STScores(0.5, 0.3, 0.29), STScores(0.7, 1.0, 0.5), STScores(0.0, 0.0, 0.0)]
    table = st_summary("stvg", scores, [True, True, False])
    assert list(table) == [*ST_KEYS, "parse_rate", "count"]
    assert table["m_tIoU"] == pytest.approx(40.0)
    assert table["tIoU@0.3"] == pytest.approx(200 / 3)
    assert table["tIoU@0.5"] == pytest.approx(200 / 3)  # 0.5 counts (>=)
    assert table["tIoU@0.7"] == pytest.approx(100 / 3)  # 0.7 counts
    assert table["m_sIoU"] == pytest.approx(130 / 3)
    assert table["sIoU@0.3"] == pytest.approx(200 / 3) and table["sIoU@0.5"] == pytest.approx(100 / 3)
    assert table["m_vIoU"] == pytest.approx(79 / 3)
    assert table["vIoU@0.3"] == pytest.approx(100 / 3) and table["vIoU@0.7"] == 0.0
    assert table["parse_rate"] == pytest.approx(200 / 3) and table["count"] == 3
    svg = st_summary("svg", scores, [True, True, True])
    assert list(svg) == [k for k in ST_KEYS if "tIoU" not in k] + ["parse_rate", "count"]
    assert "m_tIoU" not in svg and svg["parse_rate"] == 100.0


# ---- ELC captions (pycocoevalcap, real Java) ----

@pytest.fixture(scope="module")
def java() -> None:
    assert shutil.which("java"), "ELC caption metrics need Java (METEOR, PTB tokenizer): not on PATH"


def test_caption_scores_hand_checked(java):
    predictions = ["The red circle moves left.", "a blue square moves down"]
    references = ["the red circle moves left", "A blue square moves up."]
    table = caption_scores(predictions, references)
    assert list(table) == ["BLEU_4", "METEOR", "ROUGE_L", "CIDEr"]
    # corpus BLEU-4: n-gram matches 9/10, 7/8, 5/6, 3/4 (PTB: lower-cased, "." dropped); same length, no penalty
    assert table["BLEU_4"] == pytest.approx(100 * (0.9 * 0.875 * (5 / 6) * 0.75) ** 0.25, abs=1e-4)
    # ROUGE-L: LCS 5/5 and 4/5 (P = R), F = 1.0 and 0.8, mean 0.9
    assert table["ROUGE_L"] == pytest.approx(90.0, abs=1e-6)
    assert 50.0 < table["METEOR"] < 100.0
    assert 0.0 < table["CIDEr"] < 1000.0
    same = caption_scores(references, references)
    assert same["BLEU_4"] == pytest.approx(100.0, abs=1e-4) and same["METEOR"] == pytest.approx(100.0)
    assert same["ROUGE_L"] == pytest.approx(100.0) and same["CIDEr"] == pytest.approx(1000.0)  # CIDEr-D tops at 10


def test_elc_summary_adds_caption_keys_and_empty_captions_score_zero(java):
    table = elc_summary([STScores(1.0, 1.0, 1.0), STScores(0.0, 0.0, 0.0)], [True, False],
                        ["", ""], ["the red circle moves left", "a blue square moves up"])
    assert list(table) == [*ST_KEYS, "BLEU_4", "METEOR", "ROUGE_L", "CIDEr", "parse_rate", "count"]
    assert table["m_tIoU"] == 50.0 and table["parse_rate"] == 50.0 and table["count"] == 2
    assert (table["BLEU_4"], table["METEOR"], table["ROUGE_L"], table["CIDEr"]) == (0.0, 0.0, 0.0, 0.0)
    assert caption_scores([], []) == {"BLEU_4": 0.0, "METEOR": 0.0, "ROUGE_L": 0.0, "CIDEr": 0.0}
