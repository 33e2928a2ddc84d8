"""An eval run's pictures: for the first samples of each task, the media decoded again (as the model saw it)
and drawn with the true and predicted answers (`pictures.py` draws; this module reads and chooses)."""

from __future__ import annotations

from typing import Any

from llavast import storage
from llavast.config.eval import EvalJobConfig
from llavast.data.media import decode_image, decode_video
from llavast.evaluate import pictures
from llavast.evaluate.answers import parse_answer
from llavast.evaluate.benchmarks import RECSample, TVGSample
from llavast.evaluate.metrics import sampled_frames, truth_frames, tube_frames
from llavast.evaluate.runner import EvalRun


def figures(run: EvalRun, job: EvalJobConfig, per_task: int) -> list[tuple[str, Any]]:
    """Pictures of the first `per_task` samples of each task, as (artifact path, matplotlib Figure): ST-Align
    tasks a strip of the frames the model saw (decoded again, the same way) with the true and predicted boxes
    and spans; TVG the spans on a timeline; REC the boxes on the image."""
    size = run.image_size
    out = []
    for task in run.tasks:
        root = task.benchmark.media_folder
        for prompt, row in list(zip(task.prompts, task.scored.rows, strict=True))[:per_task]:
            sample, answer = prompt.sample, parse_answer(row["output"], run.bins)
            title = f"{task.benchmark.label}/{task.benchmark.task} {prompt.id}: {row['parse_status']}"
            if isinstance(sample, TVGSample):
                fig = pictures.tvg_figure(sample.span, answer.span, title)
            else:
                data = storage.read_bytes(storage.join(root, prompt.media), job.storage)
                if isinstance(sample, RECSample):
                    fig = pictures.rec_figure(decode_image(data, size)[0], sample.truth, answer.box, title)
                else:
                    truth = sample.truth
                    frames = decode_video(data, run.num_frames, size, truth.split, job.decode.frame_resize)
                    span = truth.span() if truth.start is not None and truth.end is not None else None
                    predicted = {"stvg": answer.span, "svg": None,
                                 "elc": (span[0], answer.end) if span and answer.end is not None else None}
                    fig = pictures.st_figure(
                        frames, sampled_frames(truth.split, run.num_frames), (truth.width, truth.height),
                        truth_frames(truth, run.num_frames), tube_frames(answer.tube, truth.split, truth.width,
                                                                         truth.height),
                        span if sample.task != "svg" else None, predicted[sample.task], title)
            out.append((f"pictures/{task.benchmark.label}/{task.benchmark.task}/{prompt.id}.png", fig))
    return out
