"""The fusion benchmark scripts: GPU throughput skips cleanly without a GPU and runs its code path on CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the skip path does not apply")
def test_gpu_throughput_skips_without_gpu() -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_gpu_throughput.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert lines[0].startswith("SKIP")
    assert json.loads(lines[-1]) == {"benchmark": "gpu_throughput", "skipped": True, "reason": "no CUDA GPU"}


@pytest.mark.slow
def test_gpu_throughput_code_path_on_cpu() -> None:
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_gpu_throughput.py"),
            "--device",
            "cpu",
            "--preset",
            "tiny",
            "--batch",
            "2",
            "--seq-len",
            "64",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--entities",
            "1000",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["skipped"] is False and result["tokens_per_s"] > 0 and result["flops_per_token"] > 0
    assert 0 <= result["mfu"] < 1 and result["matmul_params"] > 0
