"""Video probe: does the tiny LLaVA-ST learn to box a shape on each frame of a video? (the video warm-up)

Like `benchmarks.spatial_probe` for images: the project's model, tokenizer, data path (`PrepareSamples` and
`LlavaSTCollate` in-process) and synthetic generator (`synth_video.Video` tubes on the sampled frames, H.264 clips)
in a plain torch loop, one thread. It trains on the video warm-up's data (one moving shape of half-size
`synth_video.SINGLE_VIDEO_RADIUS`, asked as SVG and, for half of the clips, as STVG) starting from a given checkpoint
(`--init`: a stage artifact folder, e.g. the learning run's stage-2 version; without it, the untrained base;
`--steps 0` scores the artifact as it is) and scores, teacher-forced, each tube box's IoU on held-out clips of:
- one moving shape, as trained (SVG form: the span given);
- two moving shapes of the benchmark's size (5-8 px), the one named asked (SVG form): what stage 3's STVG needs.
The constant baseline is the training tubes' mean box. Results: benchmarks/results/video_probes.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from safetensors.torch import load_file

import model_zoo
from benchmarks.spatial_probe import ProbeSet, batches, build_model, predict, tiny_base, train_steps
from llavast.data.collate import LlavaSTCollate
from llavast.data.manifest import SCHEMA, VARIABLE_KEYS
from llavast.data.pipeline import PrepareSamples
from llavast.data.synth_media import encode_mp4, render_frame
from llavast.data.synth_records import Coords
from llavast.data.synth_video import SINGLE_VIDEO_RADIUS, SynthSpec, Video, moving_single, shape_pair
from llavast.evaluate.metrics import box_iou
from llavast.storage import StorageOptions
from model_zoo.contract import MediaKind

SPEC = SynthSpec()  # 96 x 64 frames, N = 4 (the tiny model's)
DECAY_RATIO = 0.25  # jobs/learn: constant lr, then a cosine over the last quarter


def make_set(kind: str, n: int, seed: int, folder: Path, tokenizer: Any, config: Any,
             stvg_share: float = 0.0) -> ProbeSet:
    """n clips of 12-24 frames: `single` (one shape, the warm-up's) or `pair` (two shapes, one named); truth =
    the asked shape's boxes on the sampled frames where it is visible."""
    rng = np.random.default_rng(seed)
    rows, truth = [], []
    while len(rows) < n:
        frames = int(rng.integers(12, 25))
        objects = moving_single(rng, frames, SPEC) if kind == "single" else shape_pair(rng, frames, SPEC)
        video = Video("", frames, SPEC.width, SPEC.height, objects, (0, frames - 1), SPEC.num_frames)
        if not all(video.tube_frames(o) for o in objects):
            continue
        target = objects[int(rng.integers(0, len(objects)))]
        path = folder / f"{kind}_{seed}_{len(rows):05d}.mp4"
        path.write_bytes(encode_mp4(np.stack([render_frame(objects, f, SPEC.width, SPEC.height)
                                              for f in range(frames)])))
        c = Coords()
        span = (video.time(target.first), video.time(target.last))
        if rng.random() < stvg_share:
            question = f"Find the {target.name} that moves {target.direction}: when is it visible and where?"
            answer = f"During the span of {c.span(*span, 'OUTPUT')}. Object bounding box: "
        else:
            question, answer = f"During {c.span(*span, 'INPUT')}, where is the {target.name}?", ""
        answer += ", ".join(f"{c.t(video.time(f), 'OUTPUT')}:{c.box(video.norm_box(target, f), 'OUTPUT')}"
                            for f in video.tube_frames(target))
        conversations = [{"from": "human", "value": f"<video>\n{question}"}, {"from": "gpt", "value": answer}]
        rows.append({"uid": f"{kind}:{seed}:{len(rows)}", "id": "", "source": "svg", "task": "svg",
                     "source_file": "", "record_index": len(rows), "media_kind": int(MediaKind.VIDEO),
                     "media_uri": str(path), "split_start": -1, "split_end": -1,
                     "conversations": json.dumps(conversations),
                     "variables": {k: c.variables.get(k, []) for k in VARIABLE_KEYS}})
        truth.append(tuple(video.norm_box(target, f) for f in video.tube_frames(target)))
    prepare = PrepareSamples(tokenizer, config, max_length=1024, options=StorageOptions(), fetch_threads=1)
    table = prepare(pa.Table.from_pylist(rows, schema=SCHEMA))
    if set(table.column("status").to_pylist()) != {"ok"}:
        raise RuntimeError(f"probe samples dropped: {table.column('detail').to_pylist()[:3]}")
    return ProbeSet(table, truth)


def tube_miou(model: torch.nn.Module, samples: ProbeSet, collate: LlavaSTCollate) -> float:
    """Mean over clips of the mean IoU of the tube's boxes (teacher-forced argmax per coordinate), %. The
    answer's coordinates come in fives, time then x1 y1 x2 y2; the last len(truth) fives are the tube."""
    config = model.config
    first_h, first_w = config.m_t, config.m_t + config.m_h
    scores = []
    model.eval()
    for inputs, index in batches(samples, 16, collate, np.random.default_rng(0), shuffle=False):
        for pairs, i in zip(predict(model, inputs), index, strict=True):
            coords = [p for p, y in pairs if y >= model.placeholder_start]
            boxes = samples.truth[i]
            tube = coords[len(coords) - 5 * len(boxes):]
            ious = []
            for k, box in enumerate(boxes):
                g = tube[5 * k + 1:5 * k + 5]
                x1, x2 = ((g[j] - first_w) / (config.m_w - 1) for j in (0, 2))
                y1, y2 = ((g[j] - first_h) / (config.m_h - 1) for j in (1, 3))
                ious.append(box_iou([x1, y1, x2, y2], list(box)))
            scores.append(float(np.mean(ious)))
    model.train()
    return round(100.0 * float(np.mean(scores)), 2)


def constant_miou(train: ProbeSet, held_out: ProbeSet) -> float:
    mean = np.mean([b for boxes in train.truth for b in boxes], axis=0).tolist()
    return round(100.0 * float(np.mean([np.mean([box_iou(mean, list(b)) for b in boxes])
                                        for boxes in held_out.truth])), 2)


def run(init: Path | None, base: Path, work: Path, steps: int, clips: int, lr: float, stvg_share: float,
        eval_every: int) -> dict[str, Any]:
    torch.manual_seed(0)
    model, tokenizer = build_model(base, "sincos")
    if init is not None:
        model_zoo.spec("llava_st").import_weights(model, load_file(str(init / "weights.safetensors")))
    collate = LlavaSTCollate(tokenizer.pad_token_id, model.config.image_size)
    train = make_set("single", clips, 0, work, tokenizer, model.config, stvg_share)
    single, pair = (make_set(kind, 100, seed, work, tokenizer, model.config) for kind, seed in
                    (("single", 1000), ("pair", 2000)))
    curve = [{"step": 0, "single": tube_miou(model, single, collate), "pair": tube_miou(model, pair, collate)}]
    started = time.perf_counter()
    for step, loss in train_steps(model, train, collate, steps, lr, DECAY_RATIO, 20, 8, 0):
        if step % eval_every == 0 or step == steps:
            curve.append({"step": step, "loss": round(loss, 4),
                          "single": tube_miou(model, single, collate), "pair": tube_miou(model, pair, collate)})
            print(curve[-1], flush=True)
    return {"init": str(init) if init else "untrained", "steps": steps, "clips": clips, "lr": lr,
            "stvg_share": stvg_share, "radius": list(SINGLE_VIDEO_RADIUS), "curve": curve,
            "constant": {"single": constant_miou(train, single), "pair": constant_miou(train, pair)},
            "step_seconds": round((time.perf_counter() - started) / steps, 3) if steps else None}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init", type=Path, default=None, help="a stage artifact folder (weights.safetensors)")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--clips", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--stvg-share", type=float, default=0.5, help="training clips asked in the STVG form")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--append", type=Path, default=Path("benchmarks/results/video_probes.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("PROBE_THREADS", "1")))
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.init, tiny_base(Path(tmp)), Path(tmp), args.steps, args.clips, args.lr, args.stvg_share,
                     args.eval_every)
    result.update(date=time.strftime("%Y-%m-%dT%H:%M:%S%z"), threads=torch.get_num_threads(),
                  load_avg_at_start=load_start, load_avg_at_end=os.getloadavg())
    rows = (json.loads(args.append.read_text()) if args.append.exists() else []) + [result]
    args.append.write_text(json.dumps(rows, indent=1))
    print("init | steps | one shape: mIoU before -> after (constant) | two shapes, named: before -> after (constant)")
    for r in rows:
        first, last = r["curve"][0], r["curve"][-1]
        print(f"{Path(r['init']).name} | {r['steps']} | {first['single']} -> {last['single']} "
              f"({r['constant']['single']}) | {first['pair']} -> {last['pair']} ({r['constant']['pair']})")


if __name__ == "__main__":
    main()
