"""benchmarks/train_step.py runs at tiny shapes on CPU (real DeepSpeed ZeRO-2, one process) and its JSON holds
what it measured; its FLOP formula agrees with the STP benchmark's, and the peak table resolves as documented."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.stp_benchmark import forward_gflop
from benchmarks.train_step import model_config, peak_tflops, stp_forward_flops

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_tiny_run_writes_what_it_measured(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    cmd = [sys.executable, "-m", "benchmarks.train_step", "--shapes", "tiny", "--steps", "2", "--warmup", "1",
           "--micro-batch-size", "2", "--threads", "1", "--peak-tflops", "0.5", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "DS_ACCELERATOR": "cpu"}, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tokens/s" in proc.stdout and "MFU" in proc.stdout  # the table was printed
    result = json.loads(out.read_text())

    setup, r, flops = result["setup"], result["results"], result["flops"]
    assert (setup["shapes"], setup["zero"], setup["dtype"], setup["world_size"]) == ("tiny", 2, "fp32", 1)
    assert setup["trainable"] == ["lape", "lora", "stp"]  # stage 2's policy
    assert setup["ds_config"]["zero_optimization"]["stage"] == 2
    assert result["params"]["trainable"] == sum(result["params"]["by_group"][g] for g in ("lape", "lora", "stp"))
    # two timed steps of one micro-step of 2 samples, every token non-pad
    assert r["steps_timed"] == len(r["step_seconds"]) == len(r["loss"]) == 2
    assert r["samples"] == 4 and r["tokens"] == 4 * setup["seq_len"]
    assert setup["seq_len"] == setup["visual_tokens"] + setup["text_tokens"]
    assert 0 < r["target_tokens"] <= 4 * setup["text_tokens"]
    assert all(s > 0 for s in r["step_seconds"]) and all(math.isfinite(loss) for loss in r["loss"])
    timed = sum(r["step_seconds"])
    assert r["tokens_per_s"] == pytest.approx(r["tokens"] / timed)
    assert r["samples_per_s"] == pytest.approx(4 / timed)
    assert r["step_seconds_median"] > 0 and len(r["step_cpu_seconds"]) == 2 and r["peak_memory_bytes"] > 100 * 2**20
    assert all(v > 0 for v in flops["by_part_per_step"].values())
    assert flops["model_flops_per_step"] == sum(flops["by_part_per_step"].values())
    assert flops["achieved_tflops"] == pytest.approx(flops["model_flops_per_step"] * 2 / timed / 1e12)
    assert result["peak_tflops"] == 0.5 and result["mfu"] == pytest.approx(flops["achieved_tflops"] / 0.5)
    assert result["machine"]["load_avg_at_start"] and result["git_commit"]


def test_stp_flops_match_the_stp_benchmark() -> None:
    config = model_config("7b", 100)
    assert stp_forward_flops(config) == pytest.approx(forward_gflop(3584, 100) * 1e9)
    assert config.video_seq_len == 2520 and config.hidden_size == 3584


def test_peak_tflops() -> None:
    assert peak_tflops(None, "fp32", None)[0] is None
    assert peak_tflops(None, "fp32", 2.0) == (2.0, "--peak-tflops")
    assert peak_tflops("NVIDIA H200", "bf16", None)[0] == 989.0
    assert peak_tflops("NVIDIA A100-SXM4-80GB", "bf16", None)[0] == 312.0
    assert peak_tflops("NVIDIA H100 PCIe", "bf16", None)[0] == 756.0
    assert peak_tflops("Some GPU", "bf16", None)[0] is None
