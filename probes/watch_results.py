"""Result model of ``loraplan watch`` (pydantic only: the JSON Schema is built without NVML or torch)."""

from __future__ import annotations

from planner.specs import Frozen


class ProcessPeak(Frozen):
    """Peak NVML memory of one process on one GPU."""

    pid: int
    peak_gib: float
    job: bool
    """The watched command or one of its descendants."""


class GpuPeak(Frozen):
    """One GPU over the run: peaks and when they happened (seconds since the command started)."""

    index: int
    name: str
    total_gib: float
    baseline_gib: float
    """Device use before the command started (other processes, the driver)."""
    peak_device_gib: float
    """Peak of NVML ``used`` (every process, CUDA contexts included)."""
    peak_device_at_s: float
    peak_job_gib: float
    """Peak of the sum over the command's processes (NVML per-process ``usedGpuMemory``)."""
    peak_job_at_s: float
    processes: list[ProcessPeak] = []


class WatchResult(Frozen):
    """``loraplan watch --json OUT``."""

    command: list[str]
    exit_code: int
    seconds: float
    interval_s: float
    samples: int
    gpus: list[GpuPeak]
    peak_job_gib: float
    """Largest per-GPU job peak."""
    estimate: dict | None = None
    """``loraplan estimate --json`` of ``--model`` with the given options, when given."""
