"""Data-parallel step time: per-GPU compute plus the communication it cannot hide.

Per strategy, the bytes each rank moves per micro-batch and per optimizer step (ring collectives over ``n``
ranks, ``r = (n - 1) / n``; ``P`` every parameter as stored, base and adapters; ``G`` the trainable
parameters' gradients; ``T`` the trainable parameters in their 16-bit dtype):

- ``ddp``: all-reduce of ``G`` once per optimizer step (``2 r G``; accelerate's ``accumulate`` skips the
  sync on the other micro-batches with ``no_sync``), behind the last micro-batch's backward;
- ``zero1``: reduce-scatter of ``G`` at the step boundary (``r G``) and all-gather of the updated ``T``
  after the step (``r T``, exposed);
- ``zero2``: reduce-scatter of ``G`` every micro-batch (``r G``: the gradients are partitioned) and the
  all-gather of the updated ``T`` after the step;
- ``zero3`` / ``fsdp`` / ``fsdp2``: all-gather of ``P`` in forward and again in backward (``2 r P``; the
  recomputed forward of a checkpointed unit runs inside its backward, after its gather, so it does not
  gather again), reduce-scatter of ``G`` (``r G``) every micro-batch;
- ``fsdp-shard-grad-op``: ``P`` gathered once per micro-batch (kept through backward) and ``r G``.

LoRA: ``G`` is the adapters' only, but the frozen base is still gathered under full sharding.
Bus bandwidth: the GPU's intra-node link per direction, or the network per GPU across nodes, whichever is
lower, times ``bus_efficiency``; exposed = ``max(one layer's share, comm - overlap_fraction x the compute it
overlaps)`` plus ``collective_latency_s`` per collective (``profiles/parallel.json`` ``comm``; the fractions and
the latency are stated assumptions). Offload adds host-link transfers (PCIe, ``host_link_gb_per_s``) and runs
the optimizer step on the CPU (``cpu_adam_params_per_s`` per node, an assumption).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

from planner.catalog import _read_json, profiles_dir
from planner.memory import states
from planner.memory.context import Context
from planner.parallel.shard import engine_defaults
from planner.parallel.spec import Offload, ParallelSpec, Strategy
from planner.specs import Frozen, GpuProfile
from planner.time.constants import GB
from planner.time.schemas import TimeBreakdown

_BACKWARD_SHARE = 2.0 / 3.0
"""Share of a micro-batch's compute in backward (2 of the 3 forward-equivalent matmul passes)."""


@cache
def comm_constants() -> dict[str, Any]:
    """``profiles/parallel.json`` ``comm``: bus efficiency, overlap fraction, fallbacks, node size."""
    return dict(_read_json(profiles_dir() / "parallel.json")["comm"])


class CommBreakdown(Frozen):
    """Where a data-parallel step's time goes (plans' ``comm`` in ``recommend --json``)."""

    link: str
    """The link that bounds the collectives, e.g. ``NVLink 4 (SXM5, NVSwitch)`` or ``network 3200 Gbit/s``."""
    bus_gb_per_s: float
    """Effective bus bandwidth per GPU (GB/s, 1e9), after ``bus_efficiency``."""
    comm_bytes_per_step: float
    """Bytes each rank moves per optimizer step (all micro-batches)."""
    comm_s: float
    """Seconds of communication per optimizer step."""
    exposed_comm_s: float
    """Of which not hidden behind compute."""
    step_s: float
    """Seconds per optimizer step: compute + exposed communication."""
    scaling_efficiency: float
    """Step time without communication / with it (1.0: the GPUs never wait)."""
    tokens_per_s_per_gpu: float


@dataclass(frozen=True)
class Volumes:
    """Bytes each rank moves: per micro-batch (overlapping that micro-batch) and per optimizer step."""

    micro_bytes: float
    step_overlapped_bytes: float
    """Once per step, behind the last micro-batch's backward."""
    step_exposed_bytes: float
    """Once per step, after the optimizer (nothing to hide behind)."""
    micro_collectives: float = 0.0
    step_collectives: float = 0.0
    """Collective launches per micro-batch / per step (each pays ``collective_latency_s``)."""
    host_micro_bytes: float = 0.0
    """Offloaded parameters fetched from host RAM per micro-batch (per rank)."""
    host_step_bytes: float = 0.0
    """Offloaded optimizer: gradient partition down, updated partition up, per step (per rank)."""
    cpu_params: float = 0.0
    """Parameters one node's CPU optimizer updates per step (0: the GPU runs the optimizer)."""


def volumes(ctx: Context, parallel: ParallelSpec) -> Volumes:
    """Per-rank collective bytes of one step of ``ctx`` under ``parallel`` (see the module docstring)."""
    n = float(parallel.world_size)
    r = (n - 1.0) / n
    params = states.weight_bytes(ctx) + states.adapter_bytes(ctx)
    grads = states.gradient_bytes(ctx)
    trainable = states.trainable_params(ctx) * ctx.d.compute
    base = _volumes(ctx, parallel, r, params, grads, trainable)
    if parallel.offload is Offload.NONE:
        return base
    host_micro = 2.0 * params / n if parallel.offload is Offload.PARAMS else 0.0
    return replace(base, host_micro_bytes=host_micro, host_step_bytes=(grads + trainable) / n,
                   cpu_params=states.trainable_params(ctx) / parallel.nodes)


