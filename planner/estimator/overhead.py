"""Overhead terms outside the step's tensors: cuBLAS workspace, CUDA context, the allocator's cached blocks.

Constants and their sources are in ``profiles/runtime.json`` (``cuda_context_gib``,
``cublas_workspace_gib``); a probe calibration replaces the context and the allocator reserve with
what was measured on that GPU.
"""

from __future__ import annotations

from planner.calibration import Calibration
from planner.catalog import runtime_constants
from planner.memory.context import Context
from planner.memory.ledger import Ledger, Phase, Pool, Term, alive
from planner.memory.step import cached_logits_term
from planner.specs import GIB, GpuProfile

RUNTIME = "profiles/runtime.json"


def _compute_capability(gpu: GpuProfile | None) -> str | None:
    return gpu.compute_capability if gpu else None


def cuda_context_bytes(gpu: GpuProfile | None, calibration: Calibration | None) -> float:
    """What nvidia-smi shows for a process's CUDA context (measured when calibrated)."""
    if calibration is not None:
        return calibration.cuda_context_gib * GIB
    ctx = runtime_constants()["cuda_context_gib"]
    cc = _compute_capability(gpu)
    return (ctx["by_compute_capability"].get(cc, ctx["default"]) if cc else ctx["default"]) * GIB


def cublas_workspace_bytes(gpu: GpuProfile | None) -> float:
    """cuBLAS workspace torch allocates per (handle, stream) from its caching allocator."""
    ws = runtime_constants()["cublas_workspace_gib"]
    cc = _compute_capability(gpu)
    return (ws["by_compute_capability"].get(cc, ws["default"]) if cc else ws["default"]) * GIB


def runtime_terms(ledger: Ledger, gpu: GpuProfile | None, calibration: Calibration | None) -> Ledger:
    """``ledger`` plus the cuBLAS workspace and CUDA context, present in every phase."""
    phases = ledger.phases
    return ledger.plus(
        Term("cuBLAS workspace", "overhead", alive(cublas_workspace_bytes(gpu), phases),
             source=f"{RUNTIME} cublas_workspace_gib"),
        Term("CUDA context", "overhead", alive(cuda_context_bytes(gpu, calibration), phases), pool=Pool.CONTEXT,
             source=f"{RUNTIME} cuda_context_gib" if calibration is None else f"probe calibration ({calibration.gpu})"),
    )


def allocator_reserve_term(ctx: Context, ledger: Ledger, calibration: Calibration | None) -> Term:
    """Bytes the CUDA caching allocator holds beyond the live tensors.

    c10/cuda/CUDACachingAllocator.cpp never returns freed blocks during a step, and a freed block serves
    only requests that fit in it (the cached logits block at the cross-entropy backward peak). Large
    requests are also rounded up to 2 MiB segments (kRoundLarge); that is folded into the fraction of
    allocated memory a probe measures (``calibration``).
    """
    if calibration is not None:
        fraction = calibration.allocator_reserve_fraction
        by_phase = {p: ledger.allocated(p) * fraction for p in ledger.phases}
        return Term("allocator reserve (calibrated)", "overhead", by_phase, pool=Pool.CACHED,
                    source=f"probe calibration ({calibration.gpu}): reserved / allocated - 1")
    return cached_logits_term(ctx)


def phase_of(ledger: Ledger, group: str) -> tuple[Phase, ...]:
    return tuple(p for p in ledger.phases if p.group == group)
