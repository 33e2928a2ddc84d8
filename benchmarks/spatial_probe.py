"""Spatial probes: does the tiny LLaVA-ST learn to read WHERE from pixels? (docs/results.md, issue 22)

A probe trains the project's own model (the tiny preset, built as the demo builds it) on synthetic images
made by the project's own renderer, tokenised and batched by the project's own data path (`PrepareSamples`
and `LlavaSTCollate`, called in-process: no Ray, no DeepSpeed), in a plain torch loop, and scores held-out
(or memorised) images by teacher-forced argmax: for a box, each coordinate's most likely bin on its axis;
for a word answer, every answer token right.

Probes (each asks one of the questions a grounding model must answer):
- side:   "Is the red square on the left or on the right?"  ->  "Left." / "Right." (x only)
- height: "Is the red square at the top or at the bottom?"  ->  "Top." / "Bottom." (y only)
- rec:    a RefCOCO prompt about the one shape of an image  ->  its box in coordinate tokens

`python -m benchmarks.spatial_probe` runs the ablation table (what each recipe change gives on single-object
REC) and writes benchmarks/results/spatial_probes.json. tests/integration/test_spatial_probes.py keeps the
probes that must hold as tests.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

import model_zoo
from llavast.data.collate import LlavaSTCollate
from llavast.data.manifest import SCHEMA, VARIABLE_KEYS
from llavast.data.pipeline import PrepareSamples
from llavast.data.prompts import REC_PROMPTS
from llavast.data.synth_media import COLOURS, SHAPES, MovingObject, encode_image, render_frame
from llavast.data.synth_records import Coords
from llavast.data.synth_video import SynthSpec, shape_pair
from llavast.evaluate.metrics import box_iou
from llavast.storage import StorageOptions
from llavast.train.optim import cosine_factor
from model_zoo.contract import IGNORE_INDEX, MediaKind
from model_zoo.llava_st.vocab import quantize_values

WIDTH, HEIGHT = 96, 64  # the synthetic media's frame (data/synth_video.py SynthSpec)
TASKS = ("side", "height", "rec", "rec2")


@dataclass(frozen=True)
class Recipe:
    """What a probe trains with. Defaults: the learning benchmark's stage settings (jobs/learn/stage.yaml)."""

    task: str = "rec"
    train_images: int = 2000  # distinct training images (0: memorise `eval_images` images)
    eval_images: int = 120
    steps: int = 600
    batch_size: int = 8
    lr: float = 1e-3
    decay_ratio: float = 0.0  # the last share of the steps decays on a cosine (train.decay_ratio); 0: constant
    warmup_steps: int = 20
    lape_init: str = "small"
    seed: int = 0
    radius: tuple[int, int] = (5, 8)  # training shapes' half-size, px (held-out: 5-8 as synth, unless memorising)
    single_share: float = 0.0  # rec2: the share of training images with one shape (of `radius`), the rest two
    same_shape: bool = False  # every single shape a red square: only its place (and size) tells images apart
    overrides: dict[str, Any] = field(default_factory=dict)  # more LlavaSTConfig fields


@dataclass
class ProbeResult:
    recipe: dict[str, Any]
    train_score: float  # % of the training images answered right (Acc@0.5 for boxes)
    eval_score: float  # % of the held-out images (the training images again when memorising)
    eval_miou: float | None  # boxes: mean IoU (%)
    eval_other_miou: float | None  # two shapes: mean IoU of the answer with the shape not asked about (%)
    constant_score: float  # the same metric for the best constant answer (the training set's mean box/answer)
    losses: list[float]  # mean loss per 50 steps
    train_seconds: float
    step_seconds: float


