"""Visible GPUs: name, memory, compute capability, bf16, driver/CUDA versions, other processes.

NVML (``nvidia-ml-py``, imported as ``pynvml``) is read first and without creating a CUDA
context, so "other processes" is what they hold before this process touches the GPU; without NVML
the same fields come from ``torch.cuda`` (``mem_get_info`` then includes this process's context).
"""

from __future__ import annotations

import os
from contextlib import suppress
from typing import Any

from planner.catalog import match_gpu
from planner.errors import PlannerError
from planner.specs import GIB
from probes.results import GpuInfo

NO_GPU_MESSAGE = (
    "no CUDA GPU is visible, so the real probe cannot run; "
    "`loraplan probe MODEL --trace` measures the same step on CPU fake tensors instead"
)


class NoGpuError(PlannerError):
    """No CUDA device: the CLI prints the message and exits 1."""

    exit_code = 1


def _nvml() -> Any | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver / no permission: fall back to torch
        return None
    return pynvml


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def nvml_driver_versions() -> tuple[str | None, str | None]:
    """(driver version, CUDA version the driver supports) from NVML, or (None, None)."""
    nvml = _nvml()
    if nvml is None:
        return None, None
    driver = cuda = None
    with suppress(Exception):
        driver = _text(nvml.nvmlSystemGetDriverVersion())
    with suppress(Exception):
        v = nvml.nvmlSystemGetCudaDriverVersion_v2()
        cuda = f"{v // 1000}.{(v % 1000) // 10}"
    return driver, cuda


def nvml_process_used_bytes(index: int, pid: int | None = None) -> float | None:
    """Device memory NVML attributes to ``pid`` (this process by default) on GPU ``index``, or None."""
    nvml = _nvml()
    if nvml is None:
        return None
    pid = os.getpid() if pid is None else pid
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        procs = list(nvml.nvmlDeviceGetComputeRunningProcesses(handle))
        with suppress(Exception):
            procs += list(nvml.nvmlDeviceGetGraphicsRunningProcesses(handle))
    except Exception:
        return None
    for p in procs:
        if p.pid == pid and p.usedGpuMemory is not None:
            return float(p.usedGpuMemory)
    return None


_BASELINE_USED: dict[int, float] = {}
"""Device-wide NVML use read before this process created its CUDA context, per GPU index."""


def nvml_device_used_bytes(index: int) -> float | None:
    """Device-wide used memory per NVML (all processes + context), or None."""
    nvml = _nvml()
    if nvml is None:
        return None
    try:
        used = float(nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByIndex(index)).used)
    except Exception:
        return None
    if index not in _BASELINE_USED and not _cuda_initialized():
        _BASELINE_USED[index] = used
    return used


def baseline_device_used_bytes(index: int) -> float | None:
    """What other processes held on GPU ``index`` before this process touched it (NVML), or None."""
    if index not in _BASELINE_USED:
        nvml_device_used_bytes(index)
    return _BASELINE_USED.get(index)


def _cuda_initialized() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_initialized())


def _nvml_gpus(nvml: Any) -> list[dict[str, Any]]:
    me = os.getpid()
    out = []
    for i in range(nvml.nvmlDeviceGetCount()):
        h = nvml.nvmlDeviceGetHandleByIndex(i)
        mem = nvml.nvmlDeviceGetMemoryInfo(h)
        procs: list[Any] = []
        with suppress(Exception):
            procs += list(nvml.nvmlDeviceGetComputeRunningProcesses(h))
        with suppress(Exception):
            procs += list(nvml.nvmlDeviceGetGraphicsRunningProcesses(h))
        others = sum(float(p.usedGpuMemory or 0) for p in procs if p.pid != me)
        major, minor = nvml.nvmlDeviceGetCudaComputeCapability(h)
        out.append({
            "name": _text(nvml.nvmlDeviceGetName(h)),
            "total": float(mem.total),
            "free": float(mem.free),
            "cc": f"{major}.{minor}",
            "others": others,
        })
    return out


def detect_gpus() -> list[GpuInfo]:
    """Every visible CUDA GPU (empty when there is none).

    Raises:
        PlannerError: torch is not installed (the ``probe`` extra).
    """
    try:
        import torch
    except ImportError:
        raise PlannerError("the probe needs torch: pip install 'loraplan[probe]'") from None
    nvml = _nvml()
    nvml_info: list[dict[str, Any]] = []
    if nvml is not None:
        with suppress(Exception):
            nvml_info = _nvml_gpus(nvml)
        for i in range(len(nvml_info)):
            baseline_device_used_bytes(i)  # before torch creates a CUDA context
    if not torch.cuda.is_available():
        return []
    driver, cuda_driver = nvml_driver_versions()
    gpus = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        cc = f"{props.major}.{props.minor}"
        info = nvml_info[i] if i < len(nvml_info) else None
        if info is not None:
            total, free, others, source = info["total"], info["free"], info["others"], "nvml"
        else:
            free_b, total_b = torch.cuda.mem_get_info(i)
            total, free = float(total_b), float(free_b)
            others = total - free - float(torch.cuda.memory_reserved(i))
            source = "torch"
        profile = match_gpu(props.name, props.total_memory / GIB)
        gpus.append(GpuInfo(
            index=i,
            name=props.name,
            total_gib=total / GIB,
            free_gib=free / GIB,
            compute_capability=cc,
            bf16=props.major >= 8,
            driver=driver,
            cuda=cuda_driver or torch.version.cuda,
            other_processes_gib=max(others, 0.0) / GIB,
            source=source,
            profile=profile.name if profile else None,
        ))
    return gpus


def require_gpu() -> list[GpuInfo]:
    """The visible GPUs, or :class:`NoGpuError` pointing to ``--trace``."""
    gpus = detect_gpus()
    if not gpus:
        raise NoGpuError(NO_GPU_MESSAGE)
    return gpus
