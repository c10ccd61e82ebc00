"""Seconds per micro-batch and per optimizer step of one configuration at a given utilization.

Time per micro-batch = max(compute, weight streaming) + dequantization + fixed per-layer overhead
(kernel launches and Python, fitted), and the optimizer step streams its state once per optimizer step.

- QLoRA: every pass (forward, backward, recompute) dequantizes each NF4 weight to 16 bits before its
  matmul (bitsandbytes ``MatMul4Bit``): a memory-bound kernel that reads the packed weight and writes a
  16-bit copy, once per micro-batch - so its cost per token falls with micro-batch x sequence length.
- Optimizer step: param read + write and gradient read, plus the state bytes the optimizer table
  (``profiles/optimizers.json`` ``state_bytes_moved_per_param``) gives.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from planner.memory.context import nf4_bytes_per_param
from planner.model.params import param_counts
from planner.specs import GpuProfile, Method, ModelConfig, Optim, TrainSpec
from planner.stack.optimizers import optimizer_info
from planner.time.constants import GB, TFLOP, throughput_profile
from planner.time.flops import flops, matmul_params, peak_tflops
from planner.time.schemas import TimeBreakdown, Utilization


def optimizer_bytes_per_param(optim: Optim, trainable_bytes: float) -> float:
    """DRAM bytes one optimizer step moves per trainable parameter (read + write).

    Args:
        optim: the optimizer (its state traffic comes from the optimizer table).
        trainable_bytes: bytes per element of the trainable parameters and their gradients.
    """
    return 3 * trainable_bytes + optimizer_info(optim).state_bytes_moved_per_param  # param read + write, gradient read


@cache
def _trainable(config: ModelConfig, method: Method, targets: tuple[str, ...], rank: int, dora: bool) -> int:
    spec = TrainSpec(method=method, targets=targets, rank=rank, alpha=2.0 * rank, dora=dora)
    return param_counts(config, spec).trainable


def _optimizer_s(config: ModelConfig, train: TrainSpec, bandwidth_bytes_s: float) -> float:
    """Seconds of one optimizer step: its DRAM traffic at the effective bandwidth."""
    trainable = _trainable(config, train.method, train.targets, train.rank, train.dora)
    c = train.dtype.bytes_per_element
    train_bytes = 4.0 if train.method is not Method.FULL or train.fp32_master else c
    return trainable * optimizer_bytes_per_param(train.optim, train_bytes) / bandwidth_bytes_s


def time_breakdown(
    config: ModelConfig, train: TrainSpec, gpu: GpuProfile, util: Utilization, consts: dict[str, Any] | None = None
) -> TimeBreakdown:
    """Seconds per micro-batch (and per optimizer step) of ``train`` on ``gpu`` at ``util``."""
    consts = consts or throughput_profile()
    f = flops(config, train)
    tokens = train.micro_batch * train.seq_len
    peak = peak_tflops(gpu, train.dtype)
    compute = (f.per_token * tokens + f.per_microbatch) / (peak * TFLOP * util.mfu)
    bandwidth = gpu.memory_bandwidth_gbps * GB * consts["memory_bandwidth_efficiency"]["value"]
    passes = 3 if train.grad_ckpt else 2
    layers_mm, head_mm = matmul_params(config)
    c = train.dtype.bytes_per_element
    weights = passes * (layers_mm + head_mm) * c / bandwidth
    dequant = 0.0
    if train.method is Method.QLORA:
        # Read the packed NF4 weight (+ constants), write the 16-bit copy the matmul then reads.
        dequant = passes * layers_mm * (nf4_bytes_per_param(train.double_quant) + c) / bandwidth
    overhead = util.overhead_s_per_layer * config.num_hidden_layers
    optimizer = _optimizer_s(config, train, bandwidth)
    seconds = max(compute, weights) + dequant + overhead + optimizer / train.grad_accum
    return TimeBreakdown(
        compute_s=compute,
        weights_s=weights,
        dequant_s=dequant,
        overhead_s=overhead,
        optimizer_s=optimizer,
        tokens_per_s=tokens / seconds,
        mfu=util.mfu,
        peak_tflops=peak,
    )
