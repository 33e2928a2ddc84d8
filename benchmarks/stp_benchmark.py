"""STP forward+backward time and peak memory: the vectorised packer vs the per-window loop.

Shape: one video at the paper's defaults (N=100 frames, 27x27 grid, k1=9, k2=3, sigma=20, E=1024, 8 heads),
fp32, at each LLM width D of ``--dims``; the input needs no grad (stage 1: only the STP trains). Each case
runs in a fresh process, so its peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is
its own; "above setup" subtracts the RSS after the packer and its input were built. The loop baseline
(benchmarks/stp_loop_baseline.py) is timed on ``--loop-frames`` frames (temporal windows of N/sigma
frames kept) and scaled by N / loop_frames: every window costs the same and their count is proportional
to the frames, so the scaling is linear; its memory is that of the subset and is reported as such.

Run from the repository root:  .venv/bin/python -m benchmarks.stp_benchmark --dims 896 3584 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from transformers import Qwen2Config, SiglipVisionConfig

from model_zoo.llava_st.config import LlavaSTConfig
from model_zoo.llava_st.stp import SpatialTemporalPacker

GRID, FRAMES, K1, K2, SIGMA, WIDTH, HEADS = 27, 100, 9, 3, 20, 1024, 8


def stp_config(dim: int, frames: int) -> LlavaSTConfig:
    """The default packing geometry at LLM width ``dim``; only the STP-relevant fields matter here."""
    vision = SiglipVisionConfig(image_size=GRID * 14, patch_size=14)
    text = Qwen2Config(hidden_size=dim)
    return LlavaSTConfig(vision_config=vision, text_config=text, num_frames=frames, k1=K1, k2=K2,
                         sigma=frames * SIGMA // FRAMES, stp_width=WIDTH, stp_heads=HEADS)


def forward_gflop(dim: int, frames: int) -> float:
    """Matmul FLOPs of one STP forward (projections, attention, output); backward is about twice this."""
    e = WIDTH
    sigma = frames * SIGMA // FRAMES

    def packer(queries: int, keys: int, region: int) -> int:
        mlp = dim * e + e * e
        return 2 * (queries * (mlp + 2 * e * e + e * dim) + 2 * keys * (mlp + e * e) + 2 * queries * region * e)

    flops = (packer(frames * K1 * K1, frames * GRID * GRID, (GRID // K1) ** 2)
             + packer(frames * K2 * K2, frames * K1 * K1, (K1 // K2) ** 2)
             + packer(sigma * K1 * K1, frames * K1 * K1, FRAMES // SIGMA))
    return flops / 1e9


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _run_case(impl: str, dim: int, frames: int, repeats: int, threads: int, queue: mp.Queue) -> None:
    """In a fresh process: build, warm up once (the vectorised packer only: the loop's hundreds of windows
    amortise first-call costs), then time ``repeats`` forward+backward passes."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    stp = SpatialTemporalPacker(stp_config(dim, frames))
    x = torch.randn(frames, GRID * GRID, dim)
    if impl == "loop":
        from benchmarks.stp_loop_baseline import stp_loop

        def step():
            return stp_loop(stp, x)
    else:
        def step():
            return stp(x)
    setup_kib = _rss_kib()
    warmup = int(impl != "loop")
    times, cpu_times = [], []
    for i in range(repeats + warmup):
        stp.zero_grad(set_to_none=True)
        start, cpu_start = time.perf_counter(), time.process_time()
        f_s, f_t = step()
        (f_s.square().mean() + f_t.square().mean()).backward()
        if i >= warmup:
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put(dict(times_s=times, cpu_times_s=cpu_times, setup_rss_mib=setup_kib / 1024,
                   peak_rss_mib=peak_kib / 1024))


