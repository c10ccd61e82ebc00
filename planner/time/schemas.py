"""Result models of the time model: the utilization assumption and the per-step time breakdown."""

from __future__ import annotations

from planner.specs import Frozen, Method


class Utilization(Frozen):
    """The utilization assumption behind a tokens/s figure, stated in the output."""

    mfu: float
    """Fraction of the dense peak that matmul work reaches."""
    overhead_s_per_layer: float
    """Fixed time per decoder layer per micro-batch (kernel launches, Python), seconds."""
    basis: str
    """Where ``mfu`` comes from: ``measured``, ``published-gpu``, ``published-generation``, ``published-any``."""
    sources: tuple[str, ...]


class ReferencePoint(Frozen):
    """One published (or measured) training speed, normalized."""

    id: str
    gpu: str
    method: Method
    stack: str
    mfu: float
    source: str


class TimeBreakdown(Frozen):
    """Seconds per micro-batch by part, and the resulting throughput."""

    compute_s: float
    weights_s: float
    dequant_s: float
    overhead_s: float
    optimizer_s: float
    """Per optimizer step (once every ``grad_accum`` micro-batches)."""
    tokens_per_s: float
    mfu: float
    peak_tflops: float
