"""Tokenisation: chat layout, label mask, visual token counts, placeholders and their values, truncation."""

from __future__ import annotations

import numpy as np
import pytest

from llavast.data.tokenize import ConversationTokenizer, SampleTooLong
from model_zoo.contract import PLACEHOLDER_VARIABLES, MediaKind
from model_zoo.llava_st import build_tiny_tokenizer, tiny_config
from model_zoo.llava_st.vocab import add_coordinate_tokens

IGNORE = -100


@pytest.fixture(scope="module")
def setup():
    config = tiny_config()
    tokenizer = build_tiny_tokenizer()
    add_coordinate_tokens(tokenizer, config)
    return tokenizer, config


CONV = [
    {"from": "human", "value": "<video>\nDuring {<TEMP-INPUT>,<TEMP-INPUT>}, where is the red square?"},
    {"from": "gpt", "value": "<TEMP-OUTPUT>:[<WIDTH-OUTPUT>,<HEIGHT-OUTPUT>,<WIDTH-OUTPUT>,<HEIGHT-OUTPUT>]"},
    {"from": "human", "value": "What colour is it?"},
    {"from": "gpt", "value": "Red."},
]
VARS = {"temporal_input_locations": [0.1, 0.6], "temporal_output_locations": [0.3],
        "spatial_width_output_locations": [0.2, 0.4], "spatial_height_output_locations": [0.25, 0.75]}


def test_layout_matches_chat_template_and_labels_cover_answers(setup) -> None:
    tokenizer, config = setup
    sample = ConversationTokenizer(tokenizer, config, max_length=4096)(CONV, VARS, MediaKind.VIDEO)
    ids = sample.input_ids.tolist()
    first = ids.index(config.video_token_id)
    collapsed = ids[:first + 1] + ids[first + config.video_seq_len:]
    messages = [{"role": "user" if t["from"] == "human" else "assistant", "content": t["value"]} for t in CONV]
    assert tokenizer.decode(collapsed) == tokenizer.apply_chat_template(messages, tokenize=False)

    learned = sample.labels != IGNORE
    spans, start = [], None
    for i, flag in enumerate(learned.tolist() + [False]):
        if flag and start is None:
            start = i
        if not flag and start is not None:
            spans.append(tokenizer.decode(sample.labels[start:i].tolist()))
            start = None
    assert spans == [CONV[1]["value"] + "<|im_end|>\n", CONV[3]["value"] + "<|im_end|>\n"]
    assert np.array_equal(sample.labels[learned], sample.input_ids[learned])  # not shifted


def test_a_prompt_ends_with_the_generation_header(setup) -> None:
    """A conversation without an assistant turn (an eval prompt) is what the chat template gives with
    `add_generation_prompt`: the model's answer starts right after `<|im_start|>assistant\\n`; nothing is learned."""
    tokenizer, config = setup
    prompt = CONV[:1]
    sample = ConversationTokenizer(tokenizer, config, max_length=4096)(prompt, VARS, MediaKind.VIDEO)
    ids = sample.input_ids.tolist()
    first = ids.index(config.video_token_id)
    collapsed = ids[:first + 1] + ids[first + config.video_seq_len:]
    messages = [{"role": "user", "content": prompt[0]["value"]}]
    assert tokenizer.decode(collapsed) == tokenizer.apply_chat_template(messages, tokenize=False,
                                                                        add_generation_prompt=True)
    assert (sample.labels == IGNORE).all()
    trained = ConversationTokenizer(tokenizer, config, max_length=4096)(CONV[:2], VARS, MediaKind.VIDEO)
    assert trained.input_ids.tolist()[:len(ids)] == ids  # with an answer: the same header, then the answer


