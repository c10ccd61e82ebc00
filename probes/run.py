"""``loraplan probe``: estimate, measure (GPU or CPU trace), compare; returns a :class:`ProbeResult`."""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable
from importlib import metadata
from typing import Any

from pydantic import Field

from planner.calibration import Calibration
from planner.catalog import load_gpu, match_gpu, raw_config
from planner.errors import PlannerError
from planner.estimator import estimate, estimate_with_advice, usable_gib
from planner.results import Estimate
from planner.specs import GIB, Frozen, GpuProfile, TrainSpec
from planner.stack.optimizers import optimizer_info
from probes.results import (
    ComponentRow,
    Environment,
    ErrorPct,
    GpuDetail,
    MaxBatch,
    MeasuredGiB,
    ProbeResult,
    error_pct,
)
from probes.search import estimated_max_batch, largest_fitting

DEFAULT_STEPS = 2


class ProbeRequest(Frozen):
    """What the user asked for (parsed CLI options)."""

    model: str
    spec: TrainSpec
    gpu: str | None = None
    """``--gpu`` profile; the GPU probe defaults to the detected device's profile."""
    steps: int = DEFAULT_STEPS
    find_max_batch: bool = False
    argv: list[str] = Field(default_factory=lambda: list(sys.argv))
    """The exact command line, recorded in the result's ``environment``."""


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment(argv: list[str], gpu: str | None = None, driver: str | None = None, cuda: str | None = None
                ) -> Environment:
    """Library versions, the GPU and the exact command line."""
    return Environment(
        gpu=gpu, driver=driver, cuda=cuda,
        torch=_version("torch"), transformers=_version("transformers"), peft=_version("peft"),
        bitsandbytes=_version("bitsandbytes"), accelerate=_version("accelerate"), trl=_version("trl"),
        python=platform.python_version(), command=list(argv),
    )


def _estimate(model: str, spec: TrainSpec, gpu: GpuProfile | None) -> Estimate:
    return estimate_with_advice(model, spec, gpu.name if gpu else None)


def _estimated_components(est: Estimate) -> dict[str, float]:
    """Estimator terms that a probe can read directly (GiB), from the estimate's ledger."""
    gib = {t.name: t.gib for t in est.terms}
    return {
        "after_load": gib.get("base weights", 0.0) + gib.get("adapters", 0.0),
        "gradients": gib.get("gradients", 0.0),
        "optimizer_state": gib.get("optimizer state", 0.0),
        "paged": gib.get("paged optimizer state", 0.0),
    }


def _max_batch_estimate(model: str, spec: TrainSpec, gpu: GpuProfile | None) -> int | None:
    if gpu is None:
        return None
    return estimated_max_batch(lambda b: bool(estimate(model, spec.model_copy(update={"micro_batch": b}), gpu).fits))


# --------------------------------------------------------------------------- trace


def run_trace_probe(req: ProbeRequest, on_try: Callable[[int], None] | None = None) -> ProbeResult:
    """The CPU trace of ``req`` next to the estimate.

    ``fits`` is True when the traced step completed; with ``--gpu`` it is whether the traced peak plus
    the estimate's overhead beyond allocated memory (allocator reserve, CUDA context) fits that GPU.
    """
    from probes.trace import run_trace

    gpu = load_gpu(req.gpu) if req.gpu else None
    if req.find_max_batch and gpu is None:
        raise PlannerError("--find-max-batch with --trace needs --gpu (the GPU whose memory bounds the batch)")
    est = _estimate(req.model, req.spec, gpu)
    raw = raw_config(req.model)
    run = run_trace(raw, req.spec, steps=req.steps)
    peak = run.peak_bytes / GIB
    overhead = est.peak_gib.device - est.peak_gib.allocated
    fits = True if gpu is None else peak + overhead <= usable_gib(gpu)
    comps = _estimated_components(est)
    b = run.detail.breakdown_gib
    backward = b.get(f"end_of_backward.step{run.detail.steps}")
    rows = [
        ComponentRow(name="after load (weights + adapters)", estimate_gib=comps["after_load"],
                     measured_gib=run.after_load_bytes / GIB),
        ComponentRow(name="gradients", estimate_gib=comps["gradients"],
                     measured_gib=backward.gradients_gib if backward else None),
        ComponentRow(name="optimizer state", estimate_gib=comps["optimizer_state"],
                     measured_gib=b["end"].optimizer_gib if "end" in b else None),
        ComponentRow(name="peak allocated", estimate_gib=est.peak_gib.allocated, measured_gib=peak,
                     note=f"estimate: {est.peak_phase}, trace: {run.detail.peak_phase}"),
    ]
    if optimizer_info(req.spec.optim).paged:
        rows.append(ComponentRow(name="paged optimizer state", estimate_gib=comps["paged"],
                                 measured_gib=run.detail.paged_gib, note="CUDA managed memory, outside torch"))
    max_batch = None
    if req.find_max_batch and gpu is not None:

        def trace_fits(mb: int) -> bool:
            if on_try is not None:
                on_try(mb)
            spec = req.spec.model_copy(update={"micro_batch": mb})
            e = _estimate(req.model, spec, gpu)  # the overhead beyond allocated memory at this batch
            return run_trace(raw, spec, steps=2).peak_bytes / GIB + e.peak_gib.device - e.peak_gib.allocated \
                <= usable_gib(gpu)

        measured, tried = largest_fitting(trace_fits)
        max_batch = MaxBatch(measured=measured, estimated=_max_batch_estimate(req.model, req.spec, gpu), tried=tried)
    return ProbeResult(
        model=est.model,
        mode="trace",
        estimate=est.to_json(),
        measured_gib=MeasuredGiB(after_load=run.after_load_bytes / GIB, peak_allocated=peak),
        error_pct=ErrorPct(allocated=error_pct(est.peak_gib.allocated, peak)),
        environment=environment(req.argv),
        fits=fits,
        peak_phase=run.detail.peak_phase,
        params={"total": run.params_total, "trainable": run.params_trainable},
        components=rows,
        trace=run.detail,
        max_batch=max_batch,
    )


