"""Sample device memory per GPU and per process (NVML) while a command runs: ``loraplan watch -- CMD``.

NVML (``pynvml`` from nvidia-ml-py) is passed in or imported here; tests inject a fake module. The
command's processes are its pid and every descendant (Linux ``/proc/<pid>/stat`` parent links, read
each sample), so a launcher such as ``accelerate launch`` or ``torchrun`` is followed to its workers.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from planner.errors import PlannerError
from planner.specs import GIB
from probes.watch_results import GpuPeak, ProcessPeak, WatchResult

NO_NVML = ("no NVIDIA GPU visible through NVML (pip install nvidia-ml-py, and a driver), so watch cannot "
           "sample device memory; the command was not run")


class NoNvmlError(PlannerError):
    """NVML missing or no device: the CLI prints one line and exits 1 without running the command."""

    exit_code = 1


def load_nvml() -> Any:
    """The initialised ``pynvml`` module with at least one device.

    Raises:
        NoNvmlError: not installed, no driver, or no device.
    """
    try:
        import pynvml
    except ImportError:
        raise NoNvmlError(NO_NVML) from None
    try:
        pynvml.nvmlInit()
        if pynvml.nvmlDeviceGetCount() < 1:
            raise NoNvmlError(NO_NVML)
    except NoNvmlError:
        raise
    except Exception:  # NVMLError_LibraryNotFound / DriverNotLoaded
        raise NoNvmlError(NO_NVML) from None
    return pynvml


def descendants(root: int, proc: Path = Path("/proc")) -> set[int]:
    """``root`` and every live descendant, from the parent pid in ``/proc/<pid>/stat``."""
    children: dict[int, list[int]] = {}
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit():
            continue
        with suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])  # after "pid (comm) state"
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


@dataclass
class _Gpu:
    index: int
    handle: Any
    name: str
    total: float
    baseline: float
    peak_device: float = 0.0
    peak_device_at: float = 0.0
    peak_job: float = 0.0
    peak_job_at: float = 0.0
    processes: dict[int, tuple[float, bool]] = field(default_factory=dict)

    def result(self) -> GpuPeak:
        procs = [ProcessPeak(pid=p, peak_gib=round(b / GIB, 4), job=j) for p, (b, j) in sorted(self.processes.items())]
        return GpuPeak(index=self.index, name=self.name, total_gib=round(self.total / GIB, 3),
                       baseline_gib=round(self.baseline / GIB, 4), peak_device_gib=round(self.peak_device / GIB, 4),
                       peak_device_at_s=round(self.peak_device_at, 3), peak_job_gib=round(self.peak_job / GIB, 4),
                       peak_job_at_s=round(self.peak_job_at, 3), processes=procs)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _processes(nvml: Any, handle: Any) -> list[Any]:
    procs: list[Any] = []
    with suppress(Exception):
        procs += list(nvml.nvmlDeviceGetComputeRunningProcesses(handle))
    with suppress(Exception):
        procs += list(nvml.nvmlDeviceGetGraphicsRunningProcesses(handle))
    return procs


def sample(nvml: Any, gpus: list[_Gpu], job: set[int], at_s: float) -> None:
    """Read every GPU once and update the peaks (``at_s``: seconds since the command started)."""
    for gpu in gpus:
        used = float(nvml.nvmlDeviceGetMemoryInfo(gpu.handle).used)
        if used > gpu.peak_device:
            gpu.peak_device, gpu.peak_device_at = used, at_s
        job_bytes = 0.0
        for p in _processes(nvml, gpu.handle):
            b = float(p.usedGpuMemory or 0)
            mine = p.pid in job
            job_bytes += b if mine else 0.0
            old = gpu.processes.get(p.pid, (0.0, mine))
            gpu.processes[p.pid] = (max(old[0], b), old[1] or mine)
        if job_bytes > gpu.peak_job:
            gpu.peak_job, gpu.peak_job_at = job_bytes, at_s


def watch(command: Sequence[str], interval_s: float = 0.1, nvml: Any = None,
          popen: Callable[..., Any] = subprocess.Popen,
          clock: Callable[[], float] = time.monotonic,
          children: Callable[[int], set[int]] = descendants) -> WatchResult:
    """Run ``command``, sample NVML every ``interval_s`` until it exits, and return the peaks.

    Raises:
        NoNvmlError: no NVML device (the command is not run).
        PlannerError: the command cannot be started.
    """
    nvml = nvml or load_nvml()
    gpus = []
    for i in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(i)
        info = nvml.nvmlDeviceGetMemoryInfo(handle)
        gpus.append(_Gpu(i, handle, _text(nvml.nvmlDeviceGetName(handle)), float(info.total), float(info.used)))
    start = clock()
    try:
        child = popen(list(command))
    except OSError as err:
        raise PlannerError(f"cannot run {command[0]}: {err.strerror or err}") from None
    samples = 0
    job = {child.pid}
    while True:
        done = child.poll() is not None
        if not done:
            job |= children(child.pid)
        sample(nvml, gpus, job, clock() - start)
        samples += 1
        if done:
            break
        time.sleep(interval_s)
    code = child.returncode
    exit_code = code if code >= 0 else 128 - code  # killed by signal N: 128 + N, as a shell reports it
    results = [g.result() for g in gpus]
    return WatchResult(command=list(command), exit_code=exit_code, seconds=round(clock() - start, 3),
                       interval_s=interval_s, samples=samples, gpus=results,
                       peak_job_gib=max((g.peak_job_gib for g in results), default=0.0))