def test_release_label_mask_learns_headers_and_every_template_token(setup) -> None:
    """`label_mask: release` (LLaVA-NeXT preprocess_qwen): each assistant turn whole, header included, and
    every <|im_start|>, <|im_end|> and standalone newline of the system and user turns; never visual tokens."""
    tokenizer, config = setup
    default = ConversationTokenizer(tokenizer, config, max_length=4096)(CONV, VARS, MediaKind.VIDEO)
    sample = ConversationTokenizer(tokenizer, config, 4096, label_mask="release")(CONV, VARS, MediaKind.VIDEO)
    assert np.array_equal(sample.input_ids, default.input_ids)
    learned = sample.labels != IGNORE
    system = "<|im_start|>\n<|im_end|>\n"  # "<|im_start|>system\n...<|im_end|>\n": "system" and the prompt not
    user_with_video = "<|im_start|>\n\n<|im_end|>\n"  # the newline after <video> too
    user = "<|im_start|>\n<|im_end|>\n"
    answer = "<|im_start|>assistant\n{}<|im_end|>\n"
    expected = system + user_with_video + answer.format(CONV[1]["value"]) + user + answer.format(CONV[3]["value"])
    assert tokenizer.decode(sample.labels[learned].tolist()) == expected
    assert np.array_equal(sample.labels[learned], sample.input_ids[learned])
    assert not (learned & (sample.input_ids == config.video_token_id)).any()
    assert learned.sum() > (default.labels != IGNORE).sum()
    with pytest.raises(ValueError, match="label_mask"):
        ConversationTokenizer(tokenizer, config, 4096, label_mask="everything")


def test_placeholders_are_single_tokens_with_values_in_order(setup) -> None:
    tokenizer, config = setup
    sample = ConversationTokenizer(tokenizer, config, max_length=4096)(CONV, VARS, MediaKind.VIDEO)
    text = "".join(t["value"] for t in CONV)
    for placeholder, key in PLACEHOLDER_VARIABLES.items():
        token_id = tokenizer.convert_tokens_to_ids(placeholder)
        positions = np.flatnonzero(sample.input_ids == token_id)
        assert len(positions) == text.count(placeholder)
        assert sample.coord_values[positions].tolist() == pytest.approx(VARS.get(key, []))
        if "OUTPUT" in placeholder:
            assert (sample.labels[positions] == token_id).all()
        else:
            assert (sample.labels[positions] == IGNORE).all()
    is_placeholder = np.isin(sample.input_ids, tokenizer.convert_tokens_to_ids(list(PLACEHOLDER_VARIABLES)))
    assert (sample.coord_values[~is_placeholder] == 0).all()


@pytest.mark.parametrize("kind", [MediaKind.TEXT, MediaKind.IMAGE, MediaKind.VIDEO])
def test_visual_token_count_per_modality(setup, kind: MediaKind) -> None:
    tokenizer, config = setup
    marker = {MediaKind.TEXT: "", MediaKind.IMAGE: "<image>\n", MediaKind.VIDEO: "<video>\n"}[kind]
    conv = [{"from": "human", "value": marker + "Describe it."}, {"from": "gpt", "value": "A dog."}]
    sample = ConversationTokenizer(tokenizer, config, max_length=4096)(conv, {}, kind)
    ids = sample.input_ids
    assert (ids == config.image_token_id).sum() == (config.image_seq_len if kind == MediaKind.IMAGE else 0)
    assert (ids == config.video_token_id).sum() == (config.video_seq_len if kind == MediaKind.VIDEO else 0)
    visual = np.isin(ids, [config.image_token_id, config.video_token_id])
    assert (sample.labels[visual] == IGNORE).all()


def test_truncation_keeps_whole_exchanges_and_drops_what_cannot_fit(setup) -> None:
    tokenizer, config = setup
    full = ConversationTokenizer(tokenizer, config, max_length=4096)(CONV, VARS, MediaKind.VIDEO)
    first_pair = ConversationTokenizer(tokenizer, config, max_length=4096)(CONV[:2], VARS, MediaKind.VIDEO)
    cut = ConversationTokenizer(tokenizer, config, max_length=len(full.input_ids) - 1)(CONV, VARS, MediaKind.VIDEO)
    assert cut.truncated and not full.truncated
    assert np.array_equal(cut.input_ids, first_pair.input_ids)
    assert np.array_equal(cut.coord_values, first_pair.coord_values)
    with pytest.raises(SampleTooLong):
        ConversationTokenizer(tokenizer, config, max_length=config.video_seq_len)(CONV, VARS, MediaKind.VIDEO)
    with pytest.raises(SampleTooLong, match="needs"):  # a prompt without answer (evaluation) too long: dropped
        ConversationTokenizer(tokenizer, config, max_length=config.video_seq_len)(CONV[:1], VARS, MediaKind.VIDEO)


def test_rejects_tokenizer_without_coordinate_tokens(setup) -> None:
    _, config = setup
    with pytest.raises(ValueError, match="load_tokenizer"):
        ConversationTokenizer(build_tiny_tokenizer(), config, max_length=100)
