"""Does a model trained here learn? The tiny model trained end to end against baselines on held-out grounding.

    python -m benchmarks.learning --fresh    # the full run (jobs/learn/, `make learn`), ~41 minutes on 2 cores
    python -m benchmarks.learning --quick    # the plumbing only: a few steps, a few samples (the test's run)

1. `jobs/learn/pipeline.yaml` through the CLI (`llavast run`), on a local Ray and a local MLflow server: a
   learnable synthetic ST-Align -> index -> stages 1-3 and the two warm-ups on Ray Train with DeepSpeed ->
   registered versions -> the stage-3 version and the untrained model evaluated on the held-out split (the eval
   runner, Ray Data).
2. Baselines scored by `llavast eval score`, like any outside model: the training set's mean answer
   (`evaluate.baselines.constant_answer`) and random answers of the right shape.
3. The table (model or baseline x TVG mIoU and R@0.5, REC Acc@0.5, STVG m_tIoU/m_sIoU/m_vIoU), and for each
   target metric the trained model's margin over the constant baseline with a 95% paired bootstrap interval,
   printed and written to benchmarks/results/learning[_quick].json with the wall time and the machine's load.
4. The full run copies the stage-3 evaluation's pictures (from its MLflow run) to docs/results/learning/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pyarrow.parquet as pq
import yaml

import model_zoo
from llavast.evaluate.answers import CoordinateBins, parse_answer
from llavast.evaluate.baselines import constant_answer, priors_from_records, random_answer
from llavast.evaluate.benchmarks import RECSample, read_benchmark
from llavast.evaluate.metrics import rec_iou, rec_truth_box
from llavast.services import mlflow_down, mlflow_up
from llavast.storage import StorageOptions

REPO = Path(__file__).resolve().parents[1]
PIPELINE = REPO / "jobs" / "learn" / "pipeline.yaml"
PICTURES = REPO / "docs" / "results" / "learning"
TASKS = ("tvg", "rec", "stvg")
BENCHMARK = "synthetic"  # the benchmarks' name in jobs/learn/eval.yaml
COLUMNS = [("tvg", "mIoU"), ("tvg", "R@0.5"), ("rec", "Acc@0.5"), ("stvg", "m_tIoU"), ("stvg", "m_sIoU"),
           ("stvg", "m_vIoU")]
# target metric -> (task, per-sample column of results.parquet, how a sample counts)
TARGETS = {"tvg/mIoU": ("tvg", "iou", "mean"), "rec/Acc@0.5": ("rec", "iou", ">=0.5"),
           "stvg/m_vIoU": ("stvg", "viou", "mean")}
TRAINING_FILES = {"tvg": "tvg.jsonl", "rec": "rec.jsonl", "stvg": "stvg.jsonl"}
QUICK_SETS = [
    "nodes.synth.set.synth.videos=12", "nodes.synth.set.synth.images=8", "nodes.synth.set.synth.benchmark_videos=3",
    "nodes.synth.set.synth.benchmark_images=3", "nodes.synth.set.synth.max_frames=12",
    "nodes.synth.set.synth.single_images=8",
    *(f"nodes.stage{k}.set.train.max_steps=2" for k in (1, 2, 3)), "nodes.warmup.set.train.max_steps=2",
    "nodes.warmup-video.set.train.max_steps=2", "nodes.synth.set.synth.single_videos=8",
    "nodes.eval.set.generation.max_new_tokens=16", "nodes.eval-untrained.set.generation.max_new_tokens=16",
]


def run_pipeline(pipeline: Path, work: Path, quick: bool) -> float:
    """Build the tiny base, run the pipeline through the CLI (MLflow already up); the seconds it took."""
    base = work / "base" / "llava-ov-tiny"
    if not (base / "config.json").is_file():
        model_zoo.spec("llava_st").write_demo_checkpoint(base)
    llavast = str(Path(sys.executable).with_name("llavast"))
    started = time.perf_counter()
    sets = [a for s in QUICK_SETS for a in ("--set", s)] if quick else []
    command = [llavast, "run", str(pipeline), "--num-cpus", "4", *sets]
    result = subprocess.run(command, cwd=pipeline.parent, env={**os.environ, "COLUMNS": "160"})
    if result.returncode != 0:
        raise SystemExit(f"the learning pipeline failed (exit {result.returncode}): see its output above")
    return time.perf_counter() - started


def score_baselines(work: Path, num_frames: int, seed: int = 0) -> dict[str, dict[str, Path]]:
    """Write the constant and random baselines' answers for each task and score them with `llavast eval score`;
    baseline -> task -> its output folder."""
    options = StorageOptions()
    llavast = str(Path(sys.executable).with_name("llavast"))
    out: dict[str, dict[str, Path]] = {"constant": {}, "random": {}}
    for task in TASKS:
        benchmark = work / "st-align" / "benchmark" / f"{task}.json"
        samples = read_benchmark(task, str(benchmark), options).samples
        records = [json.loads(line) for line in (work / "st-align" / "annotations" / TRAINING_FILES[task])
                   .read_text().splitlines() if line.strip()]
        priors = priors_from_records(records, task)
        answers = {"constant": {s.id: constant_answer(s, priors, num_frames) for s in samples},
                   "random": {s.id: random_answer(s, num_frames, seed) for s in samples}}
        for name, outputs in answers.items():
            folder = work / "baselines" / name / task
            folder.mkdir(parents=True, exist_ok=True)
            predictions = folder / "predictions.jsonl"
            predictions.write_text("".join(json.dumps({"id": i, "output": o}) + "\n" for i, o in outputs.items()))
            subprocess.run([llavast, "eval", "score", "--task", task, "--benchmark", str(benchmark), "--predictions",
                            str(predictions), "--out", str(folder), "--num-frames", str(num_frames)],
                           check=True, capture_output=True, text=True)
            out[name][task] = folder
    return out


def save_pictures(work: Path, pipeline: Path, dest: Path) -> list[str]:
    """The stage-3 evaluation's pictures (held-out samples: prediction beside ground truth), from its MLflow run,
    copied to `dest` (replacing what an earlier run left there); their paths relative to the repository."""
    from llavast.tracking import Tracker
    from llavast.tracking.evaluation import download_pictures

    tracking = yaml.safe_load(pipeline.read_text())["tracking"]
    if dest.exists():
        shutil.rmtree(dest)
    with tempfile.TemporaryDirectory() as tmp:
        found = download_pictures(Tracker(tracking["uri"]), tracking["experiment"], str(work / "eval" / "stage3"),
                                  Path(tmp))
        saved = []
        for path in found:
            target = dest / path.relative_to(Path(tmp) / "pictures")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            saved.append(str(target.relative_to(REPO)) if target.is_relative_to(REPO) else str(target))
    return saved


def _per_sample(folder: Path, column: str) -> dict[str, float]:
    return {r["id"]: float(r[column]) for r in pq.read_table(folder / "results.parquet").to_pylist()}


def margin(model: dict[str, float], baseline: dict[str, float], how: str, seed: int = 0,
           resamples: int = 2000) -> dict[str, float]:
    """The model's margin over a baseline on one metric (percent points), with a 95% paired bootstrap interval
    over samples: the same resampled ids for both, so the interval is that of the difference."""
    ids = sorted(model)
    a = np.array([model[i] for i in ids])
    b = np.array([baseline[i] for i in ids])
    if how == ">=0.5":
        a, b = (a >= 0.5).astype(float), (b >= 0.5).astype(float)
    diff = 100.0 * (a - b)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"margin": float(diff.mean()), "ci_low": float(low), "ci_high": float(high), "samples": len(ids),
            "beats": bool(low > 0)}


def collect(work: Path, baselines: dict[str, dict[str, Path]]) -> dict[str, Any]:
    """Rows of the table (summary.json of each) and the margins over the constant baseline."""
    rows: dict[str, dict[str, float]] = {}
    folders = {"trained (stage 3)": {t: work / "eval" / "stage3" / BENCHMARK / t for t in TASKS},
               "untrained": {t: work / "eval" / "untrained" / BENCHMARK / t for t in TASKS},
               "constant (training mean)": baselines["constant"], "random": baselines["random"]}
    for name, by_task in folders.items():
        if name.startswith(("trained", "untrained")):
            summary = json.loads((by_task["tvg"].parents[1] / "summary.json").read_text())
            tables = {t: summary[f"{BENCHMARK}/{t}"] for t in TASKS}
        else:
            tables = {t: json.loads((by_task[t] / "summary.json").read_text())[t] for t in TASKS}
        rows[name] = {f"{t}/{k}": float(tables[t][k]) for t, k in COLUMNS}
        rows[name].update({f"{t}/parse_rate": float(tables[t]["parse_rate"]) for t in TASKS})
    trained = folders["trained (stage 3)"]
    margins = {metric: margin(_per_sample(trained[task], column), _per_sample(baselines["constant"][task], column),
                              how) for metric, (task, column, how) in TARGETS.items()}
    return {"rows": rows, "margins": margins}


def named_vs_other(work: Path, folder: Path, bins: CoordinateBins) -> dict[str, float]:
    """On two-shape REC: the answers' mean IoU and Acc@0.5 with the NAMED shape and with the OTHER one (from
    benchmark/rec_others.json). A model that finds a shape but cannot tell which one is named scores both alike."""
    benchmark = work / "st-align" / "benchmark"
    samples = {s.id: s for s in read_benchmark("rec", str(benchmark / "rec.json"), StorageOptions()).samples}
    others = json.loads((benchmark / "rec_others.json").read_text())
    named, other = [], []
    for row in pq.read_table(folder / "results.parquet").to_pylist():
        sample = samples[row["id"]]
        assert isinstance(sample, RECSample)
        box = parse_answer(row["output"], bins).box
        named.append(rec_iou(box, sample.truth))
        other.append(rec_iou(box, rec_truth_box(others[row["id"]], sample.width, sample.height)))
    return {"named/mIoU": 100.0 * float(np.mean(named)), "other/mIoU": 100.0 * float(np.mean(other)),
            "named/Acc@0.5": 100.0 * float(np.mean(np.array(named) >= 0.5)),
            "other/Acc@0.5": 100.0 * float(np.mean(np.array(other) >= 0.5)), "samples": len(named)}


def print_table(result: dict[str, Any]) -> None:
    header = ["model / baseline"] + [f"{t} {k}" for t, k in COLUMNS]
    print(" | ".join(header))
    for name, row in result["rows"].items():
        print(" | ".join([name] + [f"{row[f'{t}/{k}']:.1f}" for t, k in COLUMNS]))
    for metric, m in result["margins"].items():
        print(f"{metric}: trained - constant = {m['margin']:+.1f} points, 95% CI [{m['ci_low']:+.1f}, "
              f"{m['ci_high']:+.1f}] over {m['samples']} samples: {'beats' if m['beats'] else 'does not beat'} it")
    picked = result["rec_named_vs_other"]
    print(f"two-shape REC, the trained model's box against the named shape: mIoU {picked['named/mIoU']:.1f}, "
          f"Acc@0.5 {picked['named/Acc@0.5']:.1f}; against the other shape: mIoU {picked['other/mIoU']:.1f}, "
          f"Acc@0.5 {picked['other/Acc@0.5']:.1f}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="A few steps and samples: the plumbing only.")
    parser.add_argument("--fresh", action="store_true", help="Delete the work folder first (else done nodes skip).")
    parser.add_argument("--pipeline", type=Path, default=PIPELINE,
                        help="The learning pipeline; its data and runs go to .learn/ two folders above it.")
    parser.add_argument("--out", type=Path, default=None, help="The results JSON (default benchmarks/results/).")
    parser.add_argument("--pictures", type=Path, default=None,
                        help="Where the stage-3 evaluation's pictures go (default: docs/results/learning/ for the "
                             "full run, none for --quick).")
    args = parser.parse_args(argv)
    pipeline = args.pipeline.resolve()
    work = pipeline.parents[2] / ".learn"
    tracking = urlparse(yaml.safe_load(pipeline.read_text())["tracking"]["uri"])
    if args.fresh and work.exists():
        shutil.rmtree(work)
    load_start = os.getloadavg()
    mlflow_up(work / "mlflow", tracking.port)
    try:
        seconds = run_pipeline(pipeline, work, args.quick)
        num_frames = json.loads((work / "eval" / "stage3" / "run.json").read_text())["num_frames"]
        baselines = score_baselines(work, num_frames)
        result = collect(work, baselines)
        run = json.loads((work / "eval" / "stage3" / "run.json").read_text())
        result["rec_named_vs_other"] = named_vs_other(work, work / "eval" / "stage3" / BENCHMARK / "rec",
                                                      CoordinateBins(*run["coordinate_bins"]))
        pictures = args.pictures or (None if args.quick else PICTURES)
        if pictures is not None:
            result["pictures"] = save_pictures(work, pipeline, pictures)
    finally:
        mlflow_down(work / "mlflow")
    result.update({
        "benchmark": "learning", "quick": args.quick, "wall_seconds": round(seconds, 1),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "load_avg_at_start": load_start, "load_avg_at_end": os.getloadavg(),
                    "python": platform.python_version()},
    })
    print_table(result)
    out = args.out or REPO / "benchmarks" / "results" / f"learning{'_quick' if args.quick else ''}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