# ---- data -----------------------------------------------------------------------------------------------------
def _scenes(rng: np.random.Generator, n: int, task: str, radius: tuple[int, int], single_share: float,
            same_shape: bool) -> list[list[MovingObject]]:
    """n scenes, each the shapes in drawing order, the one asked about last (drawn on top, so its box is its
    drawn pixels). One shape of half-size `radius`; for rec2, a scene is two shapes of the synthetic data's
    5-8 px (`synth_video.shape_pair`: other colours, other shapes) except a `single_share` of single shapes. For the
    side/height probes the centre stays a radius away from the middle line: every answer is unambiguous.
    `same_shape`: every single shape a red square, so images differ only in where it is (and its size)."""
    out: list[list[MovingObject]] = []
    while len(out) < n:
        if task == "rec2" and rng.random() >= single_share:
            out.append(shape_pair(rng, 1, SynthSpec(), still=True))
            continue
        r = float(rng.integers(radius[0], radius[1] + 1))
        cx, cy = rng.uniform(r + 1, WIDTH - r - 1), rng.uniform(r + 1, HEIGHT - r - 1)
        if (task == "side" and abs(cx - WIDTH / 2) < r) or (task == "height" and abs(cy - HEIGHT / 2) < r):
            continue
        colour = str(rng.choice(list(COLOURS)))
        shape = str(rng.choice(SHAPES))
        if same_shape:
            colour, shape = "red", "square"
        out.append([MovingObject(colour, shape, r, 0, 0, (cx, cy), (cx, cy))])
    return out


def _conversation(task: str, scene: list[MovingObject], rng: np.random.Generator) -> tuple[list[dict], dict, tuple]:
    """(conversations, variables, truth): truth is the asked shape's normalised box (then the other shape's, for
    two), or the answer word."""
    obj = scene[-1]
    cx, cy = obj.start
    if task == "side":
        word = "Left." if cx < WIDTH / 2 else "Right."
        return _turns(f"Is the {obj.name} on the left or on the right?", word), {}, (word,)
    if task == "height":
        word = "Top." if cy < HEIGHT / 2 else "Bottom."
        return _turns(f"Is the {obj.name} at the top or at the bottom?", word), {}, (word,)
    coords = Coords()
    question = REC_PROMPTS[int(rng.integers(0, len(REC_PROMPTS)))].format(expression=f"the {obj.name}")
    truth = tuple(o.norm_box(0, WIDTH, HEIGHT) for o in (obj, *scene[:-1]))
    return _turns(question, coords.box(truth[0], "OUTPUT")), dict(coords.variables), truth


def _turns(question: str, answer: str) -> list[dict]:
    return [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}]


@dataclass
class ProbeSet:
    """Prepared samples (the data path's output table) and each sample's truth."""

    table: pa.Table
    truth: list[tuple]


def make_set(task: str, n: int, seed: int, folder: Path, tokenizer: Any, config: Any,
             radius: tuple[int, int] = (5, 8), single_share: float = 0.0, same_shape: bool = False) -> ProbeSet:
    """n images written as PNG under `folder`, through `PrepareSamples` (decode + tokenise)."""
    rng = np.random.default_rng(seed)
    rows, truth = [], []
    for i, scene in enumerate(_scenes(rng, n, task, radius, single_share, same_shape)):
        path = folder / f"{task}_{seed}_{i:05d}.png"
        path.write_bytes(encode_image(render_frame(scene, 0, WIDTH, HEIGHT), "png"))
        conversations, variables, answer = _conversation(task, scene, rng)
        kind = "qa" if task in ("side", "height") else "rec"
        rows.append({"uid": f"{task}:{i}", "id": "", "source": task, "task": kind, "source_file": "",
                     "record_index": i, "media_kind": int(MediaKind.IMAGE), "media_uri": str(path),
                     "split_start": -1, "split_end": -1,
                     "conversations": json.dumps(conversations),
                     "variables": {k: variables.get(k, []) for k in VARIABLE_KEYS}})
        truth.append(answer)
    prepare = PrepareSamples(tokenizer, config, max_length=1024, options=StorageOptions(), fetch_threads=1)
    table = prepare(pa.Table.from_pylist(rows, schema=SCHEMA))
    if set(table.column("status").to_pylist()) != {"ok"}:
        raise RuntimeError(f"probe samples dropped: {table.column('detail').to_pylist()[:3]}")
    return ProbeSet(table, truth)


def batches(samples: ProbeSet, batch_size: int, collate: LlavaSTCollate, rng: np.random.Generator,
            shuffle: bool) -> Iterator[tuple[dict[str, torch.Tensor], list[int]]]:
    order = rng.permutation(samples.table.num_rows) if shuffle else np.arange(samples.table.num_rows)
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size].tolist()
        yield collate(samples.table.take(index)).inputs, index


