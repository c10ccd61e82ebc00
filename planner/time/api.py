"""``tokens_per_second``: the time model's one-call entry point."""

from __future__ import annotations

from planner.catalog import load_gpu, load_model
from planner.specs import GpuProfile, ModelProfile, TrainSpec
from planner.time.mfu import utilization
from planner.time.schemas import Utilization
from planner.time.step import time_breakdown


def tokens_per_second(
    model: ModelProfile | str, train: TrainSpec, gpu: GpuProfile | str, util: Utilization | None = None
) -> float:
    """Training tokens per second of ``train`` on ``gpu`` (single GPU).

    Args:
        model: profile or name (anything :func:`planner.load_model` resolves).
        train: the configuration.
        gpu: profile or name.
        util: utilization to run at; default: :func:`planner.time.utilization` for the GPU and method.
    """
    profile = load_model(model) if isinstance(model, str) else model
    gpu_profile = load_gpu(gpu) if isinstance(gpu, str) else gpu
    util = util or utilization(gpu_profile, train.method)
    return time_breakdown(profile.config, train, gpu_profile, util).tokens_per_s
