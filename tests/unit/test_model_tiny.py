"""The tiny LLaVA-ST end to end: forward/backward per modality, generate, save/load, loading path (a)."""

import re

import torch

import model_zoo
from llavast.evaluate.answers import parse_answer
from model_zoo.contract import MediaKind
from model_zoo.llava_st import (
    LlavaSTForCausalLM,
    build_tiny_checkpoint,
    build_tiny_tokenizer,
    load_model,
    tiny_config,
)

from .model_batches import make_batch


def test_visual_token_counts_defaults_and_tiny():
    from model_zoo.llava_st import LlavaSTConfig

    defaults = LlavaSTConfig()
    assert defaults.video_seq_len == 2520 and defaults.image_seq_len == 729 and defaults.grid_size == 27
    tiny = tiny_config()
    assert tiny.grid_size == 27 and tiny.image_seq_len == 729
    assert tiny.video_seq_len == 3 * 3 * tiny.num_frames + 9 * 9 * tiny.sigma


def test_video_tokens_reach_the_llm_as_fs_then_ft(tiny_model, video_batch):
    model = tiny_model
    tables = model.lape()
    tokens = model.encode_media(video_batch["pixel_values"], video_batch["media_kind"], tables)[0]
    config = model.config
    assert tokens.shape == (config.video_seq_len, config.hidden_size)
    hidden = model.vision_tower(video_batch["pixel_values"], output_hidden_states=True).hidden_states
    from model_zoo.llava_st.lape import LAPE

    feats = LAPE.inject(model.mm_projector(hidden[config.vision_feature_layer]), tables, config.grid_size, True)
    f_s, f_t = model.stp(feats)
    n_s = config.k2**2 * config.num_frames
    torch.testing.assert_close(tokens[:n_s], f_s.flatten(0, 1))  # bug 1 of the release: F_s must not be dropped
    torch.testing.assert_close(tokens[n_s:], f_t.flatten(0, 1))


def test_forward_backward_video_and_image(tiny_model, video_batch, image_batch):
    model = tiny_model.train()
    for batch in (video_batch, image_batch):
        model.zero_grad()
        out = model(**batch)
        assert torch.isfinite(out.loss) and out.num_target_tokens.item() == 4
        out.loss.backward()
        for name in ("lape.temporal_input", "lape.height_output", "mm_projector.0.weight",
                     "language_model.model.layers.0.self_attn.q_proj.weight"):
            assert model.get_parameter(name).grad.abs().sum() > 0, name
        stp_grad = model.get_parameter("stp.step1.to_q.0.weight").grad
        is_video = batch["media_kind"][0].item() == MediaKind.VIDEO
        assert (stp_grad is not None and stp_grad.abs().sum() > 0) == is_video  # images skip STP


def test_mixed_batch_text_image_video(tiny_model):
    config = tiny_model.config
    batch = make_batch(config, [{"prompt": [5, 6], "answer": [7, 8]},
                                {"kind": MediaKind.VIDEO, "prompt": [5, 6], "answer": [9]},
                                {"kind": MediaKind.IMAGE, "prompt": [5, 6], "answer": [10, 11, 12]}])
    out = tiny_model(**batch)
    assert out.num_target_tokens.item() == 6 and torch.isfinite(out.loss)


def test_gradient_checkpointing_gives_the_same_gradients(video_batch):
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = LlavaSTForCausalLM(tiny_config()).train()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert all(layer.gradient_checkpointing for layer in model.language_model.model.layers)
        model(**video_batch).loss.backward()
        grads.append(model.get_parameter("lape.width_input").grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_generate_emits_tokens_that_decode(tiny_model, video_batch, tiny_tokenizer):
    model = tiny_model.eval()
    prompt_len = video_batch["input_ids"].shape[1] - 4
    new = model.generate(video_batch["input_ids"][:, :prompt_len], pixel_values=video_batch["pixel_values"],
                         media_kind=video_batch["media_kind"], max_new_tokens=6)
    assert new.shape == (1, 6) and int(new.max()) < model.placeholder_start
    text = tiny_tokenizer.decode(new[0])
    c = model.config  # every coordinate token generated is in its axis' range: all read as numbers
    read = parse_answer(text, {"TEMP": c.m_t, "HEIGHT": c.m_h, "WIDTH": c.m_w})
    assert not re.search(r"<(TEMP|HEIGHT|WIDTH)-", read.text)
    # greedy decoding is the argmax of the full forward pass, step by step (the KV cache changes nothing)
    full = torch.cat([video_batch["input_ids"][:, :prompt_len], new[:, :1]], 1)
    logits = model(full, pixel_values=video_batch["pixel_values"], media_kind=video_batch["media_kind"]).logits
    assert logits[0, -2].argmax().item() == new[0, 0].item()
    assert logits[0, -1].argmax().item() == new[0, 1].item()


def test_forward_kv_cache_continues_the_sequence_exactly(tiny_model, video_batch):
    """forward(use_cache=True) hands back a cache that, fed with the next token, gives the full pass's logits."""
    model = tiny_model.eval()
    ids = video_batch["input_ids"][:, :-4]  # the prompt: no coordinate placeholders, so no coord_values
    media = {"pixel_values": video_batch["pixel_values"], "media_kind": video_batch["media_kind"]}
    with torch.no_grad():
        full = model(ids, **media).logits
        head = model(ids[:, :-1], **media, use_cache=True)
        assert head.cache is not None and head.cache.get_seq_length() == ids.shape[1] - 1
        step = model(ids[:, -1:], position_ids=torch.tensor([[ids.shape[1] - 1]]), cache=head.cache, use_cache=True)
    assert step.cache is head.cache and head.cache.get_seq_length() == ids.shape[1]
    torch.testing.assert_close(step.logits[:, -1], full[:, -1], rtol=1e-4, atol=1e-4)
    assert model(ids, **media).cache is None  # no cache unless asked
    # a mapping of its set fields: DeepSpeed ZeRO-3 hooks the backward of the tensors it finds in a dict
    assert isinstance(head, dict) and head["logits"] is head.logits and set(head) == {"logits", "cache"}


def test_generate_can_emit_coordinate_tokens(tiny_model):
    model = tiny_model.eval()
    prompt = torch.tensor([[5, 6, 7]])
    with torch.no_grad():  # make <WIDTH-007> the only positive logit: it must come out, then feed back in via E_in
        h = model.language_model.model(inputs_embeds=model.embed(prompt, None, model.lape())).last_hidden_state
        model.language_model.lm_head.weight.zero_()
        for table in (model.lape.temporal_output, model.lape.height_output, model.lape.width_output):
            table.zero_()
        model.lape.width_output[7] = h[0, -1]
    new = model.generate(prompt, max_new_tokens=2)
    assert new[0, 0].item() == model.config.text_vocab_size + model.config.m_t + model.config.m_h + 7


def test_save_load_round_trip_gives_identical_logits(tiny_model, video_batch, tmp_path):
    model = tiny_model.eval()
    model.save_pretrained(tmp_path / "st")
    loaded = load_model(tmp_path / "st")
    assert isinstance(loaded, LlavaSTForCausalLM)
    with torch.no_grad():
        a = model(**video_batch, return_logits=True)
        b = loaded(**video_batch, return_logits=True)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.loss, b.loss)


