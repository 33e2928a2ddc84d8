"""Stage-2 training-step benchmark: random-init LLaVA-ST, K optimizer steps of the real micro-step under DeepSpeed.

What runs is the production path of `llavast/train/loop.py` in one process (world size 1): the stage policy
(`resolve_policy`: stage 2 trains LoRA + STP + LAPE, LAPE on), LoRA injected with `add_lora` and frozen per
`contract.apply_stage` (as `build_stage_model` does for a stage without a parent artifact, but from a config
rather than a checkpoint directory, so the 7B shapes need no 30 GB file), the worker's DeepSpeed engine
(`llavast.train.engine.build_engine`: the optimizer groups, AdamW, the schedule and the DeepSpeed config), and
each micro-step is `llavast.train.step.micro_step`. Only the data is synthetic: `grad_accum` video
micro-batches built once (random text ids, the visual block of `visual_token_count` media tokens, coordinate
placeholders in and out with random values, random frames), already on the device, so the timing is the step
alone, not the stream.

Shapes: `tiny` is the test preset (`model_zoo.llava_st.tiny_config`); `7b` is SigLIP-so400m-patch14-384 +
Qwen2-7B (the `LlavaSTConfig` defaults) at N = 100 frames (2520 visual tokens per video).

Metrics (timed steps only, after `--warmup` steps): seconds per optimizer step (wall, median and mean; also
the process's CPU time, all threads, the comparable figure on a shared CPU machine), non-pad
tokens/s (`StepOutput.tokens`), target tokens/s, samples/s, peak memory (CUDA: max_memory_allocated over
the timed steps; CPU: the process's peak RSS, `ru_maxrss`, over its whole life) and MFU.

MFU = model FLOPs per step x steps / timed seconds / peak FLOP/s of the device. Model FLOPs are analytic
and count only the work the stage needs (activation-checkpointing recomputation is not counted: MFU, not
HFU); per video sample with T non-pad tokens, F frames of P patches:
    LLM      (4 N_llm + 6 N_lora) T + 12 L d T^2
             forward 2 N T; backward 2 N T for the activation gradients through the frozen base (gradients
             must reach LAPE/STP at the input) and no weight gradient for it; LoRA weights 2+2+2;
             attention scores QK^T and AV, 4 L d T^2 forward, twice that backward (causal mask not halved).
             N_llm: the LLM's matrices (decoder linears + lm_head; the embedding lookup excluded),
             N_lora: the adapter's, L layers, d = heads x head_dim.
    vision   2 (N_vis + N_proj) F P + 4 L_v d_v P^2 F      forward only: frozen and under no_grad.
    STP      3 x its forward matmuls (the formula of benchmarks/stp_benchmark.py at the config's shapes):
             trainable, and its input needs a gradient (LAPE is added to it).
    LAPE tables, norms, biases, the coordinate head: negligible, not counted.
Peak FLOP/s: `--peak-tflops`, else a table of dense tensor-core peaks by `torch.cuda.get_device_name()`
(A100 312 bf16 / 19.5 fp32, H100 and H200 SXM 989 / 67, ...). On CPU there is no table: without the flag
MFU is null with the reason in the JSON.

Run from the repository root:
    .venv/bin/python -m benchmarks.train_step --shapes tiny --steps 30 --warmup 2 --threads 1   # CPU, ~20 s
    .venv/bin/python -m benchmarks.train_step --shapes 7b --dtype bf16 --zero 2 --steps 5 --warmup 2   # one GPU
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).parent / "results"
# Dense peak TFLOP/s (no sparsity) by device-name substring, first match wins; fp32 is without TF32
# (torch's default for matmuls).
PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H100 PCIe", {"bf16": 756.0, "fp32": 51.0}),
    ("H100", {"bf16": 989.0, "fp32": 67.0}),
    ("H200", {"bf16": 989.0, "fp32": 67.0}),
    ("H800", {"bf16": 989.0, "fp32": 67.0}),
    ("A100", {"bf16": 312.0, "fp32": 19.5}),
    ("A800", {"bf16": 312.0, "fp32": 19.5}),
    ("L40S", {"bf16": 362.0, "fp32": 91.6}),
)
DEFAULTS = {  # per --shapes: frames (None: the preset's), text tokens per sample, LoRA rank
    "tiny": {"frames": None, "text_tokens": 32, "lora_r": 8},
    "7b": {"frames": 100, "text_tokens": 256, "lora_r": 128},  # the release's LoRA (r 128, alpha 2r)
}


# ---- shapes and data ----------------------------------------------------------------------------------
def model_config(shapes: str, frames: int | None, lape_init: str = "small") -> Any:
    """The LlavaSTConfig at `shapes`; `frames` sets N (sigma keeps the preset's N / sigma frames per window);
    `lape_init` how the LAPE tables start (`LlavaSTConfig.lape_init`)."""
    from model_zoo.llava_st import tiny_config
    from model_zoo.llava_st.config import LlavaSTConfig

    if shapes == "tiny":
        config = tiny_config()
    else:  # the LlavaSTConfig defaults are the 7B shapes; the media ids are LLaVA-OneVision-7B's (Qwen2 vocab)
        config = LlavaSTConfig(image_token_id=151646, video_token_id=151647)
    if frames is not None and frames != config.num_frames:
        window = config.num_frames // config.sigma
        if frames % window:
            raise SystemExit(f"--frames {frames}: must be a multiple of the temporal window ({window} frames)")
        config.num_frames, config.sigma = frames, frames // window
    config.lape_init = lape_init
    return config.validate()


def synthetic_batch(config: Any, contract: Any, size: int, text_tokens: int, seed: int) -> Any:
    """`size` video samples of the same length: one text token, the visual block, the rest of the prompt
    (one <TEMP-INPUT> with its value), then the answer (half the text tokens, two <TEMP-OUTPUT> targets)."""
    from llavast.data.collate import StreamBatch
    from model_zoo.contract import IGNORE_INDEX, MediaKind

    g = torch.Generator().manual_seed(seed)
    kind = MediaKind.VIDEO
    placeholders = contract.placeholder_ids(config)
    t_in, t_out = placeholders["<TEMP-INPUT>"], placeholders["<TEMP-OUTPUT>"]
    media = contract.media_token_id(config, kind)
    visual = contract.visual_token_count(config, kind)
    frames = contract.frames_per_sample(config, kind)
    answer_len = max(3, text_tokens // 2)
    prompt_len = max(3, text_tokens - answer_len)
    low, high = 10, min(config.text_vocab_size, 100_000)  # plain text ids, clear of the special tokens
    length = prompt_len + visual + answer_len
    ids = torch.randint(low, high, (size, length), generator=g)
    ids[:, 1:1 + visual] = media
    values = torch.zeros(size, length)
    ids[:, prompt_len + visual - 1] = t_in
    for pos in (prompt_len + visual + 1, length - 2):
        ids[:, pos] = t_out
    coord = (ids == t_in) | (ids == t_out)
    values[coord] = torch.rand(int(coord.sum()), generator=g)
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, -answer_len:] = ids[:, -answer_len:]
    pixels = torch.rand(size * frames, 3, config.image_size, config.image_size, generator=g) * 2 - 1
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels, "coord_values": values,
              "pixel_values": pixels, "media_kind": torch.full((size,), int(kind), dtype=torch.long)}
    return StreamBatch(inputs=inputs, uids=[f"bench-{seed}-{i}" for i in range(size)])


# ---- model FLOPs --------------------------------------------------------------------------------------
def _matrices(module: torch.nn.Module, skip: tuple[str, ...] = ()) -> int:
    return sum(p.numel() for n, p in module.named_parameters() if p.ndim >= 2 and not any(s in n for s in skip))


def stp_forward_flops(config: Any) -> int:
    """Matmul FLOPs of one STP forward on one video (benchmarks/stp_benchmark.py's formula, any shape)."""
    e, d, g, n = config.stp_width, config.hidden_size, config.grid_size, config.num_frames
    k1, k2, sigma = config.k1, config.k2, config.sigma

    def packer(queries: int, keys: int, region: int) -> int:
        mlp = d * e + e * e
        return 2 * (queries * (mlp + 2 * e * e + e * d) + 2 * keys * (mlp + e * e) + 2 * queries * region * e)

    return (packer(n * k1 * k1, n * g * g, (g // k1) ** 2) + packer(n * k2 * k2, n * k1 * k1, (k1 // k2) ** 2)
            + packer(sigma * k1 * k1, n * k1 * k1, n // sigma))


FLOPS_FORMULA = ("per video sample of T non-pad tokens and F frames of P patches: "
                 "LLM (4*N_llm + 6*N_lora)*T + 12*L*d*T^2; vision tower + projector (frozen, forward only) "
                 "2*(N_vis + N_proj)*F*P + 4*L_v*d_v*P^2*F; STP 3*forward(stp_forward_flops); "
                 "N_* count weight matrices (embedding lookups excluded); recomputation not counted")


def model_flops(model: torch.nn.Module, config: Any, tokens_per_sample: list[int]) -> dict[str, int]:
    """Model FLOPs of the given video samples, by part (the docstring's formula)."""
    llm = model.language_model
    n_llm = _matrices(llm, skip=("embed_tokens", ".lora_"))
    n_lora = sum(p.numel() for n, p in llm.named_parameters() if ".lora_" in n)
    text = config.text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    d_attn, layers = text.num_attention_heads * head_dim, text.num_hidden_layers
    vision = config.vision_config
    n_vis = _matrices(model.vision_tower, skip=("position_embedding",))
    n_proj = _matrices(model.mm_projector)
    patches, frames = config.grid_size**2, config.num_frames
    samples = len(tokens_per_sample)
    return {
        "llm": sum((4 * n_llm + 6 * n_lora) * t for t in tokens_per_sample),
        "llm_attention": sum(12 * layers * d_attn * t * t for t in tokens_per_sample),
        "vision": samples * frames * (2 * (n_vis + n_proj) * patches
                                      + 4 * vision.num_hidden_layers * vision.hidden_size * patches**2),
        "stp": samples * 3 * stp_forward_flops(config),
    }


def peak_tflops(device_name: str | None, dtype: str, override: float | None) -> tuple[float | None, str]:
    """(peak TFLOP/s, where it comes from); None with the reason when it is unknown."""
    if override is not None:
        return override, "--peak-tflops"
    if device_name is None:
        return None, "CPU: no peak FLOP/s table; pass --peak-tflops to get an MFU"
    for key, peaks in PEAK_TFLOPS:
        if key in device_name:
            return peaks[dtype], f"table: {key} dense {dtype}"
    return None, f"device {device_name!r} not in the peak table; pass --peak-tflops"


# ---- the run ------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _init_single_process(use_gpu: bool) -> None:
    """World size 1: torch.distributed over gloo (CPU) or NCCL (GPU); DeepSpeed then takes this group."""
    import deepspeed

    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "RANK": "0",
                       "LOCAL_RANK": "0", "WORLD_SIZE": "1"}.items():
        os.environ.setdefault(key, value)
    if use_gpu:
        torch.cuda.set_device(0)
    deepspeed.init_distributed(dist_backend="nccl" if use_gpu else "gloo", auto_mpi_discovery=False)


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def run(args: argparse.Namespace) -> dict[str, Any]:
    import deepspeed

    import model_zoo
    from llavast.config.stage import DeepSpeedSection, LoraSection, TrainSection
    from llavast.train.engine import build_engine
    from llavast.train.lora import LoraSpec, add_lora
    from llavast.train.policy import resolve_policy
    from llavast.train.step import micro_step

    use_gpu = torch.cuda.is_available()
    device = torch.device("cuda", 0) if use_gpu else torch.device("cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    _init_single_process(use_gpu)

    # The stage model, as build_stage_model makes it for stage 2 (seeded build, LoRA added, frozen per policy).
    contract = model_zoo.spec("llava_st")
    config = model_config(args.shapes, args.frames, args.lape_init)
    train = TrainSection(stage=2, micro_batch_size=args.micro_batch_size, grad_accum_steps=args.grad_accum,
                         gradient_checkpointing=args.gradient_checkpointing)
    lora = LoraSection(r=args.lora_r, alpha=2.0 * args.lora_r)
    ds = DeepSpeedSection(zero_stage=args.zero, precision=args.dtype)
    policy = resolve_policy(train, contract)
    built = time.perf_counter()
    torch.manual_seed(train.seed)
    with device:  # random init on the device: 8B parameters initialise in seconds there, minutes on CPU
        model = contract.build(config)
    add_lora(model, LoraSpec(r=lora.r, alpha=lora.alpha, dropout=lora.dropout,
                             target_modules=contract.lora_target_modules(model)))
    contract.apply_stage(model, policy.trainable, policy.lape)
    if train.gradient_checkpointing:
        model.activation_checkpointing_enable()
    model.to(device)
    build_s = time.perf_counter() - built

    # The data, the FLOPs and the parameter counts, before ZeRO-3 partitions the parameters.
    batches = [synthetic_batch(config, contract, args.micro_batch_size, args.text_tokens, seed=i).to(device)
               for i in range(args.grad_accum)]
    tokens_per_sample = [int(n) for b in batches for n in b.inputs["attention_mask"].sum(1).tolist()]
    flops = model_flops(model, config, tokens_per_sample)
    params = {g: sum(p.numel() for _, p in ps) for g, ps in contract.parameter_groups(model).items()}
    trainable_numel = sum(p.numel() for p in model.parameters() if p.requires_grad)

    # DeepSpeed exactly as the worker builds it.
    total_steps = args.warmup + args.steps
    engine = build_engine(model, contract, policy, train, ds, total_steps, use_gpu)

    step_s, cpu_s, losses, tokens, targets, samples = [], [], [], 0, 0, 0
    for step in range(total_steps):
        if step == args.warmup and use_gpu:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start, start_cpu = time.perf_counter(), time.process_time()
        outs = [micro_step(engine, batch) for batch in batches]
        if use_gpu:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        loss = sum(o.loss for o in outs) / len(outs)
        print(f"step {step + 1}/{total_steps}{' (warm-up)' if step < args.warmup else ''}: "
              f"{elapsed:.2f} s, loss {loss:.4f}", flush=True)
        if step >= args.warmup:
            step_s.append(elapsed)
            cpu_s.append(time.process_time() - start_cpu)
            losses.append(loss)
            tokens += sum(o.tokens for o in outs)
            targets += sum(o.target_tokens for o in outs)
            samples += sum(b.size for b in batches)

    timed = sum(step_s)
    flops_per_step = sum(flops.values())
    device_name = torch.cuda.get_device_name(0) if use_gpu else None
    peak, peak_source = peak_tflops(device_name, args.dtype, args.peak_tflops)
    achieved = flops_per_step * len(step_s) / timed
    if use_gpu:
        memory = {"peak_bytes": torch.cuda.max_memory_allocated(), "kind": "torch.cuda.max_memory_allocated, "
                  "timed steps"}
    else:
        memory = {"peak_bytes": _peak_rss_bytes(), "kind": "peak RSS of the process (ru_maxrss), whole run"}
    return {
        "benchmark": "train_step",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "machine": {"cpus": os.cpu_count(), "load_avg_at_start": load_start, "load_avg_at_end": os.getloadavg(),
                    "device": device_name or f"cpu ({_cpu_name()})",
                    "torch": torch.__version__, "deepspeed": deepspeed.__version__,
                    "python": platform.python_version(), "torch_threads": torch.get_num_threads()},
        "setup": {"shapes": args.shapes, "stage": train.stage, "trainable": sorted(policy.trainable),
                  "steps": args.steps, "warmup": args.warmup, "micro_batch_size": args.micro_batch_size,
                  "grad_accum": args.grad_accum, "zero": args.zero, "dtype": args.dtype, "world_size": 1,
                  "frames": config.num_frames, "sigma": config.sigma, "text_tokens": args.text_tokens,
                  "lape_init": config.lape_init,
                  "visual_tokens": config.video_seq_len, "seq_len": batches[0].inputs["input_ids"].shape[1],
                  "lora_r": lora.r, "gradient_checkpointing": train.gradient_checkpointing,
                  "model_build_s": build_s, "ds_config": engine.config},
        "params": {"by_group": params, "total": sum(params.values()),
                   "trainable": trainable_numel},
        "results": {"steps_timed": len(step_s), "step_seconds": step_s,
                    "step_seconds_median": statistics.median(step_s), "step_seconds_mean": timed / len(step_s),
                    "step_cpu_seconds": cpu_s, "step_cpu_seconds_median": statistics.median(cpu_s),
                    "tokens_per_s": tokens / timed, "target_tokens_per_s": targets / timed,
                    "samples_per_s": samples / timed, "tokens": tokens, "target_tokens": targets,
                    "samples": samples, "loss": losses, "peak_memory_bytes": memory["peak_bytes"],
                    "peak_memory_kind": memory["kind"]},
        "flops": {"formula": FLOPS_FORMULA, "model_flops_per_step": flops_per_step, "by_part_per_step": flops,
                  "achieved_tflops": achieved / 1e12},
        "mfu": None if peak is None else achieved / (peak * 1e12),
        "peak_tflops": peak, "peak_tflops_source": peak_source,
    }


def print_table(result: dict[str, Any]) -> None:
    r, s, f = result["results"], result["setup"], result["flops"]
    mfu = "null (" + result["peak_tflops_source"] + ")" if result["mfu"] is None else f"{result['mfu']:.2%}"
    rows = [
        ("shapes / dtype / ZeRO", f"{s['shapes']} / {s['dtype']} / {s['zero']}"),
        ("device", result["machine"]["device"]),
        ("micro-batch x accum, seq len", f"{s['micro_batch_size']} x {s['grad_accum']}, {s['seq_len']} "
                                         f"({s['visual_tokens']} visual, N = {s['frames']})"),
        ("params total / trainable", f"{result['params']['total']:,} / {result['params']['trainable']:,}"),
        ("steps timed (warm-up)", f"{r['steps_timed']} ({s['warmup']})"),
        ("s / step median (mean)", f"{r['step_seconds_median']:.3f} ({r['step_seconds_mean']:.3f})"),
        ("process CPU s / step median", f"{r['step_cpu_seconds_median']:.3f}"),
        ("tokens/s", f"{r['tokens_per_s']:.1f}"),
        ("target tokens/s", f"{r['target_tokens_per_s']:.2f}"),
        ("samples/s", f"{r['samples_per_s']:.3f}"),
        ("loss (last)", f"{r['loss'][-1]:.4f}"),
        ("peak memory (MiB)", f"{r['peak_memory_bytes'] / 2**20:,.0f}  [{r['peak_memory_kind']}]"),
        ("model TFLOP / step", f"{f['model_flops_per_step'] / 1e12:.4g}"),
        ("achieved TFLOP/s", f"{f['achieved_tflops']:.4g}"),
        ("MFU", mfu),
        ("load average start -> end", f"{result['machine']['load_avg_at_start'][0]:.2f} -> "
                                      f"{result['machine']['load_avg_at_end'][0]:.2f}"),
    ]
    width = max(len(k) for k, _ in rows)
    print()
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", choices=sorted(DEFAULTS), default="tiny")
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=1, help="optimizer steps run first and not timed")
    parser.add_argument("--micro-batch-size", type=int, default=1)
    parser.add_argument("--grad-accum", type=int, default=1, help="micro-steps per optimizer step")
    parser.add_argument("--zero", type=int, choices=(2, 3), default=2)
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default=None,
                        help="default: bf16 on GPU, fp32 on CPU (the platform's precision: auto)")
    parser.add_argument("--frames", type=int, default=None, help="N; default 100 for 7b, the preset's for tiny")
    parser.add_argument("--text-tokens", type=int, default=None, help="text tokens per sample (prompt + answer)")
    parser.add_argument("--lora-r", type=int, default=None, help="LoRA rank (alpha = 2r); default 8 tiny, 128 7b")
    parser.add_argument("--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false",
                        help="the platform's default is on")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="peak TFLOP/s of the device for the MFU (default: a table of known GPUs)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--lape-init", choices=("small", "release"), default="small",
                        help="how the LAPE tables start (model.overrides.lape_init)")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: benchmarks/results/train_step_<shapes>_<cpu|cuda>.json")
    args = parser.parse_args(argv)
    if min(args.steps, args.micro_batch_size, args.grad_accum, args.threads or 1) < 1 or args.warmup < 0:
        parser.error("--steps, --micro-batch-size, --grad-accum and --threads must be >= 1, --warmup >= 0")
    defaults = DEFAULTS[args.shapes]
    args.frames = args.frames if args.frames is not None else defaults["frames"]
    args.text_tokens = args.text_tokens if args.text_tokens is not None else defaults["text_tokens"]
    args.lora_r = args.lora_r if args.lora_r is not None else defaults["lora_r"]
    use_gpu = torch.cuda.is_available()
    if args.shapes == "7b" and not use_gpu:
        parser.error("--shapes 7b needs a CUDA GPU (8B parameters: 32 GB in fp32 before any activation)")
    args.dtype = args.dtype or ("bf16" if use_gpu else "fp32")
    if args.out is None:
        args.out = RESULTS / f"train_step_{args.shapes}_{'cuda' if use_gpu else 'cpu'}.json"
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # before deepspeed is imported
    result = run(args)
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {args.out}")
    if not all(math.isfinite(loss) for loss in result["results"]["loss"]):
        sys.exit("non-finite loss")
    return result


if __name__ == "__main__":
    main()
