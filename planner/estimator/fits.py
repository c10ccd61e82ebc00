"""The one "does it fit" rule: the device peak against the memory a process can use on the GPU."""

from __future__ import annotations

from planner.catalog import runtime_constants
from planner.specs import GpuProfile


def usable_gib(gpu: GpuProfile) -> float:
    """Memory a process can use: nvidia-smi's total less what the driver reserves (profiles/runtime.json)."""
    reserved = runtime_constants()["driver_reserved_mib"]
    return gpu.memory_gib - reserved["by_gpu"].get(gpu.name, reserved["default"]) / 1024.0
