"""``MemoryCallback``: record a real ``transformers.Trainer`` run's device memory in the probe result format.

Usage::

    from probes.callbacks import MemoryCallback
    trainer = Trainer(..., callbacks=[MemoryCallback("run.json")])

After training, ``run.json`` is a :class:`probes.results.ProbeResult` (``mode="gpu"``) with the peak
``torch.cuda.max_memory_allocated``/``max_memory_reserved`` over the steps, the per-step peaks
(``step_memory``; the peak counters are reset after every optimizer step, so each entry covers one
step: forward, backward, optimizer) and a ``calibration`` object that ``loraplan estimate --calibrate
run.json`` reads. The CUDA context is NVML's use of this process minus ``torch.cuda.memory_reserved``
at train begin (as the GPU probe measures it, :mod:`probes.gpu`); without NVML it falls back to
``mem_get_info`` (device used minus reserved, which also counts other processes).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from planner.calibration import Calibration
from planner.catalog import match_gpu
from planner.specs import GIB
from probes import detect
from probes.results import Environment, MeasuredGiB, ProbeResult, StepMemory


class MemoryCallback(TrainerCallback):
    """Per-step CUDA memory peaks of a Trainer run, written as a probe result at train end.

    Args:
        path: where to write the result (JSON) at ``on_train_end``; None: only :meth:`result`.
        model: the model name stored in the result [default: the model config's ``_name_or_path``].
    """

    def __init__(self, path: str | Path | None = None, model: str | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.model = model
        self.steps: list[StepMemory] = []
        self.after_load: float | None = None
        self.context: float | None = None
        self.device_peak: float | None = None
        self._index = 0
        self._started = 0.0

    # ------------------------------------------------------------------ Trainer events

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        """Read the loaded model's memory and the CUDA context; reset the peak counters."""
        if self.model is None and model is not None:
            self.model = getattr(getattr(model, "config", None), "_name_or_path", None)
        self._index = torch.cuda.current_device()
        self.after_load = float(torch.cuda.memory_allocated(self._index))
        reserved = float(torch.cuda.memory_reserved(self._index))
        used = detect.nvml_process_used_bytes(self._index)
        if used is None:
            free, total = torch.cuda.mem_get_info(self._index)
            used = float(total - free)
        self.context = max(0.0, used - reserved)
        torch.cuda.reset_peak_memory_stats(self._index)
        self._started = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Record this step's peaks, then reset them so the next entry covers the next step only."""
        now = time.perf_counter()
        self.steps.append(StepMemory(
            step=int(state.global_step),
            allocated_gib=torch.cuda.max_memory_allocated(self._index) / GIB,
            reserved_gib=torch.cuda.max_memory_reserved(self._index) / GIB,
            seconds=round(now - self._started, 4)))
        used = detect.nvml_process_used_bytes(self._index)
        if used is not None:
            self.device_peak = max(self.device_peak or 0.0, used)
        torch.cuda.reset_peak_memory_stats(self._index)
        self._started = now

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Write the result (main process only)."""
        if self.path is not None and getattr(state, "is_world_process_zero", True):
            self.path.write_text(self.result().model_dump_json(indent=2) + "\n")

    # ------------------------------------------------------------------ result

    def result(self) -> ProbeResult:
        """The steps so far as a :class:`ProbeResult` (``calibration`` once a step has run)."""
        peak_alloc = max((s.allocated_gib for s in self.steps), default=None)
        peak_res = max((s.reserved_gib for s in self.steps), default=None)
        name = torch.cuda.get_device_name(self._index)
        total_gib = torch.cuda.get_device_properties(self._index).total_memory / GIB
        profile = match_gpu(name, total_gib)
        calibration = None
        if peak_alloc and peak_res is not None and self.context is not None:
            reserve = max(0.0, peak_res - peak_alloc)
            calibration = Calibration(gpu=name, profile=profile.name if profile else None,
                                      cuda_context_gib=self.context / GIB, allocator_reserve_gib=reserve,
                                      allocator_reserve_fraction=reserve / peak_alloc)
        return ProbeResult(
            model=self.model or "unknown", mode="gpu",
            measured_gib=MeasuredGiB(
                after_load=None if self.after_load is None else self.after_load / GIB,
                peak_allocated=peak_alloc, peak_reserved=peak_res,
                device=None if self.device_peak is None else self.device_peak / GIB),
            environment=Environment(gpu=name, torch=torch.__version__, python=sys.version.split()[0],
                                    command=list(sys.argv)),
            fits=True, calibration=calibration, step_memory=list(self.steps))
