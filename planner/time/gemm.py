"""Matmul time of one micro-batch: every GEMM of the step at its roofline.

The GEMMs follow the memory model's architecture table (:func:`planner.memory.context.build_context`): per decoder
layer each ``nn.Linear`` runs a forward, an input-gradient backward (always: earlier layers' adapters or weights
need it; a frozen weight computes no weight gradient), a weight-gradient backward for full fine-tuning only, and
a recomputed forward under gradient checkpointing; the lm_head runs forward and input gradient (and weight
gradient for full fine-tuning), never recomputed. Routed MoE experts run ``tokens * k / E`` rows each.
Attention FLOPs follow :mod:`planner.time.flops` (causal, Kaplan et al. 2020).

Each GEMM takes ``max(FLOPs / (peak * mfu * size_factor), bytes / bandwidth)`` with
``size_factor = (1 + m_half / 2048 + d_half / 4096) / (1 + m_half / rows + d_half / min(k, n))``: small GEMMs
reach a smaller fraction of the peak (tile and wave quantization, launch latency), and ``mfu`` is the
utilization of the reference GEMM (2048 rows, 4096 wide); both halves are fitted (:mod:`planner.time.fit`).
LoRA's rank-r matmuls are memory-bound and counted as traffic (:mod:`planner.time.traffic`).
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.memory.context import Context
from planner.specs import Attn
from planner.time.schemas import Utilization


@dataclass(frozen=True)
class Gemm:
    """``calls`` matmuls of ``rows x k`` by ``k x n``."""

    rows: float
    k: int
    n: int
    calls: float


@dataclass(frozen=True)
class Device:
    """What one GEMM's time needs from the GPU: peak FLOP/s, effective bytes/s, element size."""

    peak_flops: float
    bandwidth: float
    element_bytes: float


REFERENCE_ROWS = 2048.0
REFERENCE_DIM = 4096.0
"""The GEMM whose utilization ``Utilization.mfu`` is: 2048 rows (tokens), 4096 wide (Llama-7B/8B hidden size)."""


def size_factor(rows: float, dim: float, util: Utilization) -> float:
    """A ``rows x dim`` GEMM's utilization relative to the reference GEMM's (fitted halves)."""
    m0, d0 = util.gemm_half_tokens, util.gemm_half_dim
    return (1.0 + m0 / REFERENCE_ROWS + d0 / REFERENCE_DIM) / (1.0 + m0 / max(rows, 1.0) + d0 / max(dim, 1.0))


def gemm_seconds(g: Gemm, util: Utilization, dev: Device) -> float:
    """Roofline time of ``g``: compute at the utilization and size factor, or its own bytes, whichever is longer."""
    flops = 2.0 * g.rows * g.k * g.n * g.calls
    compute = flops / (dev.peak_flops * util.mfu * size_factor(g.rows, min(g.k, g.n), util))
    moved = (g.rows * g.k + g.k * g.n + g.rows * g.n) * dev.element_bytes * g.calls
    return max(compute, moved / dev.bandwidth)


def _passes(ctx: Context, trainable: bool) -> float:
    """GEMM calls per weight per micro-batch: forward + input gradient (+ weight gradient) (+ recompute)."""
    return 2.0 + (1.0 if trainable else 0.0) + (1.0 if ctx.train.grad_ckpt else 0.0)


def layer_gemms(ctx: Context) -> list[Gemm]:
    """The GEMMs of all decoder layers of one micro-batch."""
    rows = ctx.tokens
    layers = float(ctx.layers)
    out = [Gemm(rows, lin.in_features, lin.out_features, layers * _passes(ctx, ctx.full)) for lin in ctx.arch.linears]
    cfg = ctx.config
    if ctx.arch.expert_params:
        e, k = cfg.num_local_experts, cfg.num_experts_per_tok
        per_expert = rows * k / e
        h, i = cfg.hidden_size, cfg.intermediate_size
        # Adapted expert stacks (PEFT ParamWrapper) need the merged weight's gradient: a weight-gradient GEMM.
        wgrad = ctx.full or any(lin.experts > 1 for lin in ctx.targets)
        calls = layers * e * _passes(ctx, wgrad)
        out += [Gemm(per_expert, h, 2 * i, calls), Gemm(per_expert, i, h, calls)]
        out.append(Gemm(rows, h, e, layers * _passes(ctx, ctx.full)))  # router
    return out


def head_gemm(ctx: Context) -> Gemm:
    """The lm_head: forward + input gradient (+ weight gradient for full fine-tuning); not recomputed."""
    cfg = ctx.config
    return Gemm(ctx.tokens, cfg.hidden_size, cfg.vocab_size, 2.0 + (1.0 if ctx.full else 0.0))


def attention_seconds(ctx: Context, util: Utilization, dev: Device) -> float:
    """Causal attention (QK^T and PV): forward, backward (2x), recompute; eager computes the full square."""
    cfg = ctx.config
    t = ctx.train
    q_dim = cfg.num_attention_heads * cfg.head_dim
    per_token = 2.0 * cfg.num_hidden_layers * t.seq_len * q_dim * (2.0 if t.attn is Attn.EAGER else 1.0)
    flops = per_token * ctx.tokens * (3.0 + (1.0 if t.grad_ckpt else 0.0))
    return flops / (dev.peak_flops * util.mfu * size_factor(t.seq_len, q_dim, util))


def compute_seconds(ctx: Context, util: Utilization, dev: Device) -> float:
    """Matmul and attention seconds of one micro-batch."""
    gemms = layer_gemms(ctx) + [head_gemm(ctx)]
    return sum(gemm_seconds(g, util, dev) for g in gemms) + attention_seconds(ctx, util, dev)
