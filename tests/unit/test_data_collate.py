"""PrepareSamples + LlavaSTCollate without Ray: the batch contract, normalisation, and the stand-ins of
dropped samples (same media kind, zero frames, no target)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
import torch

import model_zoo
from llavast import storage
from llavast.data import manifest
from llavast.data.annotations import MixtureEntry
from llavast.data.collate import DataStats, LlavaSTCollate
from llavast.data.media import decode_video
from llavast.data.pipeline import SAMPLE_SCHEMA, PrepareSamples
from llavast.data.records import Task
from llavast.data.synth import SynthSpec, synthesize
from llavast.storage import StorageOptions
from model_zoo.llava_st import build_tiny_tokenizer, tiny_config
from model_zoo.llava_st.vocab import add_coordinate_tokens

OPTS = StorageOptions()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    root = synthesize(str(tmp_path_factory.mktemp("st")), OPTS, SynthSpec(videos=2, images=1, benchmark_videos=0)).root
    config = tiny_config()
    tokenizer = build_tiny_tokenizer()
    add_coordinate_tokens(tokenizer, config)
    return root, config, tokenizer


def _row(root: str, source: str, index: int, task: Task, **edit) -> dict:
    ext = "jsonl" if source in ("stvg", "rec", "qa") else "json"
    text = Path(storage.parse(storage.join(root, "annotations", f"{source}.{ext}")).path).read_text()
    records = [json.loads(x) for x in text.splitlines()] if ext == "jsonl" else json.loads(text)
    record = {**records[index], **edit}
    entry = MixtureEntry(json_path=f"{root}/annotations/{source}.{ext}", source=source, data_folder=root)
    return manifest.manifest_row(record, entry, index, task)


def test_prepare_and_collate(setup) -> None:
    root, config, tokenizer = setup
    storage.write_bytes(storage.join(root, "videos", "corrupt.mp4"), b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200, OPTS)
    rows = [
        _row(root, "stvg", 0, Task.STVG), _row(root, "rec", 0, Task.REC),
        _row(root, "stvg", 1, Task.STVG, video="videos/corrupt.mp4"),
        _row(root, "qa", 1, Task.QA, video="videos/missing.mp4"),
    ]
    no_values = {k: [] for k in manifest.VARIABLES_TYPE.names}
    chat = json.dumps([{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}])
    text = dict(rows[0], uid="text:0", media_kind=0, media_uri="", variables=no_values, conversations=chat)
    table = manifest.rows_to_table(rows + [text]).select(list(manifest.STREAM_COLUMNS))
    prepared = PrepareSamples(tokenizer, config, max_length=4096, options=OPTS, fetch_threads=2)(table)
    assert prepared.schema.equals(SAMPLE_SCHEMA)
    assert prepared.column("status").to_pylist() == ["ok", "ok", "decode_error", "fetch_error", "ok"]

    batch = LlavaSTCollate(tokenizer.pad_token_id, config.image_size)(prepared)
    assert batch.uids == [rows[0]["uid"], rows[1]["uid"], "text:0"]
    assert batch.dropped == {"decode_error": 1, "fetch_error": 1}
    x = batch.inputs
    s, n = config.image_size, config.num_frames
    assert x["media_kind"].tolist() == [2, 1, 2, 2, 0]  # dropped rows keep their place and media kind
    assert x["pixel_values"].shape == (3 * n + 1, 3, s, s) and x["pixel_values"].dtype == torch.float32
    stand_ins = x["labels"][2:4]
    assert (stand_ins == -100).all() and (x["pixel_values"][n + 1:3 * n + 1] == -1.0).all()  # zero frames
    assert ((x["input_ids"][2:4] == config.video_token_id).sum(1) == config.video_seq_len).all()
    data = storage.read_bytes(rows[0]["media_uri"], OPTS)
    window = (rows[0]["split_start"], rows[0]["split_end"]) if rows[0]["split_start"] >= 0 else None
    frames = decode_video(data, config.num_frames, s, window)
    expected = (torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    assert torch.allclose(x["pixel_values"][: config.num_frames], expected)
    lengths = x["attention_mask"].sum(1)
    for i, n in enumerate(lengths.tolist()):
        assert (x["input_ids"][i, n:] == tokenizer.pad_token_id).all() and (x["labels"][i, n:] == -100).all()
        assert (x["coord_values"][i, n:] == 0).all()
    values = x["coord_values"][0]  # float64: the manifest's values reach the quantiser unrounded
    assert values.dtype == torch.float64
    assert sorted(values[values != 0].tolist()) == sorted(v for vs in rows[0]["variables"].values() for v in vs if v)

    # for generation the same rows pad on the left: every prompt ends in the last column
    left = LlavaSTCollate(tokenizer.pad_token_id, config.image_size, padding_side="left")(prepared).inputs
    width = x["input_ids"].shape[1]
    for i, n in enumerate(lengths.tolist()):
        assert (left["attention_mask"][i, width - n:] == 1).all() and (left["attention_mask"][i, :width - n] == 0).all()
        for key in ("input_ids", "labels", "coord_values"):
            assert torch.equal(left[key][i, width - n:], x[key][i, :n])
    assert torch.equal(left["pixel_values"], x["pixel_values"])

    # Ray hands the collate multi-chunk, sliced tables: same result
    chunked = pa.concat_tables([prepared.slice(0, 1), prepared.slice(1, 3), prepared.slice(4)])
    again = LlavaSTCollate(tokenizer.pad_token_id, config.image_size)(chunked)
    assert again.uids == batch.uids and all(torch.equal(again.inputs[k], x[k]) for k in x)

    stats = DataStats()
    stats.update(batch)
    assert stats.metrics()["data/dropped_decode_error"] == 1.0 and stats.metrics()["data/samples"] == 3.0

    model = model_zoo.build("llava_st", config)
    with torch.no_grad():
        out = model(**x)
    assert torch.isfinite(out.loss) and int(out.num_target_tokens) == int((x["labels"][:, 1:] != -100).sum())


def test_a_batch_of_stand_ins_has_no_target_and_a_zero_loss(setup) -> None:
    root, config, tokenizer = setup
    rows = [_row(root, "stvg", i, Task.STVG, video="videos/missing.mp4") for i in range(2)]
    prepared = PrepareSamples(tokenizer, config, max_length=4096, options=OPTS, fetch_threads=2)(
        manifest.rows_to_table(rows).select(list(manifest.STREAM_COLUMNS)))
    batch = LlavaSTCollate(tokenizer.pad_token_id, config.image_size)(prepared)
    assert batch.size == 0 and batch.num_dropped == 2 and batch.media_kinds == {2}
    model = model_zoo.build("llava_st", config)
    out = model(**batch.inputs)
    assert int(out.num_target_tokens) == 0 and out.loss.item() == 0.0
    out.loss.backward()  # the heads, coordinate tables and packer stay in the graph, with zero gradients
    for name in ("lape.temporal_input", "lape.temporal_output", "language_model.lm_head.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and not grad.any(), name
    assert all(p.grad is not None and not p.grad.any() for p in model.stp.parameters())
