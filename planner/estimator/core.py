"""``estimate``: memory of one training step, by component and at the step's peak.

context (config, targets, dtypes, stack) -> ledger of named terms with the sub-phases each is alive in
(:mod:`planner.memory.step`) -> overhead terms -> per-GPU ledger (:mod:`planner.parallel`) -> peaks ->
:class:`~planner.results.Estimate`. The peak is the maximum over the phases of a steady-state step, not
the sum of every component.
"""

from __future__ import annotations

from dataclasses import replace

from planner.calibration import Calibration
from planner.catalog import load_gpu, load_model
from planner.estimator.fits import usable_gib
from planner.estimator.overhead import allocator_reserve_term, runtime_terms
from planner.estimator.warnings import estimate_warnings
from planner.memory.context import build_context
from planner.memory.ledger import Pool
from planner.memory.step import step_ledger
from planner.model.params import param_counts
from planner.parallel.spec import ParallelSpec, per_gpu
from planner.results import Estimate, GpuRef, MemoryGiB, PeakGiB
from planner.specs import GIB, GpuProfile, Method, ModelProfile, TrainSpec
from planner.stack.stack import Stack


def estimate(
    model: ModelProfile | str,
    train: TrainSpec | None = None,
    gpu: GpuProfile | str | None = None,
    calibration: Calibration | None = None,
    stack: Stack | None = None,
    parallel: ParallelSpec | None = None,
) -> Estimate:
    """Estimate the GPU memory of one fine-tuning step.

    Args:
        model: A :class:`ModelProfile` or anything :func:`planner.catalog.load_model` resolves.
        train: The training configuration (defaults: LoRA r=16 on all linear layers, bf16, micro-batch 1,
            seq 2048, checkpointing, AdamW).
        gpu: A :class:`GpuProfile` or GPU name; when given, ``fits`` and ``headroom_gib`` are set.
        calibration: Measured CUDA context / allocator reserve for this GPU (from a probe).
        stack: The training stack to model (default: ``profiles/stacks/trainer-transformers5.json``).
        parallel: Where the step runs (default: one GPU).

    Returns:
        An :class:`Estimate`; all sizes in GiB (2**30 bytes).

    Raises:
        PlannerError: unknown model/GPU or targets that match no module.
    """
    profile = load_model(model) if isinstance(model, str) else model
    gpu_profile = load_gpu(gpu) if isinstance(gpu, str) else gpu
    train = train or TrainSpec()
    ctx = build_context(profile.config, train, stack)
    if train.method is not Method.FULL and ctx.dropout != train.lora_dropout:
        train = train.model_copy(update={"lora_dropout": ctx.dropout})
    ledger = per_gpu(runtime_terms(step_ledger(ctx), gpu_profile, calibration), parallel or ParallelSpec())
    phase, allocated = ledger.peak()
    reserve = allocator_reserve_term(ctx, ledger, calibration)
    ledger = ledger.plus(replace(reserve, counted_bytes=reserve.at(phase)))  # the table shows it at the peak
    reserved = allocated + ledger.total(phase, (Pool.CACHED,))
    device = reserved + ledger.total(phase, (Pool.CONTEXT, Pool.MANAGED))
    peak = PeakGiB(allocated=allocated / GIB, reserved=reserved / GIB, device=device / GIB)
    fits = headroom = gpu_ref = None
    if gpu_profile is not None:
        gpu_ref = GpuRef(name=gpu_profile.name, memory_gib=gpu_profile.memory_gib)
        headroom = usable_gib(gpu_profile) - peak.device
        fits = headroom >= 0
    paged = ledger.size_of("paged optimizer state")
    est = Estimate(
        model=profile.name, method=train.method, train=train, params=param_counts(profile.config, train),
        memory_gib=MemoryGiB(**{c: b / GIB for c, b in ledger.components().items()}),
        peak_gib=peak, peak_phase=phase.group, host_spillable_gib=paged / GIB, gpu=gpu_ref, fits=fits,
        headroom_gib=headroom, advice=None, warnings=estimate_warnings(ctx, paged), stack=ctx.stack.ref(),
    )
    est._ledger = ledger
    return est