def _volumes(ctx: Context, parallel: ParallelSpec, r: float, params: float, grads: float, trainable: float
             ) -> Volumes:
    s = parallel.strategy
    cfg = engine_defaults()
    layers = float(max(ctx.layers, 1))
    ddp_buckets = math.ceil(grads / (cfg["ddp"]["bucket_cap_mb"] * 2**20))
    zero_buckets = math.ceil(grads / (cfg["deepspeed_zero"]["reduce_bucket_size_elements"] * ctx.d.trainable))
    if s is Strategy.DDP:
        return Volumes(0.0, 2.0 * r * grads, 0.0, 0.0, ddp_buckets)
    if s is Strategy.ZERO1:
        return Volumes(0.0, r * grads, r * trainable, 0.0, 2.0 * zero_buckets)
    if s is Strategy.ZERO2:
        return Volumes(r * grads, 0.0, r * trainable, zero_buckets, zero_buckets)
    if s is Strategy.FSDP_SHARD_GRAD_OP:
        return Volumes(r * params + r * grads, 0.0, 0.0, 2.0 * layers)
    if s in (Strategy.FSDP, Strategy.FSDP2, Strategy.ZERO3):
        return Volumes(2.0 * r * params + r * grads, 0.0, 0.0, 3.0 * layers)
    return Volumes(0.0, 0.0, 0.0)


def bus_bandwidth(gpu: GpuProfile, parallel: ParallelSpec, network_gbps: float | None) -> tuple[float, str]:
    """(effective bus bytes/s per GPU, the bounding link's name)."""
    c = comm_constants()
    link = gpu.interconnect
    intra = (link.gb_per_s if link else c["fallback_intra_gb_per_s"]) * GB
    name = link.generation if link else f"PCIe (assumed, {c['fallback_intra_gb_per_s']:g} GB/s)"
    if parallel.nodes > 1:
        gbps = network_gbps or c["fallback_inter_node_gbps"]
        inter = gbps / 8.0 * GB / parallel.gpus
        if inter < intra:
            intra, name = inter, f"network {gbps:g} Gbit/s"
    return intra * c["bus_efficiency"], name


def data_parallel_time(ctx: Context, parallel: ParallelSpec, gpu: GpuProfile, single: TimeBreakdown,
                       grad_accum: int, network_gbps: float | None = None) -> tuple[TimeBreakdown, CommBreakdown]:
    """The step of ``single`` (one GPU's micro-batch) run on every rank of ``parallel``, with communication.

    Args:
        ctx: the memory model's context of the per-GPU configuration.
        parallel: the strategy and GPU counts (``world_size`` > 1).
        gpu: the GPU (its ``interconnect``).
        single: the one-GPU time breakdown of the per-GPU micro-batch.
        grad_accum: micro-batches per optimizer step on each rank.
        network_gbps: inter-node network per node (Gbit/s; None: ``fallback_inter_node_gbps``).

    Returns:
        The breakdown with ``tokens_per_s`` (and its band) for all GPUs together, and the communication parts.
    """
    c = comm_constants()
    bus, link = bus_bandwidth(gpu, parallel, network_gbps)
    vol = volumes(ctx, parallel)
    micro_compute = single.compute_s + single.memory_s + single.dequant_s
    micro = max(micro_compute, single.overhead_s)
    optimizer = single.optimizer_s / (parallel.world_size if parallel.strategy.shards_optimizer else 1)
    host = c["host_link_gb_per_s"] * GB
    if vol.cpu_params:
        optimizer = vol.cpu_params / c["cpu_adam_params_per_s"]  # the CPU steps instead of the GPU
    hide = c["overlap_fraction"]
    latency = c["collective_latency_s"]
    micro_comm = vol.micro_bytes / bus
    edge = micro_comm / max(ctx.layers, 1)  # the first unit's gather and the last's reduce-scatter: nothing before
    exposed = grad_accum * (max(edge, micro_comm - hide * micro_compute) + vol.micro_collectives * latency)
    host_micro = vol.host_micro_bytes / host
    exposed += grad_accum * max(0.0, host_micro - hide * micro_compute) + vol.host_step_bytes / host
    last_comm = vol.step_overlapped_bytes / bus
    exposed += max(0.0, last_comm - hide * _BACKWARD_SHARE * micro_compute)
    step_exposed = vol.step_exposed_bytes / bus
    exposed += step_exposed + vol.step_collectives * latency
    comm = grad_accum * (micro_comm + host_micro) + last_comm + step_exposed + vol.host_step_bytes / host
    compute_step = grad_accum * micro + optimizer
    step = compute_step + exposed
    tokens_step = grad_accum * ctx.tokens
    per_gpu = tokens_step / step
    total = per_gpu * parallel.world_size
    scale = total / single.tokens_per_s
    timed = single.model_copy(update={
        "optimizer_s": optimizer, "tokens_per_s": total, "tokens_per_s_low": single.tokens_per_s_low * scale,
        "tokens_per_s_high": single.tokens_per_s_high * scale})
    return timed, CommBreakdown(
        link=link, bus_gb_per_s=round(bus / GB, 2), comm_bytes_per_step=grad_accum * vol.micro_bytes + vol.step_overlapped_bytes + vol.step_exposed_bytes, comm_s=comm,
        exposed_comm_s=exposed, step_s=step, scaling_efficiency=round(compute_step / step, 4),
        tokens_per_s_per_gpu=round(per_gpu, 1))
