"""synth -> index -> plan -> each of 2 Ray Train workers streams its planned rows, over s3:// (moto) and file://.

The driver plans once and hands each worker its plan through the object store; a worker reads only its
rows and builds its stream with the one builder (`data/pipeline.build_dataset`). Per epoch every planned
sample arrives exactly once across the workers, in single-media micro-batches; a corrupt mp4 arrives as a
counted stand-in; a missing file is quarantined at index time (or a counted stand-in when it disappears
after indexing); the rows the plan leaves out are counted; nothing else is lost.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray.cloudpickle
import ray.train
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from llavast import storage
from llavast.config.data import DataConfig
from llavast.data import plan
from llavast.data.collate import DataStats, iter_batches
from llavast.data.index import build_index
from llavast.data.manifest import read_layout, read_rows
from llavast.data.pipeline import build_dataset
from llavast.data.synth import SynthSpec, synthesize
from llavast.storage import StorageOptions
from model_zoo.llava_st import build_tiny_tokenizer, tiny_config
from model_zoo.llava_st.vocab import add_coordinate_tokens

pytestmark = pytest.mark.integration
EPOCHS = 2
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import a test module


def consume(loop_config: dict) -> None:
    """A Ray Train loop that only reads data: its plan's rows, epoch by epoch, through the one builder."""
    from ray.data import DataContext

    DataContext.get_current().execution_options.preserve_order = True
    rank = ray.train.get_context().get_world_rank()
    mine: plan.RankPlan = ray.get(loop_config["plans"][rank])
    cfg, config, tokenizer = loop_config["cfg"], loop_config["config"], loop_config["tokenizer"]
    s, frames = config.image_size, config.num_frames
    epochs = []
    for rows, kinds in zip(mine.rows, mine.micro_kinds, strict=True):
        stats, uids, steps = DataStats(), [], 0
        dataset = build_dataset(read_rows(loop_config["blocks"], rows, cfg.storage), cfg, cfg.storage, config,
                                tokenizer)
        for kind, batch in zip(kinds, iter_batches(dataset, 1, tokenizer.pad_token_id, s), strict=True):
            steps += 1
            stats.update(batch)
            uids += batch.uids
            x = batch.inputs
            assert batch.media_kinds == {int(kind)}, "the plan's media kind, in the plan's order"
            b, length = x["input_ids"].shape
            assert b == 1 and x["labels"].shape == x["coord_values"].shape == (b, length)
            expected = sum({0: 0, 1: 1, 2: frames}[int(k)] for k in x["media_kind"])
            assert x["pixel_values"].shape == (expected, 3, s, s)
            assert float(x["pixel_values"].min()) >= -1.0 and float(x["pixel_values"].max()) <= 1.0
        epochs.append({"uids": uids, "steps": steps, "metrics": stats.metrics()})
    Path(loop_config["out"], f"rank{rank}.json").write_text(json.dumps(epochs))


def _break_media(root: str, options: StorageOptions) -> dict[str, str]:
    """Corrupt one mp4 and delete one image before indexing; return their URIs."""
    corrupt = storage.join(root, "videos", "vid_00001.mp4")
    data = storage.read_bytes(corrupt, options)
    storage.write_bytes(corrupt, data[: len(data) // 3], options)
    missing = storage.join(root, "images", "img_00000.png")
    storage.remove(missing, options)
    return {"corrupt": corrupt, "missing": missing}


@pytest.mark.parametrize("backend", ["s3", "file"])
def test_stream_into_ray_train(backend: str, ray_local, s3_server, tmp_path: Path) -> None:
    if backend == "s3":
        options, root = s3_server.options, s3_server.create_bucket("st")
    else:
        options, root = StorageOptions(), f"file://{tmp_path}/bucket"
    synth = synthesize(storage.join(root, "st"), options, SynthSpec(videos=4, images=2, benchmark_videos=1))
    broken = _break_media(synth.root, options)
    index = storage.join(root, "index")
    summary = build_index(synth.mixtures[3], index, options)

    lines = storage.read_text(storage.join(index, "quarantine.jsonl"), options).splitlines()
    quarantine = [json.loads(x) for x in lines]
    assert quarantine and {q["reason"] for q in quarantine} == {"media_missing"}
    assert all(broken["missing"] in q["detail"] for q in quarantine)
    fs, path = storage.arrow_filesystem(storage.join(index, "manifest"), options)
    manifest = pq.read_table(path, filesystem=fs).to_pylist()
    assert len(manifest) == summary["total"]
    corrupt_uids = {r["uid"] for r in manifest if r["media_uri"] == broken["corrupt"]}
    assert corrupt_uids

    vanished = storage.join(synth.root, "videos", "vid_00002.mp4")  # disappears after indexing
    storage.remove(vanished, options)
    vanished_uids = {r["uid"] for r in manifest if r["media_uri"] == vanished}
    valid = {r["uid"] for r in manifest} - corrupt_uids - vanished_uids

    config = tiny_config()
    tokenizer = build_tiny_tokenizer()
    add_coordinate_tokens(tokenizer, config)
    cfg = DataConfig(manifest=index, storage=options, num_frames=config.num_frames, decode_concurrency=1,
                     decode_num_cpus=0.5, decode_batch_size=8, shuffle="rows", seed=1)
    blocks, layout = read_layout(index, options)
    batching = plan.Batching(world_size=2, micro_batch_size=1, grad_accum_steps=1)
    epochs = plan.plan_stage(layout, batching, cfg.shuffle, cfg.seed, EPOCHS * plan.steps_per_epoch(layout, batching))
    assert len(epochs) == EPOCHS
    by_row = read_rows(blocks, np.arange(len(layout.kinds)), options).column("uid").to_pylist()  # row number -> uid
    assert sorted(by_row) == sorted(r["uid"] for r in manifest)
    refs = [ray.put(plan.rank_plan(epochs, r, layout, batching)) for r in range(2)]
    out = tmp_path / "consumed"
    out.mkdir()
    trainer = TorchTrainer(
        consume,
        train_loop_config={"out": str(out), "plans": refs, "blocks": blocks, "cfg": cfg, "config": config,
                           "tokenizer": tokenizer},
        scaling_config=ScalingConfig(num_workers=2, use_gpu=False, resources_per_worker={"CPU": 0.25}),
        run_config=RunConfig(name=f"consume-{backend}", storage_path=str(tmp_path / "ray_results")),
    )
    trainer.fit()

    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    for epoch in range(EPOCHS):
        per_worker = [ranks[r][epoch] for r in range(2)]
        seen = Counter(uid for w in per_worker for uid in w["uids"])
        planned = {by_row[r] for r in epochs[epoch].rows.reshape(-1)}
        assert max(seen.values()) == 1, "each sample at most once per epoch"
        assert set(seen) == planned & valid, "every planned valid sample arrives"
        assert per_worker[0]["steps"] == per_worker[1]["steps"], "workers stay in step"
        dropped = Counter()
        for w in per_worker:
            dropped.update({k.removeprefix("data/dropped_"): v for k, v in w["metrics"].items()
                            if k.startswith("data/dropped_")})
        assert dropped == {"decode_error": len(corrupt_uids & planned), "fetch_error": len(vanished_uids & planned)}
        assert sum(w["metrics"]["data/samples"] for w in per_worker) == len(valid & planned)
        assert epochs[epoch].left_out == len(manifest) - len(planned) < 2 * 3  # < one micro-step per media kind
