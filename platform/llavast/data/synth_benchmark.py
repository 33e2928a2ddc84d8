"""The synthetic benchmark: held-out videos asked about in the released benchmark's formats (REFERENCE.md 3.3:
STVG, ELC, SVG; Charades-STA for TVG) and held-out images in RefCOCO's (REC), with the other object's box beside
each REC image, so a result can say whether a model picks the named shape or just a shape."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import numpy as np

from llavast import storage
from llavast.data.synth_media import encode_image, render_frame
from llavast.data.synth_video import SynthSpec, Video, make_video, shape_pair
from llavast.storage import StorageOptions


def write_benchmark(rng: np.random.Generator, spec: SynthSpec, root: str,
                    options: StorageOptions) -> tuple[dict[str, str], int]:
    """The benchmark files under `root`/benchmark: (task -> file URI, media bytes written). The videos and their
    ST questions come from `rng` (the training data's generator, continued); TVG's and REC's choices from their
    own generators, so the other files keep their bytes."""
    media_bytes = 0
    bench: dict[str, list[dict[str, Any]]] = defaultdict(list)
    tvg_rng = np.random.default_rng([spec.seed, 1])
    for i in range(spec.benchmark_videos):
        video, size = make_video(rng, spec, f"benchmark/videos/bench_{i:05d}.mp4", root, options)
        media_bytes += size
        for task, record in st_records(video, rng).items():
            bench[task].append(record)
        bench["tvg"].append(tvg_record(video, tvg_rng))
    benchmark = {}
    for task, records in bench.items():
        uri = storage.join(root, "benchmark", f"{task}.json")
        storage.write_text(uri, json.dumps(records, indent=1, sort_keys=True), options)
        benchmark[task] = uri
    if spec.benchmark_images > 0:
        rec_rng = np.random.default_rng([spec.seed, 2])
        refcoco: dict[str, list[dict[str, Any]]] = {"images": [], "annotations": []}
        others: dict[str, list[float]] = {}
        for i in range(spec.benchmark_images):
            image, annotation, other, size = rec_image(rec_rng, spec, i, f"benchmark/images/bench_img_{i:05d}.png",
                                                       root, options)
            media_bytes += size
            refcoco["images"].append(image)
            refcoco["annotations"].append(annotation)
            others[str(i)] = other
        uri = storage.join(root, "benchmark", "rec.json")
        storage.write_text(uri, json.dumps(refcoco, indent=1, sort_keys=True), options)
        storage.write_text(storage.join(root, "benchmark", "rec_others.json"), json.dumps(others, indent=1), options)
        benchmark["rec"] = uri
    return benchmark, media_bytes


def st_records(v: Video, rng: np.random.Generator) -> dict[str, dict[str, Any]]:
    """One STVG, ELC and SVG record about one object, its questions in the released benchmark's template forms
    ("Starts in <s>", "<bbox>", "From <s> to <e>"), which the eval prompts rewrite as the release does."""
    obj = v.objects[int(rng.integers(0, 2))]

    def xywh(frame: int) -> list[float]:
        x1, y1, x2, y2 = obj.box(frame, v.width, v.height)
        return [x1, y1, x2 - x1, y2 - y1]

    meta = {"width": v.width, "height": v.height, "split": list(v.window),
            "spatial_token": {"<bboxes>": {str(f): xywh(f) for f in range(obj.first, obj.last + 1)},
                              "<bbox>": xywh(obj.first)},
            "time_token": {"<s>": obj.first, "<e>": obj.last}}
    questions = {
        "stvg": (f"Find the {obj.name} that moves {obj.direction}: when is it visible and where?",
                 "During the span of {<s>,<e>}. Object bounding box: <bboxes>"),
        "elc": (f"Starts in <s>, what happens to the {obj.name} within the region <bbox>? Where is it located?",
                f"Ends in <e>, the {obj.name} moves {obj.direction}. Object bounding box: <bboxes>"),
        "svg": (f"From <s> to <e>, where is the {obj.name}?", "<bboxes>"),
    }
    return {task: {"video_path": v.path, "meta": meta,
                   "conversations": [{"from": "human", "value": f"<video>\n{q}"}, {"from": "gpt", "value": a}]}
            for task, (q, a) in questions.items()}


def tvg_record(v: Video, rng: np.random.Generator) -> dict[str, Any]:
    """A Charades-STA query about one object: its visible span over the whole video (TVG has no split window)."""
    obj = v.objects[int(rng.integers(0, 2))]
    last = max(v.frames - 1, 1)
    return {"image_id": v.path, "caption": f"The {obj.name} moves {obj.direction}.",
            "timestamp": [obj.first / last, obj.last / last]}


def rec_image(rng: np.random.Generator, spec: SynthSpec, index: int, path: str, root: str,
               options: StorageOptions) -> tuple[dict[str, Any], dict[str, Any], list[float], int]:
    """A held-out image of two still objects and a RefCOCO pair about one of them: (image entry, annotation,
    the other object's box [x, y, w, h], bytes written). The referred object is drawn last, so its box is exactly
    its drawn pixels."""
    objects = shape_pair(rng, 1, spec, still=True)
    pick = int(rng.integers(0, 2))
    target, other = objects[pick], objects[1 - pick]
    data = encode_image(render_frame([other, target], 0, spec.width, spec.height), "png")
    storage.write_bytes(storage.join(root, path), data, options)
    x1, y1, x2, y2 = target.box(0, spec.width, spec.height)
    image = {"id": index, "file_name": path, "width": spec.width, "height": spec.height,
             "caption": f"the {target.name}"}
    ox1, oy1, ox2, oy2 = other.box(0, spec.width, spec.height)
    return image, {"id": index, "bbox": [x1, y1, x2 - x1, y2 - y1]}, [ox1, oy1, ox2 - ox1, oy2 - oy1], len(data)