def test_loading_path_a_llava_onevision_checkpoint(tiny_checkpoint, tiny_tokenizer, video_batch):
    from transformers import LlavaOnevisionForConditionalGeneration

    st = model_zoo.build("llava_st", tiny_checkpoint)  # the checkpoint's llava_st_defaults.json: the tiny shape
    tiny = tiny_config()
    assert (st.config.num_frames, st.config.sigma, st.config.stp_width) == (tiny.num_frames, tiny.sigma, tiny.stp_width)
    assert model_zoo.build("llava_st", tiny_checkpoint, sigma=4).config.sigma == 4  # explicit overrides win
    ov = LlavaOnevisionForConditionalGeneration.from_pretrained(tiny_checkpoint)
    assert torch.equal(st.language_model.model.layers[1].mlp.up_proj.weight,
                       ov.model.language_model.layers[1].mlp.up_proj.weight)
    assert torch.equal(st.mm_projector[2].weight, ov.model.multi_modal_projector.linear_2.weight)
    assert torch.equal(st.language_model.lm_head.weight, ov.lm_head.weight)
    # the projected patch features are the OneVision model's own image features (same tower, layer, projector)
    pixels = video_batch["pixel_values"][:1]
    hidden = st.vision_tower(pixels, output_hidden_states=True).hidden_states[st.config.vision_feature_layer]
    ov_hidden = ov.model.vision_tower(pixels, output_hidden_states=True).hidden_states[ov.config.vision_feature_layer]
    torch.testing.assert_close(st.mm_projector(hidden), ov.model.multi_modal_projector(ov_hidden))
    assert len(tiny_tokenizer) == st.config.text_vocab_size + st.config.coord_vocab_size + 6
    assert torch.isfinite(st(**video_batch).loss)


def test_tiny_preset_is_deterministic(tmp_path):
    a, b = build_tiny_tokenizer(), build_tiny_tokenizer()
    assert a.get_vocab() == b.get_vocab()
    pa, pb = build_tiny_checkpoint(tmp_path / "a"), build_tiny_checkpoint(tmp_path / "b")
    assert (pa / "model.safetensors").read_bytes() == (pb / "model.safetensors").read_bytes()


def test_every_placeholder_embeds_as_the_interpolated_input_row(tiny_model):
    """Bug 3 of the release left <WIDTH-INPUT> unfilled: here all six placeholders embed the same way."""
    model = tiny_model
    config, tables = model.config, model.lape()
    start = config.text_vocab_size + config.coord_vocab_size
    axes = ["temporal", "temporal", "height", "height", "width", "width"]
    ids = torch.tensor([[start + i for i in range(6)]])
    values = torch.tensor([[0.25, 0.5, 0.1234, 0.0, 1.0, 0.333]])
    embeds = model.embed(ids, values, tables)
    for i, (axis, v) in enumerate(zip(axes, values[0].tolist())):
        table = tables.inputs[axis]
        p = round(v, 3) * (table.shape[0] - 1)
        f, c = int(p // 1), min(int(-(-p // 1)), table.shape[0] - 1)
        torch.testing.assert_close(embeds[0, i], (1 - (p - f)) * table[f] + (p - f) * table[c])


def test_every_trainable_stp_and_lape_parameter_gets_a_gradient_whatever_the_batch(tiny_model):
    """DeepSpeed reduces gradients across ranks in buckets: each rank must produce the same set of them.

    A stage-2 rank whose batch is images only (REC) or text only must still give STP and LAPE a gradient
    (zero where unused), or the collectives of the ranks mismatch.
    """
    from model_zoo.llava_st import policy

    model = tiny_model.train()
    policy.apply_stage(model, {"stp", "lape"}, lape_enabled=True)
    config = model.config
    batches = [make_batch(config, [{"prompt": [5, 6], "answer": [7, 8]}]),
               make_batch(config, [{"kind": MediaKind.IMAGE, "prompt": [5, 6], "answer": [7]}])]
    for batch in batches:
        model.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert missing == []
