"""The eval runner's driver side without Ray: prompts -> manifest-shaped rows, and the pictures of each task."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from llavast.config.eval import EvalJobConfig
from llavast.data.manifest import SCHEMA
from llavast.data.synth_media import encode_image
from llavast.evaluate.answers import CoordinateBins
from llavast.evaluate.benchmarks import read_benchmark
from llavast.evaluate.figures import figures
from llavast.evaluate.model import ModelSource
from llavast.evaluate.prompts import build_prompts
from llavast.evaluate.render import truth_answer
from llavast.evaluate.runner import EvalRun, TaskRun, prompt_rows
from llavast.evaluate.score import score
from llavast.storage import StorageOptions

OPTS = StorageOptions()


def _job(tmp_path: Path, benchmarks: list[dict]) -> EvalJobConfig:
    return EvalJobConfig.model_validate({"name": "t", "model": {"base": str(tmp_path / "base")},
                                         "benchmarks": benchmarks, "out": str(tmp_path / "out")})


def _refcoco(tmp_path: Path) -> Path:
    image = np.zeros((100, 200, 3), np.uint8)
    image[10:60, 20:120] = (230, 40, 40)
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(encode_image(image, "png"))
    path = tmp_path / "refcoco.json"
    path.write_text(json.dumps({"images": [{"id": 7, "file_name": "imgs/a.png", "width": 200, "height": 100,
                                            "caption": "the red box"}],
                                "annotations": [{"id": 7, "bbox": [20, 10, 100, 50]}]}))
    return path


def _run(job: EvalJobConfig, tasks: list[TaskRun]) -> EvalRun:
    return EvalRun(ModelSource("llava_st", "base", {}), tasks, job.out, 1.0, CoordinateBins(), 4, 54)


def _task(job: EvalJobConfig, index: int) -> TaskRun:
    benchmark = job.benchmarks[index]
    file = read_benchmark(benchmark.task, benchmark.annotations, OPTS)
    prompts = build_prompts(file.samples)
    outputs = {p.id: truth_answer(p.sample, 4) for p in prompts}
    return TaskRun(benchmark, file, prompts, score(benchmark.task, [p.sample for p in prompts], outputs, 100, 4))


def test_prompt_rows_are_manifest_rows_under_the_media_root(tmp_path):
    path = _refcoco(tmp_path)
    job = _job(tmp_path, [{"task": "rec", "annotations": str(path)},
                          {"task": "rec", "name": "refcoco-b", "annotations": str(path), "media_root": "s3://b/x"}])
    first = prompt_rows(build_prompts(read_benchmark("rec", str(path), OPTS).samples), job.benchmarks[0])
    second = prompt_rows(build_prompts(read_benchmark("rec", str(path), OPTS).samples), job.benchmarks[1])
    assert first[0]["uid"] == "refcoco/rec/7" and second[0]["uid"] == "refcoco-b/rec/7"
    assert first[0]["media_uri"] == f"file://{tmp_path}/imgs/a.png"  # default: the annotation file's folder
    assert second[0]["media_uri"] == "s3://b/x/imgs/a.png"
    assert first[0]["media_kind"] == 1 and (first[0]["split_start"], first[0]["split_end"]) == (-1, -1)
    assert json.loads(first[0]["conversations"])[0]["value"].startswith("<image>\n")
    assert pa.Table.from_pylist(first, schema=SCHEMA).num_rows == 1  # exactly the manifest's columns


def test_pictures_of_rec_and_tvg(tmp_path):
    charades = tmp_path / "charades.json"
    charades.write_text(json.dumps([{"image_id": "v.mp4", "caption": "x", "timestamp": [0.1, 0.4]},
                                    {"image_id": "w.mp4", "caption": "y", "timestamp": [0.2, 0.9]}]))
    job = _job(tmp_path, [{"task": "rec", "annotations": str(_refcoco(tmp_path))},
                          {"task": "tvg", "annotations": str(charades)}])
    run = _run(job, [_task(job, 0), _task(job, 1)])
    pictures = figures(run, job, per_task=1)
    assert [path for path, _ in pictures] == ["pictures/refcoco/rec/7.png", "pictures/charades-sta/tvg/0.png"]
    rec_fig, tvg_fig = (fig for _, fig in pictures)
    rectangles = [p for ax in rec_fig.axes for p in ax.patches if p.get_gid() in ("truth", "prediction")]
    assert {p.get_gid() for p in rectangles} == {"truth", "prediction"}  # the truth rendered as the answer
    truth = next(p for p in rectangles if p.get_gid() == "truth")
    assert np.allclose((truth.get_x(), truth.get_y(), truth.get_width(), truth.get_height()),
                       (0.1 * 54, 0.1 * 54, 0.5 * 54, 0.5 * 54))  # normalised box on the 54 x 54 image
    assert not any(ax.images for ax in tvg_fig.axes)  # a timeline only
