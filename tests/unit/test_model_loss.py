"""The training loss: soft-label CE at OUTPUT placeholders, hard CE elsewhere, mean over target tokens."""

import torch
import torch.nn.functional as F

from model_zoo.contract import MediaKind
from model_zoo.llava_st import LlavaSTForCausalLM, tiny_config

from .model_batches import make_batch, placeholder_id


def _model(**overrides) -> LlavaSTForCausalLM:
    torch.manual_seed(0)
    return LlavaSTForCausalLM(tiny_config(**overrides)).eval()


def test_soft_loss_with_zero_ratios_equals_hard_cross_entropy():
    model = _model(m_t=11, m_h=11, m_w=11)  # values k/10 sit exactly on rows: ratio 0
    config = model.config
    v = config.text_vocab_size
    t_out, w_out = placeholder_id(config, "<TEMP-OUTPUT>"), placeholder_id(config, "<WIDTH-OUTPUT>")
    soft = make_batch(config, [{"prompt": [5, 6], "answer": [30, t_out, w_out, 31], "values": {-3: 0.3, -2: 0.7}}])
    hard = make_batch(config, [{"prompt": [5, 6], "answer": [30, v + 3, v + 11 + 11 + 7, 31]}])
    # the inputs differ (placeholder embeddings vs token embeddings are equal at ratio 0), so compare outputs
    assert torch.allclose(model.embed(soft["input_ids"], soft["coord_values"], model.lape()),
                          model.embed(hard["input_ids"], hard["coord_values"], model.lape()))
    torch.testing.assert_close(model(**soft).loss, model(**hard).loss)


def test_soft_loss_weights_floor_and_ceil_by_the_ratio():
    model = _model()
    config = model.config
    h_out = placeholder_id(config, "<HEIGHT-OUTPUT>")
    batch = make_batch(config, [{"prompt": [5, 6], "answer": [h_out], "values": {-1: 0.4242}}])
    out = model(**batch, return_logits=True)
    log_p = F.log_softmax(out.logits[0, -2].float(), -1)  # the position that predicts the placeholder
    p = round(0.4242, 3) * (config.m_h - 1)  # 41.976
    f, r = int(p), p - int(p)
    row = config.text_vocab_size + config.m_t
    expected = -((1 - r) * log_p[row + f] + r * log_p[row + f + 1])
    torch.testing.assert_close(out.loss, expected)
    assert out.num_target_tokens.item() == 1


def test_loss_is_averaged_over_the_batch_target_tokens_not_per_sample():
    model = _model()
    config = model.config
    a = {"prompt": [5, 6, 7], "answer": [40, 41, 42]}  # 3 targets
    b = {"prompt": [8], "answer": [50, 51, 52, 53, 54, 55, 56]}  # 7 targets
    la, lb = model(**make_batch(config, [a])).loss, model(**make_batch(config, [b])).loss
    both = model(**make_batch(config, [a, b]))
    assert both.num_target_tokens.item() == 10
    torch.testing.assert_close(both.loss, (3 * la + 7 * lb) / 10)
    assert not torch.allclose(both.loss, (la + lb) / 2)


def test_no_targets_gives_zero_loss_that_still_backpropagates():
    model = _model().train()
    batch = make_batch(model.config, [{"prompt": [5, 6], "answer": [], "kind": MediaKind.TEXT}])
    out = model(**batch)
    out.loss.backward()
    assert out.loss.item() == 0.0 and out.num_target_tokens.item() == 0