# --------------------------------------------------------------------------- GPU


def run_gpu_probe(req: ProbeRequest, events: Any = None) -> ProbeResult:
    """The real probe on GPU 0 next to the estimate for that GPU.

    Raises:
        NoGpuError: no CUDA device (exit 1, pointing to ``--trace``).
    """
    from probes.detect import require_gpu
    from probes.gpu import GpuSession

    gpus = require_gpu()
    info = gpus[0]
    gpu = load_gpu(req.gpu) if req.gpu else match_gpu(info.name, info.total_gib)
    est = _estimate(req.model, req.spec, gpu)
    env = environment(req.argv, gpu=info.name, driver=info.driver, cuda=info.cuda)
    session = GpuSession(raw_config(req.model), req.spec, events)
    try:
        if not session.load():
            return ProbeResult(
                model=est.model, mode="gpu", estimate=est.to_json(), measured_gib=MeasuredGiB(),
                environment=env, fits=False, failed_phase="load", error=session.load_error,
            )
        run = session.run(req.spec.micro_batch, req.steps)
        max_batch = None
        if req.find_max_batch and not run.interrupted:

            def fits(micro_batch: int) -> bool:
                if hasattr(events, "trying"):
                    events.trying(micro_batch)
                attempt = session.run(micro_batch, 2)
                if attempt.interrupted:
                    raise KeyboardInterrupt
                return attempt.fits

            measured, tried = largest_fitting(fits)
            max_batch = MaxBatch(measured=measured, estimated=_max_batch_estimate(req.model, req.spec, gpu),
                                 tried=tried)
    finally:
        session.close()
    result = _gpu_result(req, est, env, info.name, gpu, session, run, max_batch)
    return result.model_copy(update={"gpus": gpus})


def _gpu_result(req: ProbeRequest, est: Estimate, env: Environment, gpu_name: str, gpu: GpuProfile | None,
                session: Any, run: Any, max_batch: MaxBatch | None) -> ProbeResult:
    def gib(x: float | None) -> float | None:
        return None if x is None else x / GIB

    paged_optim = optimizer_info(req.spec.optim).paged
    paged = None
    if paged_optim and run.device_peak is not None and session.context_bytes is not None and run.fits:
        paged = max(0.0, run.device_peak - run.peak_reserved - session.context_bytes)
    calibration = None
    if run.fits and session.context_bytes is not None and run.peak_allocated:
        reserve = run.peak_reserved - run.peak_allocated
        calibration = Calibration(
            gpu=gpu_name, profile=gpu.name if gpu else None, cuda_context_gib=session.context_bytes / GIB,
            allocator_reserve_gib=reserve / GIB, allocator_reserve_fraction=reserve / run.peak_allocated,
        )
    measured = MeasuredGiB(after_load=gib(session.after_load), peak_allocated=gib(run.peak_allocated),
                           peak_reserved=gib(run.peak_reserved), device=gib(run.device_peak))
    comps = _estimated_components(est)
    optim_state = None
    if run.after_first_step is not None and session.after_load is not None:
        optim_state = (run.after_first_step - session.after_load) / GIB
    rows = [
        ComponentRow(name="after load (weights + adapters)", estimate_gib=comps["after_load"],
                     measured_gib=measured.after_load),
        ComponentRow(name="optimizer state", estimate_gib=comps["optimizer_state"], measured_gib=optim_state,
                     note="allocated after the first step minus after load"),
        ComponentRow(name="peak allocated", estimate_gib=est.peak_gib.allocated, measured_gib=measured.peak_allocated),
        ComponentRow(name="peak reserved", estimate_gib=est.peak_gib.reserved, measured_gib=measured.peak_reserved),
        ComponentRow(name="device (NVML)", estimate_gib=est.peak_gib.device, measured_gib=measured.device,
                     note="includes the CUDA context"),
    ]
    if paged_optim:
        rows.append(ComponentRow(name="paged optimizer state", estimate_gib=comps["paged"], measured_gib=gib(paged),
                                 note="NVML minus reserved minus context"))
    return ProbeResult(
        model=est.model,
        mode="gpu",
        estimate=est.to_json(),
        measured_gib=measured,
        tokens_per_s=run.tokens_per_s,
        error_pct=ErrorPct(allocated=error_pct(est.peak_gib.allocated, measured.peak_allocated),
                           reserved=error_pct(est.peak_gib.reserved, measured.peak_reserved)),
        environment=env,
        fits=run.fits,
        failed_phase=run.failed_phase,
        error=run.error,
        params={"total": session.params_total, "trainable": session.params_trainable},
        components=rows,
        calibration=calibration,
        gpu=GpuDetail(
            steps=len(run.step_seconds), after_optimizer_init_gib=gib(session.after_optimizer_init),
            after_first_step_gib=gib(run.after_first_step), step_seconds=run.step_seconds, paged_gib=gib(paged),
            load_seconds=session.load_seconds, nvml=session.context_bytes is not None,
        ),
        max_batch=max_batch,
        interrupted=run.interrupted,
    )
