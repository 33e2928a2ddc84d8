"""synth -> index -> stream into a 2-worker Ray Train run, over s3:// (moto server) and file://.

Every valid sample arrives exactly once per epoch across the workers; a corrupt mp4 is dropped and
counted at the consumer; a missing file is quarantined at index time (or dropped and counted when it
disappears after indexing); nothing else is lost.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray.cloudpickle
import ray.train
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from llavast import storage
from llavast.config.data import DataConfig
from llavast.data.collate import DataStats, iter_batches
from llavast.data.index import build_index
from llavast.data.pipeline import build_dataset
from llavast.data.synth import SynthSpec, synthesize
from llavast.storage import StorageOptions
from model_zoo.llava_st import build_tiny_tokenizer, tiny_config
from model_zoo.llava_st.vocab import add_coordinate_tokens

pytestmark = pytest.mark.integration
EPOCHS = 2
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import a test module


def consume(loop_config: dict) -> None:
    """A Ray Train loop that only reads data: check the batch contract, record uids and drop counts."""
    shard = ray.train.get_dataset_shard("train")
    rank = ray.train.get_context().get_world_rank()
    s, frames = loop_config["image_size"], loop_config["num_frames"]
    epochs = []
    for _ in range(EPOCHS):
        stats, uids, steps = DataStats(), [], 0
        for batch in iter_batches(shard, batch_size=4, pad_token_id=loop_config["pad"], image_size=s):
            steps += 1
            stats.update(batch)
            uids += batch.uids
            if batch.inputs is None:
                continue
            x = batch.inputs
            b, length = x["input_ids"].shape
            assert b == batch.size and x["labels"].shape == x["coord_values"].shape == (b, length)
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
    dataset = build_dataset(cfg, config, tokenizer, world_size=2)
    out = tmp_path / "consumed"
    out.mkdir()
    trainer = TorchTrainer(
        consume,
        train_loop_config={"out": str(out), "pad": tokenizer.pad_token_id, "image_size": config.image_size,
                           "num_frames": config.num_frames},
        scaling_config=ScalingConfig(num_workers=2, use_gpu=False, resources_per_worker={"CPU": 0.25}),
        run_config=RunConfig(name=f"consume-{backend}", storage_path=str(tmp_path / "ray_results")),
        datasets={"train": dataset},
    )
    trainer.fit()

    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    for epoch in range(EPOCHS):
        per_worker = [ranks[r][epoch] for r in range(2)]
        seen = Counter(uid for w in per_worker for uid in w["uids"])
        assert set(seen) == valid and max(seen.values()) == 1, "each valid sample exactly once per epoch"
        assert per_worker[0]["steps"] == per_worker[1]["steps"], "workers stay in step"
        dropped = Counter()
        for w in per_worker:
            dropped.update({k.removeprefix("data/dropped_"): v for k, v in w["metrics"].items()
                            if k.startswith("data/dropped_")})
        assert dropped == {"decode_error": len(corrupt_uids), "fetch_error": len(vanished_uids)}
        assert sum(w["metrics"]["data/samples"] for w in per_worker) == len(valid)
