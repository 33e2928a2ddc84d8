"""Throughput of the Ray Data pipeline vs the plain loop it replaces, on the same synthetic videos.

    .venv/bin/python -m benchmarks.data_benchmark [--frames 16 100] [--samples 160] [--out ...json]

For each N: (1) the plain loop: one process reads each manifest row's media, decodes N frames with decord,
resizes with numpy (nearest neighbour) and tokenises; (2) the pipeline: `build_dataset` + `iter_batches`
on a local Ray with 2 CPUs (the manifest rows a one-worker plan reads, through the builder training uses),
consumed as fast as possible; (3) the pipeline under a consumer that spends 200 ms per batch (a stand-in for
the training step), reporting the fraction of wall time spent waiting for data. Frames are the real model's
384 x 384; videos 320 x 240, 100-150 frames. Prints a table and writes JSON; it is not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "data_pipeline.json"
BATCH = 4
STEP_S = 0.2


def model_config(frames: int):
    from transformers import SiglipVisionConfig

    from model_zoo.llava_st import tiny_config
    from model_zoo.llava_st.tiny import TINY_VISION

    vision = SiglipVisionConfig(**{**TINY_VISION, "image_size": 384, "patch_size": 14})
    return tiny_config(vision_config=vision, num_frames=frames, sigma=frames // 4 if frames % 20 else 20)


def plain_loop(rows: list[dict], config, tokenizer) -> dict:
    """The baseline: one process, decord + numpy resize + tokenise, sample after sample."""
    import io

    import decord

    from llavast import storage
    from llavast.data.media import frame_indices
    from llavast.data.tokenize import ConversationTokenizer
    from llavast.storage import StorageOptions
    from model_zoo.contract import MediaKind

    tok = ConversationTokenizer(tokenizer, config, 32768)
    size, n = config.image_size, config.num_frames
    start, nbytes = time.perf_counter(), 0
    for row in rows:
        data = storage.read_bytes(row["media_uri"], StorageOptions())
        nbytes += len(data)
        reader = decord.VideoReader(io.BytesIO(data), num_threads=1)
        window = (row["split_start"], row["split_end"]) if row["split_start"] >= 0 else None
        frames = reader.get_batch(frame_indices(len(reader), n, window)).asnumpy()
        ys = np.arange(size) * frames.shape[1] // size
        xs = np.arange(size) * frames.shape[2] // size
        frames = np.ascontiguousarray(frames[:, ys][:, :, xs])
        tok(json.loads(row["conversations"]), row["variables"], MediaKind.VIDEO)
    elapsed = time.perf_counter() - start
    load_per_batch = BATCH * elapsed / len(rows)
    return {"samples": len(rows), "seconds": elapsed, "samples_per_s": len(rows) / elapsed,
            # the loop is serial: a consumer taking STEP_S per batch waits load / (load + step) of the time
            "data_wait_fraction_200ms_consumer": load_per_batch / (load_per_batch + STEP_S),
            "media_MB_per_s": nbytes / elapsed / 1e6,
            "frame_MB_per_s": len(rows) * n * size * size * 3 / elapsed / 1e6}


def pipeline(index: str, config, tokenizer, step_s: float) -> dict:
    """Stream the index through build_dataset + iter_batches; `step_s` of simulated work per batch."""
    from llavast.config.data import DataConfig
    from llavast.data.collate import DataStats, iter_batches
    from llavast.data.manifest import read_layout, read_rows
    from llavast.data.pipeline import build_dataset

    cfg = DataConfig(manifest=index, decode_concurrency=2, decode_num_cpus=0.85, decode_batch_size=BATCH,
                     fetch_threads=4, shuffle="none")
    blocks, layout = read_layout(index, cfg.storage)
    rows = read_rows(blocks, np.arange(len(layout.kinds)), cfg.storage)
    ds = build_dataset(rows, cfg, cfg.storage, config, tokenizer)
    stats, waited, first = DataStats(), 0.0, None
    start = time.perf_counter()
    it = iter(iter_batches(ds.iterator(), BATCH, tokenizer.pad_token_id, config.image_size, prefetch_batches=2))
    while True:
        t = time.perf_counter()
        batch = next(it, None)
        if batch is None:
            break
        if first is None:
            first = time.perf_counter() - start
        else:
            waited += time.perf_counter() - t
        stats.update(batch)
        time.sleep(step_s)
    elapsed = time.perf_counter() - start
    steady = elapsed - first
    n = config.num_frames * config.image_size**2 * 3
    return {"samples": stats.samples, "seconds": elapsed, "first_batch_s": first,
            "samples_per_s": stats.samples / elapsed, "steady_samples_per_s": (stats.samples - BATCH) / steady,
            "media_MB_per_s": stats.media_bytes / elapsed / 1e6, "frame_MB_per_s": stats.samples * n / elapsed / 1e6,
            "data_wait_fraction_after_first_batch": waited / steady if step_s else None,
            "dropped": dict(stats.dropped)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 100])
    parser.add_argument("--samples", type=int, default=160, help="video samples per measurement")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import pyarrow.parquet as pq
    import ray

    from llavast.data.index import build_index
    from llavast.data.synth import SynthSpec, synthesize
    from llavast.storage import StorageOptions
    from model_zoo.llava_st import build_tiny_tokenizer
    from model_zoo.llava_st.vocab import add_coordinate_tokens

    work = Path(tempfile.mkdtemp(prefix="data_bench_"))
    spec = SynthSpec(videos=max(8, args.samples // 6), images=0, benchmark_videos=0, width=320, height=240,
                     min_frames=100, max_frames=150, seed=0)
    t = time.perf_counter()
    synthesize(str(work / "st"), StorageOptions(), spec)
    synth_s = time.perf_counter() - t
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    # the video-only sources of stage 3, cut to --samples rows
    (work / "st" / "mixtures" / "bench.yaml").write_text("datasets:\n" + "".join(
        f"  - {{json_path: ../annotations/{s}, sampling_strategy: 'first:{args.samples // 4}', data_folder: ..}}\n"
        for s in ("tvg.jsonl", "stvg.jsonl", "dvc.json", "tr.json")))
    index = str(work / "index")
    summary = build_index(str(work / "st" / "mixtures" / "bench.yaml"), index, StorageOptions())
    rows = pq.read_table(Path(index) / "manifest").to_pylist()

    results = {"machine": {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg(),
                           "python": platform.python_version()},
               "dataset": {"videos": spec.videos, "video_px": [spec.width, spec.height],
                           "frames_per_video": [spec.min_frames, spec.max_frames], "samples": summary["total"],
                           "synth_seconds": synth_s, "batch_size": BATCH, "frame_px": 384}, "runs": {}}
    for frames in args.frames:
        config = model_config(frames)
        tokenizer = build_tiny_tokenizer()
        add_coordinate_tokens(tokenizer, config)
        run = {"plain_loop": plain_loop(rows, config, tokenizer),
               "pipeline": pipeline(index, config, tokenizer, 0.0),
               "pipeline_200ms_consumer": pipeline(index, config, tokenizer, STEP_S)}
        results["runs"][f"N={frames}"] = run
        print(f"\nN = {frames} frames of 384x384, {summary['total']} video samples, 2 CPUs")
        print(f"{'':28s}{'samples/s':>10s}{'steady/s':>10s}{'media MB/s':>12s}{'frame MB/s':>12s}{'wait':>8s}")
        for name, r in run.items():
            wait = r.get("data_wait_fraction_after_first_batch", r.get("data_wait_fraction_200ms_consumer"))
            print(f"{name:28s}{r['samples_per_s']:10.2f}{r.get('steady_samples_per_s', r['samples_per_s']):10.2f}"
                  f"{r['media_MB_per_s']:12.2f}{r['frame_MB_per_s']:12.1f}{'' if wait is None else f'{wait:8.0%}'}")
    ray.shutdown()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
