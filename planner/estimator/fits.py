"""The one "does it fit" rule, shared by ``estimate``, its advice and ``recommend``.

A configuration fits a GPU when its device peak (what nvidia-smi would show for the process) stays
within the GPU's *budget*: the memory a process can use (nvidia-smi's total less what the driver
reserves) less a headroom fraction kept free for what no estimate sees (fragmentation beyond the
modeled allocator reserve, kernels' lazily loaded modules, other processes). The headroom is a
policy, stated in every output; ``--headroom 0`` compares against the usable memory itself.
"""

from __future__ import annotations

from planner.catalog import runtime_constants
from planner.errors import PlannerError
from planner.specs import GpuProfile

DEFAULT_HEADROOM = 0.1
"""Fraction of the usable memory kept free by default (``estimate`` and ``recommend`` alike)."""


def usable_gib(gpu: GpuProfile) -> float:
    """Memory a process can use: nvidia-smi's total less what the driver reserves (profiles/runtime.json)."""
    reserved = runtime_constants()["driver_reserved_mib"]
    return gpu.memory_gib - reserved["by_gpu"].get(gpu.name, reserved["default"]) / 1024.0


def check_headroom(headroom: float) -> float:
    """``headroom`` if it is a fraction in [0, 1), else a one-line error."""
    if not (isinstance(headroom, (int, float)) and not isinstance(headroom, bool) and 0 <= headroom < 1):
        raise PlannerError(f"--headroom is a fraction of usable GPU memory in [0, 1), got {headroom}")
    return float(headroom)


def budget_gib(gpu: GpuProfile, headroom: float = DEFAULT_HEADROOM) -> float:
    """What a device peak must stay under on ``gpu``: usable memory x (1 - headroom)."""
    return usable_gib(gpu) * (1.0 - check_headroom(headroom))


def fits(device_gib: float, gpu: GpuProfile, headroom: float = DEFAULT_HEADROOM) -> bool:
    return device_gib <= budget_gib(gpu, headroom)
