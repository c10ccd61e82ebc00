"""Seconds per micro-batch and per optimizer step of one configuration at a given utilization.

Time per micro-batch = max(GPU work, CPU dispatch). GPU work = matmuls at their roofline
(:mod:`planner.time.gemm`) + memory-bound traffic and QLoRA dequantization at the effective bandwidth
(:mod:`planner.time.traffic`). CPU dispatch = fixed seconds per decoder layer, per adapted module and per routed
expert, per forward-equivalent pass (forward 1, backward 2, recompute 1; the per-layer and per-module costs are
fitted). CUDA launches are asynchronous, so dispatch only costs time where the GPU runs out of queued work:
small models, short micro-batches, many small adapted modules and MoE expert loops. The optimizer and
gradient-clipping passes run once per optimizer step.
The step is built from the memory model's context (:func:`planner.memory.context.build_context`), so both
models read one architecture table, one target resolution and one set of element sizes.
"""

from __future__ import annotations

from planner.memory.context import Context, build_context
from planner.specs import GpuProfile, ModelConfig, TrainSpec
from planner.stack.stack import Stack
from planner.time.constants import GB, TFLOP, TimeConstants, time_constants
from planner.time.flops import matmul_params, peak_tflops
from planner.time.gemm import Device, compute_seconds
from planner.time.schemas import Provenance, StepImpl, TimeBreakdown, Utilization
from planner.time.traffic import dequant_bytes, fused_kernels, memory_bytes, optimizer_bytes

_BACKWARD_PASSES = 2.0
"""Dispatch units of a backward pass relative to a forward (about twice the kernels: input and weight paths)."""


def _dispatch_units(ctx: Context) -> float:
    """Forward-equivalent passes of one micro-batch: forward, backward, recomputed forward."""
    return 1.0 + _BACKWARD_PASSES + (1.0 if ctx.train.grad_ckpt else 0.0)


def overhead_seconds(ctx: Context, util: Utilization, consts: TimeConstants) -> float:
    """Fixed dispatch seconds of one micro-batch: decoder layers, adapted modules and routed experts."""
    modules = float(sum(1 for lin in ctx.targets if lin.experts == 1))
    cfg = ctx.config
    if ctx.arch.expert_params:
        modules += cfg.num_local_experts * consts.traffic.expert_modules
    per_pass = ctx.layers * (util.overhead_s_per_layer + modules * util.overhead_s_per_module)
    return per_pass * _dispatch_units(ctx)


def _weights_seconds(config: ModelConfig, ctx: Context, bandwidth: float) -> float:
    layers_mm, head_mm = matmul_params(config)
    return _dispatch_units(ctx) * (layers_mm + head_mm) * ctx.d.compute / bandwidth


def time_breakdown(
    config: ModelConfig,
    train: TrainSpec,
    gpu: GpuProfile,
    util: Utilization,
    impl: StepImpl | None = None,
    stack: Stack | None = None,
    consts: TimeConstants | None = None,
) -> TimeBreakdown:
    """Seconds per micro-batch (and per optimizer step) of ``train`` on ``gpu``, with the error band.

    Args:
        config: model architecture.
        train: the configuration.
        gpu: the GPU (dense peak and bandwidth from ``profiles/gpus.json``).
        util: utilization to run at (:func:`planner.time.utilization` for ``gpu``).
        impl: loop implementation details (default: the modeled Trainer stack).
        stack: the training stack (loss kind); default the modeled one.
        consts: time-model constants (default ``profiles/throughput.json``; the fit passes candidates).
    """
    consts = consts or time_constants()
    impl = impl or StepImpl()
    ctx = build_context(config, train, stack)
    peak = peak_tflops(gpu, train.dtype)
    bandwidth = gpu.memory_bandwidth_gbps * GB * consts.bandwidth_efficiency
    dev = Device(peak_flops=peak * TFLOP, bandwidth=bandwidth, element_bytes=ctx.d.compute)
    compute = compute_seconds(ctx, util, dev)
    memory = memory_bytes(ctx, consts.traffic, impl) / bandwidth
    dequant = dequant_bytes(ctx) / bandwidth
    overhead = overhead_seconds(ctx, util, consts)
    optimizer = optimizer_bytes(ctx, consts.traffic, impl) / bandwidth
    step = train.grad_accum * max(compute + memory + dequant, overhead) + optimizer
    tps = train.grad_accum * ctx.tokens / step
    fit = consts.fitted
    inferred = util.provenance is Provenance.INFERRED
    low, high = (fit.inferred_band_low, fit.inferred_band_high) if inferred else (fit.band_low, fit.band_high)
    return TimeBreakdown(
        compute_s=compute, weights_s=_weights_seconds(config, ctx, bandwidth), dequant_s=dequant, memory_s=memory,
        overhead_s=overhead, optimizer_s=optimizer, tokens_per_s=tps,
        tokens_per_s_low=tps * low, tokens_per_s_high=tps * high,
        mfu=util.mfu, peak_tflops=peak, kernels="fused" if fused_kernels(ctx, consts.traffic) else "eager",
    )
