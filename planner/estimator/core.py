"""``estimate``: memory of one training step, by component and at the step's peak.

context (config, targets, dtypes, stack) -> ledger of named terms with the sub-phases each is alive in
(:mod:`planner.memory.step`) -> overhead terms -> per-GPU ledger (:mod:`planner.parallel`) -> peaks ->
:class:`~planner.results.Estimate`. The peak is the maximum over the phases of a steady-state step, not
the sum of every component.
"""

from __future__ import annotations

from planner.calibration import Calibration
from planner.catalog import load_gpu, load_model
from planner.estimator.fits import DEFAULT_HEADROOM, budget_gib, usable_gib
from planner.estimator.overhead import allocator_reserve_term, runtime_terms
from planner.estimator.warnings import attention_fallback, estimate_warnings
from planner.memory.context import build_context
from planner.memory.ledger import DEVICE_POOLS, RESERVED_POOLS
from planner.memory.step import step_ledger
from planner.parallel.spec import ParallelSpec
from planner.results import Estimate, GpuRef, MemoryGiB, ParallelRef, ParamCounts, PeakGiB
from planner.specs import GIB, GpuProfile, Method, ModelProfile, TrainSpec
from planner.stack.stack import Stack


def _check_types(model: object, train: object, gpu: object, calibration: object) -> None:
    """The library API's argument types, checked upfront so a wrong one is a clear TypeError, not AttributeError."""
    for name, value, types, text in (
        ("model", model, (str, ModelProfile), "a model name / hub id / config.json path or a ModelProfile"),
        ("train", train, (TrainSpec, type(None)), "a TrainSpec or None"),
        ("gpu", gpu, (str, GpuProfile, type(None)), "a GPU name, a GpuProfile or None"),
        ("calibration", calibration, (Calibration, type(None)), "a Calibration or None"),
    ):
        if not isinstance(value, types):
            raise TypeError(f"estimate(): {name} must be {text}, got {type(value).__name__}")


def estimate(
    model: ModelProfile | str,
    train: TrainSpec | None = None,
    gpu: GpuProfile | str | None = None,
    calibration: Calibration | None = None,
    stack: Stack | None = None,
    parallel: ParallelSpec | None = None,
    headroom: float = DEFAULT_HEADROOM,
) -> Estimate:
    """Estimate the GPU memory of one fine-tuning step.

    Args:
        model: A :class:`ModelProfile` or anything :func:`planner.catalog.load_model` resolves.
        train: The training configuration (defaults: LoRA r=16 on all linear layers, bf16, micro-batch 1,
            seq 2048, checkpointing, AdamW).
        gpu: A :class:`GpuProfile` or GPU name; when given, ``fits`` (device peak within the GPU's budget) and
            ``headroom_gib`` (budget left) are set.
        calibration: Measured CUDA context / allocator reserve for this GPU (from a probe).
        stack: The training stack to model (default: ``profiles/stacks/trainer-transformers5.json``).
        parallel: Where the step runs (default: one GPU).
        headroom: Fraction of the GPU's usable memory to keep free (:mod:`planner.estimator.fits`).

    Returns:
        An :class:`Estimate`; all sizes in GiB (2**30 bytes).

    Raises:
        PlannerError: unknown model/GPU or targets that match no module.
        TypeError: an argument of the wrong type (e.g. ``estimate(None)``).
    """
    _check_types(model, train, gpu, calibration)
    profile = load_model(model) if isinstance(model, str) else model
    gpu_profile = load_gpu(gpu) if isinstance(gpu, str) else gpu
    train = train or TrainSpec()
    ctx = build_context(profile.config, train, stack)
    if train.method is not Method.FULL and ctx.dropout != train.lora_dropout:
        train = train.model_copy(update={"lora_dropout": ctx.dropout})
    attn_warnings = attention_fallback(train.attn, ctx)
    if attn_warnings:
        train = train.model_copy(update={"attn": ctx.train.attn})
    parallel = parallel or ParallelSpec()
    storage = None
    if parallel.multi:
        from planner.parallel.precision import mixed_precision_contexts

        # FSDP mixed precision: the step computes in bf16 while the shards may be fp32.
        ctx, storage = mixed_precision_contexts(profile.config, ctx, parallel)
    ledger = runtime_terms(step_ledger(ctx), gpu_profile, calibration)
    parallel_ref = host_gib = None
    parallel_warnings: tuple[str, ...] = ()
    if parallel.multi:
        from planner.parallel.shard import shard

        sharded = shard(ledger, parallel, ctx, storage)
        ledger, parallel_warnings = sharded.ledger, sharded.warnings
        host_gib = sharded.host_bytes * parallel.gpus / GIB
        parallel_ref = ParallelRef(strategy=parallel.strategy.value, gpus=parallel.gpus, nodes=parallel.nodes,
                                   world_size=parallel.world_size, offload=parallel.offload.value)
        if parallel.host_ram_gib is not None and host_gib > parallel.host_ram_gib:
            parallel_warnings += (f"offload needs {host_gib:.1f} GiB of host RAM per node, more than "
                                  f"--host-ram {parallel.host_ram_gib:g}",)
    ledger = ledger.plus(allocator_reserve_term(ctx, ledger, calibration))
    # Each counter peaks in its own sub-phase: the allocator's cached blocks differ by phase, so the
    # reserved (and device) peak need not be where the most memory is allocated.
    phase, allocated = ledger.peak(RESERVED_POOLS[:1])
    reserved = ledger.peak(RESERVED_POOLS)[1]
    device = ledger.peak(DEVICE_POOLS)[1]
    peak = PeakGiB(allocated=allocated / GIB, reserved=reserved / GIB, device=device / GIB)
    fits = spare = gpu_ref = None
    if gpu_profile is not None:
        budget = budget_gib(gpu_profile, headroom)
        gpu_ref = GpuRef(name=gpu_profile.name, memory_gib=gpu_profile.memory_gib, usable_gib=usable_gib(gpu_profile),
                         budget_gib=budget, headroom=headroom)
        spare = budget - peak.device
        fits = spare >= 0
    paged = ledger.size_of("paged optimizer state")
    est = Estimate(
        model=profile.name, method=train.method, train=train,
        params=ParamCounts(total=ctx.total_params, trainable=ctx.trainable_params),
        memory_gib=MemoryGiB(**{c: b / GIB for c, b in ledger.components().items()}),
        peak_gib=peak, peak_phase=phase.group, host_spillable_gib=paged / GIB, gpu=gpu_ref, fits=fits,
        headroom_gib=spare, advice=None,
        warnings=profile.warnings + attn_warnings + estimate_warnings(ctx, paged, gpu_profile) + parallel_warnings,
        stack=ctx.stack.ref(),
        parallel=parallel_ref, host_gib=host_gib,
    )
    est._ledger = ledger
    return est