def measure(impl: str, dim: int, frames: int, repeats: int, threads: int) -> dict:
    load_before, started = os.getloadavg()[0], _now()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_run_case, args=(impl, dim, frames, repeats, threads, queue))
    proc.start()
    result = queue.get()
    proc.join()
    scale = FRAMES / frames
    median = statistics.median(result["times_s"])
    cpu_median = statistics.median(result["cpu_times_s"])
    return dict(impl=impl, dim=dim, started=started, frames_run=frames, scale=scale, repeats=repeats,
                times_s=result["times_s"], median_s=median, full_video_s=median * scale,
                cpu_times_s=result["cpu_times_s"], full_video_cpu_s=cpu_median * scale,
                forward_gflop_full=forward_gflop(dim, FRAMES),
                setup_rss_mib=result["setup_rss_mib"], peak_rss_mib=result["peak_rss_mib"],
                peak_above_setup_mib=result["peak_rss_mib"] - result["setup_rss_mib"],
                load_1min_before_after=(load_before, os.getloadavg()[0]))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def machine_info(threads: int) -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kib = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                       if line.startswith("MemTotal")))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return dict(cpu=cpu, cpu_count=os.cpu_count(), torch_threads=threads, memory_gib=round(mem_kib / 2**20, 1),
                python=platform.python_version(), torch=torch.__version__, platform=platform.platform(),
                git_commit=commit, load_average_start=os.getloadavg())


def table(rows: list[dict]) -> str:
    lines = ["| D | implementation | frames timed | fwd+bwd wall (s) | fwd+bwd CPU (s) | CPU vs vectorised | "
             "peak RSS (MiB) | above setup (MiB) | load before/after |",
             "|---|---|---|---|---|---|---|---|---|"]
    vec = {r["dim"]: r["full_video_cpu_s"] for r in rows if r["impl"] == "vectorised"}
    for r in rows:
        frames = f"{r['frames_run']}" + (f" (x{r['scale']:g})" if r["scale"] != 1 else "")
        speed = f"{r['full_video_cpu_s'] / vec[r['dim']]:.1f}x" if r["dim"] in vec else "-"
        mem_note = "" if r["scale"] == 1 else f" ({r['frames_run']} frames)"
        lines.append(f"| {r['dim']} | {r['impl']} | {frames} | {r['full_video_s']:.1f} | "
                     f"{r['full_video_cpu_s']:.1f} | {speed} | "
                     f"{r['peak_rss_mib']:.0f}{mem_note} | {r['peak_above_setup_mib']:.0f}{mem_note} | "
                     "{:.1f} / {:.1f} |".format(*r["load_1min_before_after"]))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[896, 3584], help="LLM widths D to time")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per case, after one warm-up")
    parser.add_argument("--loop-frames", type=int, default=5,
                        help="frames the loop baseline runs on (a multiple of N/sigma = 5), scaled to N=100")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads")
    parser.add_argument("--impls", nargs="+", choices=["vectorised", "loop"], default=["vectorised", "loop"])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/stp_cpu.json"))
    parser.add_argument("--update", action="store_true",
                        help="keep --out's other rows and replace only the (impl, D) cases measured now")
    args = parser.parse_args()
    if args.loop_frames % (FRAMES // SIGMA) or not 0 < args.loop_frames <= FRAMES:
        parser.error(f"--loop-frames must be a multiple of {FRAMES // SIGMA} in (0, {FRAMES}]")

    info = machine_info(args.threads)
    rows = []
    for dim in args.dims:
        for impl in args.impls:
            frames, repeats = (FRAMES, args.repeats) if impl == "vectorised" else (args.loop_frames, 1)
            rows.append(measure(impl, dim, frames, repeats, args.threads))
            print(table(rows) + "\n", flush=True)
    info["load_average_end"] = os.getloadavg()
    if args.update and args.out.exists():
        measured = {(r["impl"], r["dim"]) for r in rows}
        kept = [r for r in json.loads(args.out.read_text())["results"] if (r["impl"], r["dim"]) not in measured]
        rows = sorted(kept + rows, key=lambda r: (r["dim"], r["impl"] != "vectorised"))
        print(table(rows))
    result = dict(benchmark="stp_forward_backward", date=_now(),
                  shape=dict(frames=FRAMES, grid=GRID, k1=K1, k2=K2, sigma=SIGMA, width=WIDTH, heads=HEADS,
                             dtype="float32", input_requires_grad=False),
                  time_method="median over repeats of wall (perf_counter) and process CPU time (process_time, "
                              "all threads) per forward+backward pass",
                  memory_method="peak RSS of a fresh process per case (resource.getrusage ru_maxrss)",
                  loop_scaling="loop timed on frames_run frames and scaled linearly by frames/frames_run",
                  machine=info, results=rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
