"""Fixtures for the model's unit tests: the tiny preset, its tokenizer, and hand-built batches."""

from __future__ import annotations

import pytest
import torch

import model_zoo
from model_zoo.contract import MediaKind
from model_zoo.llava_st import LlavaSTForCausalLM, load_tokenizer, tiny_config

from .model_batches import make_batch, placeholder_id


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    return model_zoo.spec("llava_st").write_demo_checkpoint(tmp_path_factory.mktemp("tiny") / "llava-ov-tiny")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_checkpoint):
    return load_tokenizer(tiny_checkpoint, tiny_config())


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return LlavaSTForCausalLM(tiny_config())


@pytest.fixture
def video_batch():
    config = tiny_config()
    out = placeholder_id(config, "<TEMP-OUTPUT>")
    return make_batch(config, [{"kind": MediaKind.VIDEO, "prompt": [10, 11, 12], "answer": [20, out, out, 21],
                                "values": {-3: 0.25, -2: 0.735}}])


@pytest.fixture
def image_batch():
    config = tiny_config()
    w_out, h_out = placeholder_id(config, "<WIDTH-OUTPUT>"), placeholder_id(config, "<HEIGHT-OUTPUT>")
    return make_batch(config, [{"kind": MediaKind.IMAGE, "prompt": [10, 13], "answer": [22, w_out, h_out, 23],
                                "values": {-3: 0.1, -2: 0.9}}])
