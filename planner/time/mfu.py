"""Utilization per GPU: measured on this GPU, fitted on its generation's published runs, or inferred.

In order: probe measurements in ``profiles/measurements/`` for this GPU (the large-GEMM utilization that makes
the time model reproduce them, every other constant as fitted); the fit of this GPU's generation
(``throughput.json`` ``fitted.generations``, written by :mod:`planner.time.fit` from the published
transformers-stack runs); the fit of the generation it is inferred from (``infer_from``). The GEMM-size
factor and the fixed dispatch costs are the fitted ones in every case. :class:`Utilization` states which
(``provenance``, ``from_gpu``) and the sources.
"""

from __future__ import annotations

import statistics
from functools import cache
from pathlib import Path

from planner.specs import GpuProfile, Method
from planner.time.constants import TimeConstants, measurements_dir, time_constants
from planner.time.points import FIT, HOLDOUT, Point, measured_points, published_points
from planner.time.schemas import Provenance, Utilization

_DEFAULT_GENERATION = "ampere-datacenter"
"""Where a compute capability missing from ``throughput.json`` ``generations`` borrows from."""


def generation(gpu: GpuProfile, consts: TimeConstants | None = None) -> str:
    """The GPU's generation name (``throughput.json`` ``generations``, by compute capability)."""
    consts = consts or time_constants()
    return consts.generations.get(gpu.compute_capability, "unknown")


def fitted_utilization(gen: str, consts: TimeConstants | None = None, mfu: float | None = None) -> Utilization:
    """The fitted constants for generation ``gen`` (its own fit, else the one it is inferred from)."""
    consts = consts or time_constants()
    fit = consts.fitted
    own = gen in fit.mfu_by_generation
    source_gen = gen if own else consts.infer_from.get(gen, _DEFAULT_GENERATION)
    run_gpu = fit.fitted_gpu[source_gen]
    provenance = Provenance.FITTED if own else Provenance.INFERRED
    sources = tuple(sorted({p.source for p in published_points() if p.split in (FIT, HOLDOUT)
                            and p.gpu.name == run_gpu}))
    return Utilization(
        mfu=fit.mfu_by_generation[source_gen] if mfu is None else mfu,
        gemm_half_tokens=fit.gemm_half_tokens, gemm_half_dim=fit.gemm_half_dim,
        overhead_s_per_layer=fit.overhead_s_per_layer, overhead_s_per_module=fit.overhead_s_per_module,
        basis=provenance.value, provenance=provenance, from_gpu=run_gpu, generation=gen, sources=sources,
    )


def _predicted(point: Point, util: Utilization) -> float:
    from planner.time.step import time_breakdown

    return time_breakdown(point.config, point.train, point.gpu, util, point.impl).tokens_per_s


def solve_mfu(point: Point, base: Utilization) -> float:
    """The large-GEMM utilization at which the model reproduces ``point`` (bisection; other constants fixed)."""
    lo, hi = 0.01, 1.0
    if _predicted(point, base.model_copy(update={"mfu": hi})) < point.tokens_per_s:
        return hi
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if _predicted(point, base.model_copy(update={"mfu": mid})) < point.tokens_per_s:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def utilization(gpu: GpuProfile, method: Method = Method.LORA, measurements: Path | None = None) -> Utilization:
    """Utilization for ``gpu``: measured, else fitted on its generation, else inferred (see module docstring).

    ``method`` is accepted for older callers: the step model charges each method's terms itself, so one
    utilization holds for every method on a GPU.
    """
    del method
    return _utilization(gpu, measurements or measurements_dir())


@cache
def _utilization(gpu: GpuProfile, measurements: Path) -> Utilization:
    gen = generation(gpu)
    base = fitted_utilization(gen)
    hits = [p for p in measured_points(measurements) if p.gpu.name == gpu.name]
    if not hits:
        return base
    mfu = statistics.median(solve_mfu(p, base) for p in hits)
    return base.model_copy(update={
        "mfu": round(mfu, 4), "basis": Provenance.MEASURED.value, "provenance": Provenance.MEASURED,
        "from_gpu": None, "sources": tuple(sorted(p.source for p in hits)),
    })
