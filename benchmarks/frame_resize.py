"""Video decode time and pixels of the two frame resizes (`data.frame_resize`): "decoder" against "exact".

    .venv/bin/python -m benchmarks.frame_resize [--frames 100] [--size 384] [--out ...json]

Encodes one H.264 clip (640 x 360, 300 frames, 30 fps) of textured, moving content (smooth noise drifting
across the frame, plus shapes), then decodes N frames at S x S with `decode_video` in both modes, `--repeats`
times each in one process with one decoder thread, and reports the median wall time per clip, and how far
the decoder-scaled pixels are from the exact ones (mean, 99th percentile and max absolute difference in grey
levels). Prints a table and writes JSON; it is not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "frame_resize.json"


def textured_clip(width: int = 640, height: int = 360, frames: int = 300, seed: int = 0) -> np.ndarray:
    """(frames, H, W, 3) uint8: a smooth random texture (sum of drifting sinusoids with random phases) and a
    moving bright disc, so that resampling filters differ as they do on camera footage, not on flat colour."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    waves = [(rng.uniform(0.01, 0.2), rng.uniform(0.01, 0.2), rng.uniform(0, 2 * np.pi), rng.uniform(-2, 2))
             for _ in range(12)]
    out = np.empty((frames, height, width, 3), np.uint8)
    for f in range(frames):
        base = sum(np.sin(fx * x + fy * y + phase + speed * f * 0.1) for fx, fy, phase, speed in waves)
        grey = (base - base.min()) / (np.ptp(base) + 1e-6)
        cx, cy = (50 + 2 * f) % width, height / 2 + 80 * np.sin(f / 20)
        disc = ((x - cx) ** 2 + (y - cy) ** 2 < 40**2).astype(np.float32)
        rgb = np.stack([grey, 0.6 * grey + 0.4 * disc, 1 - grey], axis=-1)
        out[f] = np.clip(rgb * 255 + rng.normal(0, 4, rgb.shape), 0, 255).astype(np.uint8)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=100, help="N frames sampled from the clip")
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    from llavast.data.media import FRAME_RESIZES, decode_video
    from llavast.data.synth_media import encode_mp4

    load_start = os.getloadavg()
    clip = textured_clip()
    data = encode_mp4(clip, fps=30)
    frames, seconds = {}, {}
    for mode in FRAME_RESIZES:
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            frames[mode] = decode_video(data, args.frames, args.size, resize=mode)
            times.append(time.perf_counter() - start)
        seconds[mode] = times
    diff = np.abs(frames["decoder"].astype(int) - frames["exact"].astype(int))
    pixels = {"mean": float(diff.mean()), "p99": float(np.percentile(diff, 99)), "max": int(diff.max())}

    print(f"clip {clip.shape[2]}x{clip.shape[1]}, {clip.shape[0]} frames, {len(data) / 1e6:.1f} MB; "
          f"N = {args.frames} at {args.size} px, {args.repeats} repeats")
    print(f"{'mode':10s}{'median s':>10s}{'min s':>8s}")
    for mode in FRAME_RESIZES:
        print(f"{mode:10s}{statistics.median(seconds[mode]):10.3f}{min(seconds[mode]):8.3f}")
    print(f"decoder vs exact, grey levels: mean {pixels['mean']:.2f}, p99 {pixels['p99']:.0f}, max {pixels['max']}")
    results = {"machine": {"cpus": os.cpu_count(), "load_avg_at_start": load_start, "load_avg_at_end": os.getloadavg()},
               "date": time.strftime("%Y-%m-%d"),
               "clip": {"width": clip.shape[2], "height": clip.shape[1], "frames": clip.shape[0], "bytes": len(data)},
               "frames": args.frames, "size": args.size, "seconds": seconds,
               "median_seconds": {m: statistics.median(t) for m, t in seconds.items()},
               "decoder_vs_exact_grey_levels": pixels}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