# ---- model, training, scoring -----------------------------------------------------------------------------
def build_model(base: Path, lape_init: str, **overrides: Any) -> tuple[torch.nn.Module, Any]:
    """The tiny LLaVA-ST on its demo checkpoint, every group trained, LAPE on (as jobs/learn's stage 2)."""
    spec = model_zoo.spec("llava_st")
    model = spec.build(base, lape_init=lape_init, **overrides)
    tokenizer = spec.load_tokenizer(base, model.config)
    groups = set(spec.groups) - {"lora"}
    spec.apply_stage(model, frozenset(groups), lape_enabled=True)
    return model, tokenizer


@torch.no_grad()
def predict(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> list[list[tuple[int, int]]]:
    """Per sample, (predicted id, label) at every labelled position; at a coordinate placeholder the prediction
    is the argmax over its own axis' bins, as a row of the coordinate table (M_t + M_h + M_w rows, t, h, w)."""
    config = model.config
    out = model(**{k: v for k, v in inputs.items() if k != "labels"}, return_logits=True)
    logits, labels = out.logits[:, :-1], inputs["labels"][:, 1:]
    v, start = config.text_vocab_size, model.placeholder_start
    offsets = {0: (0, config.m_t), 1: (config.m_t, config.m_h), 2: (config.m_t + config.m_h, config.m_w)}
    rows = []
    for b in range(labels.shape[0]):
        pairs = []
        for pos in (labels[b] != IGNORE_INDEX).nonzero()[:, 0].tolist():
            y = int(labels[b, pos])
            if y >= start:  # placeholder: argmax within its axis' bins
                first, m = offsets[(y - start) // 2]
                pairs.append((first + int(logits[b, pos, v + first:v + first + m].argmax()), y))
            else:
                pairs.append((int(logits[b, pos].argmax()), y))
        rows.append(pairs)
    return rows


@dataclass
class Score:
    right: float  # % answered right (Acc@0.5 for boxes)
    miou: float | None = None  # boxes: mean IoU with the asked shape (%)
    other_miou: float | None = None  # two shapes: mean IoU with the shape NOT asked about (%)


def score(model: torch.nn.Module, samples: ProbeSet, task: str, collate: LlavaSTCollate,
          batch_size: int = 16) -> Score:
    """Teacher-forced argmax answers against the truth."""
    config = model.config
    right, ious, others = 0, [], []
    was_training = model.training
    model.eval()
    for inputs, index in batches(samples, batch_size, collate, np.random.default_rng(0), shuffle=False):
        for pairs, i in zip(predict(model, inputs), index, strict=True):
            if task in ("side", "height"):
                right += all(p == y for p, y in pairs)
                continue
            coords = [p for p, y in pairs if y >= model.placeholder_start]  # x1 y1 x2 y2 in global bins
            first_h, first_w = config.m_t, config.m_t + config.m_h
            x1, x2 = ((coords[k] - first_w) / (config.m_w - 1) for k in (0, 2))
            y1, y2 = ((coords[k] - first_h) / (config.m_h - 1) for k in (1, 3))
            truth = samples.truth[i]
            iou = box_iou([x1, y1, x2, y2], list(truth[0]))
            ious.append(iou)
            right += iou >= 0.5
            if len(truth) > 1:
                others.append(box_iou([x1, y1, x2, y2], list(truth[1])))
    model.train(was_training)

    def pct(values: list[float]) -> float | None:
        return round(100.0 * float(np.mean(values)), 2) if values else None

    return Score(round(100.0 * right / samples.table.num_rows, 2), pct(ious), pct(others))


def constant_score(train: ProbeSet, held_out: ProbeSet, task: str) -> float:
    """The best constant answer's score on `held_out`: the training set's mean box, or its commoner word."""
    if task not in ("side", "height"):
        mean = np.mean(np.asarray([t[0] for t in train.truth], dtype=float), axis=0).tolist()
        return 100.0 * float(np.mean([box_iou(mean, list(t[0])) >= 0.5 for t in held_out.truth]))
    words = [t[0] for t in train.truth]
    common = max(set(words), key=words.count)
    return 100.0 * float(np.mean([t[0] == common for t in held_out.truth]))


@dataclass
class Trained:
    """A probe's model after training, with its data (the memorised set is also `held_out`)."""

    model: torch.nn.Module
    collate: LlavaSTCollate
    train: ProbeSet
    held_out: ProbeSet
    losses: list[float]  # mean loss per 50 steps
    seconds: float


def train_steps(model: torch.nn.Module, samples: ProbeSet, collate: LlavaSTCollate, steps: int, lr: float,
                decay_ratio: float, warmup_steps: int, batch_size: int, seed: int) -> Iterator[tuple[int, float]]:
    """The probes' plain loop: AdamW, the platform's lr schedule (warm-up, constant, a cosine over the last
    `decay_ratio` of the steps), clip 1.0, shuffled batches of `samples`; yields (step, loss) after each step."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    decay_from = max(warmup_steps, steps - math.ceil(steps * decay_ratio))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: cosine_factor(s, steps, warmup_steps, decay_from))
    rng = np.random.default_rng(seed)
    model.train()
    step = 0
    while step < steps:
        for inputs, _ in batches(samples, batch_size, collate, rng, shuffle=True):
            loss = model(**inputs).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            yield step, loss.item()
            if step >= steps:
                return


def train(recipe: Recipe, base: Path, workdir: Path, log_every: int = 0) -> Trained:
    """Train the untrained tiny base on one recipe's images (AdamW, the platform's lr schedule, clip 1.0)."""
    torch.manual_seed(recipe.seed)
    model, tokenizer = build_model(base, recipe.lape_init, **recipe.overrides)
    collate = LlavaSTCollate(tokenizer.pad_token_id, model.config.image_size)
    memorise = recipe.train_images == 0
    held_out = make_set(recipe.task, recipe.eval_images, recipe.seed + 1000, workdir, tokenizer, model.config,
                        recipe.radius if memorise else (5, 8), same_shape=recipe.same_shape)
    samples = held_out if memorise else make_set(
        recipe.task, recipe.train_images, recipe.seed, workdir, tokenizer, model.config, recipe.radius,
        recipe.single_share, recipe.same_shape)
    losses, window = [], []
    started = time.perf_counter()
    for step, loss in train_steps(model, samples, collate, recipe.steps, recipe.lr, recipe.decay_ratio,
                                  recipe.warmup_steps, recipe.batch_size, recipe.seed):
        window.append(loss)
        if step % 50 == 0:
            losses.append(round(float(np.mean(window)), 4))
            window = []
            if log_every and step % log_every == 0:
                print(f"  step {step}: loss {losses[-1]}", flush=True)
    model.eval()
    return Trained(model, collate, samples, held_out, losses, time.perf_counter() - started)


def run_probe(recipe: Recipe, base: Path, workdir: Path, log_every: int = 0) -> ProbeResult:
    """Train one recipe from the untrained tiny base and score it."""
    t = train(recipe, base, workdir, log_every)
    trained, held = score(t.model, t.train, recipe.task, t.collate), score(t.model, t.held_out, recipe.task, t.collate)
    return ProbeResult(asdict(recipe), trained.right, held.right, held.miou, held.other_miou,
                       round(constant_score(t.train, t.held_out, recipe.task), 2), t.losses, round(t.seconds, 1),
                       round(t.seconds / recipe.steps, 4))


def scramble_patches(pixel_values: torch.Tensor, patch: int, seed: int = 0) -> torch.Tensor:
    """(F, 3, S, S) frames with their patch x patch tiles moved by one fixed random permutation: every visual
    token keeps its content and gets another token's position."""
    f, c, side, _ = pixel_values.shape
    g = side // patch
    tiles = pixel_values.reshape(f, c, g, patch, g, patch).permute(0, 2, 4, 1, 3, 5).reshape(f, g * g, c, patch, patch)
    order = torch.randperm(g * g, generator=torch.Generator().manual_seed(seed))
    tiles = tiles[:, order].reshape(f, g, g, c, patch, patch).permute(0, 3, 1, 4, 2, 5)
    return tiles.reshape(f, c, side, side)


@torch.no_grad()
def coordinate_loss(model: torch.nn.Module, samples: ProbeSet, collate: LlavaSTCollate, scramble: bool) -> float:
    """Mean excess loss over the coordinate targets: the soft cross-entropy at each placeholder minus its soft
    label's own entropy (so 0 is a perfect answer), images as drawn or with their patches scrambled."""
    total, count = 0.0, 0
    for inputs, _ in batches(samples, 16, collate, np.random.default_rng(0), shuffle=False):
        labels = inputs["labels"].clone()
        is_coord = labels >= model.placeholder_start
        labels[~is_coord] = IGNORE_INDEX
        pixels = inputs["pixel_values"]
        if scramble:
            pixels = scramble_patches(pixels, model.config.vision_config.patch_size)
        out = model(**{**inputs, "labels": labels, "pixel_values": pixels})
        targets = int(out.num_target_tokens)
        values = inputs["coord_values"][:, 1:][is_coord[:, 1:]]
        axis = (labels[:, 1:][is_coord[:, 1:]] - model.placeholder_start) // 2
        sizes = torch.tensor([model.config.m_t, model.config.m_h, model.config.m_w])[axis]
        _, _, ratio = quantize_values(values, sizes)
        ratio = ratio.double().clamp(1e-12, 1 - 1e-12)
        entropy = float(-(ratio * ratio.log() + (1 - ratio) * (1 - ratio).log()).sum())
        total += float(out.loss) * targets - entropy
        count += targets
    return total / count


def tiny_base(folder: Path) -> Path:
    """The demo's untrained tiny checkpoint (model_zoo's demo checkpoint), written under `folder`."""
    path = folder / "llava-ov-tiny"
    if not (path / "config.json").is_file():
        model_zoo.spec("llava_st").write_demo_checkpoint(path)
    return path


def print_table(rows: list[dict[str, Any]]) -> None:
    print("task | recipe | steps | train % | held-out % | held-out mIoU | other mIoU | constant % | s/step")
    for row in rows:
        r = row["recipe"]
        recipe = (f"lape_init={r['lape_init']} radius={r['radius'][0]}-{r['radius'][1]} lr={r['lr']} "
                  f"decay_ratio={r['decay_ratio']} images={r['train_images'] or 'memorise'}"
                  + (f" single_share={r['single_share']}" if r["task"] == "rec2" else "")
                  + (" same_shape" if r["same_shape"] else ""))
        print(f"{r['task']} | {recipe} | {r['steps']} | {row['train_score']} | {row['eval_score']} | "
              f"{row['eval_miou']} | {row['eval_other_miou']} | {row['constant_score']} | {row['step_seconds']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=TASKS, default="rec")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--train-images", type=int, default=2000, help="0: memorise the --eval-images")
    parser.add_argument("--eval-images", type=int, default=120)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--decay-ratio", type=float, default=0.0)
    parser.add_argument("--lape-init", default="small")
    parser.add_argument("--radius", type=int, nargs=2, default=(5, 8), help="training shapes' half-size range, px")
    parser.add_argument("--single-share", type=float, default=0.0, help="rec2: share of one-shape training images")
    parser.add_argument("--same-shape", action="store_true", help="every single shape a red square")
    parser.add_argument("--override", action="append", default=[], help="KEY=JSON LlavaSTConfig field")
    parser.add_argument("--append", type=Path, help="add the result to this JSON list (the ablation table)")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("PROBE_THREADS", "1")))
    overrides = {k: json.loads(v) for k, v in (o.split("=", 1) for o in args.override)}
    recipe = Recipe(task=args.task, steps=args.steps, train_images=args.train_images, eval_images=args.eval_images,
                    lr=args.lr, decay_ratio=args.decay_ratio, radius=tuple(args.radius), lape_init=args.lape_init,
                    single_share=args.single_share, same_shape=args.same_shape, overrides=overrides)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        result = asdict(run_probe(recipe, tiny_base(Path(tmp)), Path(tmp), log_every=100))
    result.update(date=time.strftime("%Y-%m-%dT%H:%M:%S%z"), threads=torch.get_num_threads(),
                  load_avg_at_start=load_start, load_avg_at_end=os.getloadavg())
    rows = [result]
    if args.append:
        rows = (json.loads(args.append.read_text()) if args.append.exists() else []) + rows
        args.append.write_text(json.dumps(rows, indent=1))
    print_table(rows)


if __name__ == "__main__":
    main()
