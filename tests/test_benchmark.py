"""Speed, measured with pytest-benchmark (no timed asserts): one in-process estimate, and the shell
command from the README next to ``python -c "import torch"`` for scale."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys

import pytest

from planner.catalog import load_gpu, load_model
from planner.estimator import estimate
from planner.specs import TrainSpec


def test_estimate_in_process(benchmark) -> None:
    model, gpu, spec = load_model("llama-3-8b"), load_gpu("4090"), TrainSpec()
    est = benchmark(estimate, model, spec, gpu)
    assert est.fits


def test_recommend_with_gpu_count_search(benchmark) -> None:
    """Full ``recommend`` with the GPU-count x strategy search (``--max-gpus 16``): must stay under 0.5 s."""
    from planner.recommender import make_request, recommend

    request = make_request(methods=["full"], max_gpus=16, examples=10000, avg_tokens=1024)
    rec = benchmark(recommend, "llama-3-70b", "h100", request=request)
    assert rec.plans and rec.plans[0].parallel is not None


def _loraplan() -> list[str]:
    exe = shutil.which("loraplan")
    return [exe] if exe else [sys.executable, "-m", "planner"]


def test_cli_estimate_wall(benchmark) -> None:
    cmd = _loraplan() + ["estimate", "llama-3-8b", "--gpu", "4090"]
    result = benchmark.pedantic(subprocess.run, args=(cmd,), kwargs={"capture_output": True}, rounds=5, iterations=1)
    assert result.returncode == 0


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
def test_import_torch_wall(benchmark) -> None:
    """Reference point: the estimate must be several times faster than importing torch."""
    cmd = [sys.executable, "-c", "import torch"]
    result = benchmark.pedantic(subprocess.run, args=(cmd,), kwargs={"capture_output": True}, rounds=3, iterations=1)
    assert result.returncode == 0
