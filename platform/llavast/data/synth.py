"""Synthetic ST-Align: real mp4 videos and images with known trajectories, annotated in the released formats.

Layout written under `out` (any storage URI):
    videos/vid_00000.mp4 ...         H.264, `width` x `height`, 16-48 frames
    images/img_00000.png|jpg ...     two shapes each
    images/single_00000.png ...      one shape each (`single_images`: the spatial warm-up's REC and DGC)
    videos/single_00000.mp4 ...      one larger moving shape each (`single_videos`: the video warm-up's SVG, STVG)
    annotations/<source>.json|jsonl  training format (REFERENCE.md 3.1), one file per source (task)
    mixtures/stage{1,2,3}.yaml       stage mixtures (3.2) with paths relative to themselves
    mixtures/warmup.yaml             the spatial warm-up's mixture, one-shape REC (only with `single_images`)
    mixtures/warmup_video.yaml       the video warm-up's mixture, one-shape SVG and STVG (only with `single_videos`)
    benchmark/videos/bench_00000.mp4 ...       held-out videos
    benchmark/{stvg,elc,svg}.json    benchmark format (3.3) on the held-out videos
    benchmark/tvg.json               Charades-STA format (TVG) on the same held-out videos: one object's caption
                                     and its visible span over the whole video, normalised to [0, 1]
    benchmark/images/bench_img_00000.png ...   held-out images (`benchmark_images`; 0 writes no rec.json)
    benchmark/rec.json               RefCOCO format (REC) on them: one object's expression and pixel box each
    benchmark/rec_others.json        the OTHER object's pixel box [x, y, w, h] per rec.json image id: whether a
                                     model picks the named shape or just a shape (benchmarks/learning.py)
Media paths in the files are relative to `out`. Every time span, box and tube is computed from the drawn
trajectories. The training questions of the benchmark's tasks are asked in the benchmark's prompt forms
(`data/prompts.py`): TVG in the Charades-STA template with an object's motion as the caption, REC in one of
the RefCOCO templates, STVG with the release's instruction appended, so a small model learns the questions it is
evaluated with (it cannot carry an answer over to an unseen phrasing). Same seed, same bytes. The TVG and REC
benchmark choices come from their own generators (seeded `[seed, 1]` and `[seed, 2]`), the training questions'
forms from a third (`[seed, 3]`): the other files' bytes do not depend on them, nor tvg.json on
`benchmark_images`.

Tubes on the model's frames: the data is made for a model that samples N frames per video (`SynthSpec.num_frames`,
4 by default: the tiny model's). An STVG/ELC/SVG training tube has a box on exactly the frames the data path
samples (`media.frame_indices(frames, N, window)`, over the record's split window when it has one) on which the
object is visible, each at that frame's time in the window (`Video.time`, as every other time in the files).
Those are the frames the benchmark scores a tube on (`evaluate.metrics.truth_frames`), so a model that answers as
it was trained can score m_vIoU 100. Every video is drawn so that both its objects are visible on at least one
sampled frame (its objects and window are redrawn from `rng` until they are): no record asks about an object the
model cannot see, and every benchmark tube has frames to score. Same seed and N, same bytes; another N draws
other videos (and so other files).

The pieces: `synth_video.py` (the spec, the drawn videos), `synth_records.py` (the training records),
`synth_benchmark.py` (the benchmark files), `synth_media.py` (drawing and encoding); this module writes the
tree and the mixtures.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import yaml

from llavast import storage
from llavast.data.records import Task
from llavast.data.synth_benchmark import write_benchmark
from llavast.data.synth_media import encode_image, render_frame
from llavast.data.synth_records import (
    RecordBuilder,
    image_records,
    single_image_records,
    single_video_records,
    video_records,
)
from llavast.data.synth_video import (
    SynthSpec,
    make_video,
    moving_single,
    shape_pair,
    single_object,
)
from llavast.storage import StorageOptions

log = logging.getLogger(__name__)

SOURCES: dict[str, Task] = {
    "video_caption": Task.CAPTION, "tvg": Task.TVG, "dvc": Task.DVC, "tr": Task.TR, "stvg": Task.STVG,
    "elc": Task.ELC, "svg": Task.SVG, "qa": Task.QA, "classification": Task.CLASSIFICATION,
    "conversation": Task.CONVERSATION, "image_caption": Task.CAPTION, "rec": Task.REC, "rc": Task.RC,
    "dgc": Task.DGC, "rec_single": Task.REC, "svg_single": Task.SVG,
    "stvg_single": Task.STVG,
}
# The warm-ups' mixtures, each written when its media are: one-shape REC alone (mixtures/warmup.yaml, with
# `single_images`), one moving shape's tubes alone (mixtures/warmup_video.yaml, with `single_videos`).
WARMUPS: dict[str, dict[str, str]] = {"warmup": {"rec_single": "all"},
                                      "warmup_video": {"svg_single": "all", "stvg_single": "all"}}
SINGLE_SOURCES = {"rec_single", "svg_single", "stvg_single"}  # written only with single media
JSONL_SOURCES = {"video_caption", "tvg", "stvg", "rec", "qa", "dgc", "rec_single", "stvg_single"}
STAGES: dict[int, dict[str, str]] = {  # source -> sampling strategy
    1: {"video_caption": "all"},
    2: {"tvg": "all", "dvc": "all", "tr": "first:90%", "rec": "all", "dgc": "random:80%", "rc": "all",
        "rec_single": "random:25%"},
    3: {"video_caption": "random:50%", "tvg": "all", "dvc": "all", "tr": "all", "stvg": "all", "elc": "all",
        "svg": "all", "qa": "end:30", "classification": "all", "conversation": "all", "image_caption": "all",
        "rec": "all", "rc": "all", "dgc": "all", "rec_single": "random:25%", "svg_single": "random:25%",
        "stvg_single": "random:25%"},
}


@dataclass
class SynthResult:
    root: str
    samples: dict[str, int]
    mixtures: dict[int | str, str]  # stage number (or "warmup") -> its mixture's URI
    benchmark: dict[str, str]
    media_bytes: int = 0

    @property
    def total(self) -> int:
        return sum(self.samples.values())


def _dump(records: list[dict[str, Any]], jsonl: bool) -> str:
    if jsonl:
        return "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    return json.dumps(records, indent=1, sort_keys=True)


def synthesize(out: str, options: StorageOptions, spec: SynthSpec | None = None) -> SynthResult:
    """Write a synthetic ST-Align tree under `out` (see the module docstring); deterministic under `spec.seed`
    (default: `SynthSpec()`)."""
    spec = spec or SynthSpec()
    rng = np.random.default_rng(spec.seed)
    root = storage.parse(out).uri
    prompts = np.random.default_rng([spec.seed, 3])  # the benchmark prompt forms drawn for training questions
    builder = RecordBuilder()
    media_bytes = 0
    for i in range(spec.videos):
        video, size = make_video(rng, spec, f"videos/vid_{i:05d}.mp4", root, options)
        media_bytes += size
        video_records(builder, video, rng, prompts)
    for i in range(spec.images):
        fmt = "png" if i % 2 == 0 else "jpeg"
        path = f"images/img_{i:05d}.{'png' if fmt == 'png' else 'jpg'}"
        objects = shape_pair(rng, 1, spec, still=True)
        data = encode_image(render_frame(objects, 0, spec.width, spec.height), fmt)
        storage.write_bytes(storage.join(root, path), data, options)
        media_bytes += len(data)
        image_records(builder, path, objects, spec.width, spec.height, prompts)
    single_rng = np.random.default_rng([spec.seed, 4])  # apart from `rng`: the other files keep their bytes
    for i in range(spec.single_images):
        path = f"images/single_{i:05d}.png"
        obj = single_object(single_rng, spec)
        data = encode_image(render_frame([obj], 0, spec.width, spec.height), "png")
        storage.write_bytes(storage.join(root, path), data, options)
        media_bytes += len(data)
        single_image_records(builder, path, obj, spec.width, spec.height, single_rng)
    video_rng = np.random.default_rng([spec.seed, 5])  # apart from `rng`: the other files keep their bytes
    for i in range(spec.single_videos):
        video, size = make_video(video_rng, spec, f"videos/single_{i:05d}.mp4", root, options, moving_single)
        media_bytes += size
        single_video_records(builder, video, video_rng)
    for source, records in builder.records.items():
        name = f"{source}.jsonl" if source in JSONL_SOURCES else f"{source}.json"
        storage.write_text(storage.join(root, "annotations", name), _dump(records, source in JSONL_SOURCES), options)

    mixtures: dict[int | str, str] = {}
    stages: dict[int | str, dict[str, str]] = {
        **STAGES, **{name: sources for name, sources in WARMUPS.items() if set(sources) <= set(builder.records)}}
    for stage, sources in stages.items():
        datasets = [{"json_path": f"../annotations/{s}.{'jsonl' if s in JSONL_SOURCES else 'json'}",
                     "sampling_strategy": strategy, "source": s, "data_folder": ".."}
                    for s, strategy in sources.items() if s in builder.records or s not in SINGLE_SOURCES]
        uri = storage.join(root, "mixtures", f"stage{stage}.yaml" if isinstance(stage, int) else f"{stage}.yaml")
        storage.write_text(uri, yaml.safe_dump({"datasets": datasets}, sort_keys=False), options)
        mixtures[stage] = uri

    benchmark, size = write_benchmark(rng, spec, root, options)
    media_bytes += size
    counts = {source: len(records) for source, records in builder.records.items()}
    log.info("synthesized %d samples (%d videos, %d images) under %s", sum(counts.values()), spec.videos,
             spec.images, root)
    return SynthResult(root=root, samples=counts, mixtures=mixtures, benchmark=benchmark, media_bytes=media_bytes)
