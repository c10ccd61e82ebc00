"""Utilization (MFU) and fixed overhead, derived from known training speeds through the same time model.

Compute runs at the GPU's dense peak times a utilization (MFU) taken, in order, from probe measurements
in ``profiles/measurements/``, from published runs in ``profiles/throughput.json`` on the same GPU,
then the same GPU generation, then any GPU - each derived through the FLOP model of
:mod:`planner.time.flops` so the definitions agree. Every figure used is reported in :class:`Utilization`.
"""

from __future__ import annotations

import statistics
from functools import cache
from pathlib import Path
from typing import Any

from planner.specs import GpuProfile, Method
from planner.time.constants import measurements_dir, throughput_profile
from planner.time.points import Point, measured_points, published_points
from planner.time.schemas import ReferencePoint, Utilization
from planner.time.step import time_breakdown

_AT_PEAK = Utilization(mfu=1.0, overhead_s_per_layer=0.0, basis="fit", sources=())


def _known_seconds(point: Point, consts: dict[str, Any]) -> tuple[float, float, float]:
    """(seconds not spent in matmuls or fixed overhead, matmul seconds at MFU 1, overhead seconds per s/layer)."""
    t = time_breakdown(point.config, point.train, point.gpu, _AT_PEAK, consts)
    ga = point.train.grad_accum
    known = ga * t.dequant_s + t.optimizer_s
    compute = ga * t.compute_s
    overhead = ga * point.config.num_hidden_layers
    return known, compute, overhead


def fit_overhead(points: tuple[Point, ...], consts: dict[str, Any]) -> float:
    """Least-squares fit of ``seconds = known + compute / mfu + overhead * c`` over a series of one source."""
    rows = [_known_seconds(p, consts) for p in points]
    ys = [p.seconds_per_optimizer_step - r[0] for p, r in zip(points, rows)]
    # Normal equations for y = a * x1 + c * x2 (a = 1 / mfu).
    s11 = sum(r[1] * r[1] for r in rows)
    s12 = sum(r[1] * r[2] for r in rows)
    s22 = sum(r[2] * r[2] for r in rows)
    b1 = sum(r[1] * y for r, y in zip(rows, ys))
    b2 = sum(r[2] * y for r, y in zip(rows, ys))
    det = s11 * s22 - s12 * s12
    if abs(det) < 1e-30:
        return 0.0
    return max(0.0, (s11 * b2 - s12 * b1) / det)


@cache
def default_overhead() -> float:
    """Fixed seconds per decoder layer per micro-batch, fitted on the series named in throughput.json."""
    consts = throughput_profile()
    series = consts["overhead_fit"]["series"]
    points = tuple(p for p in published_points() if p.id in series)
    return fit_overhead(points, consts)


def point_mfu(point: Point, overhead: float, consts: dict[str, Any] | None = None) -> float:
    """The MFU that makes the time model reproduce ``point``'s measured seconds."""
    consts = consts or throughput_profile()
    known, compute, per = _known_seconds(point, consts)
    left = point.seconds_per_optimizer_step - known - per * overhead
    return compute / left if left > 0 else float("nan")


@cache
def reference_points() -> tuple[ReferencePoint, ...]:
    """Every published point with the MFU derived from it (for docs and tests)."""
    consts = throughput_profile()
    c = default_overhead()
    out = []
    for p in published_points():
        overhead = c if p.stack == "transformers" else 0.0
        out.append(ReferencePoint(id=p.id, gpu=p.gpu.name, method=p.train.method, stack=p.stack,
                                  mfu=point_mfu(p, overhead, consts), source=p.source))
    return tuple(out)


def _generation(gpu: GpuProfile) -> str:
    return gpu.compute_capability


def utilization(gpu: GpuProfile, method: Method, measurements: Path | None = None) -> Utilization:
    """MFU for ``gpu`` and ``method``: measured, else published on this GPU, its generation, or any GPU.

    QLoRA and full fine-tuning fall back to LoRA's figure (``method_fallback`` in throughput.json):
    their GEMMs are the same 16-bit matmuls, and QLoRA's dequantization is modeled separately.
    """
    return _utilization(gpu, method, measurements or measurements_dir())


@cache
def _utilization(gpu: GpuProfile, method: Method, measurements: Path) -> Utilization:
    consts = throughput_profile()
    c = default_overhead()
    fallback = consts["method_fallback"]
    measured = measured_points(measurements)
    published = [p for p in published_points() if p.stack == consts["stack"]]
    methods = [method] + ([Method(fallback[method.value])] if method.value in fallback else [])
    for m in methods:
        for basis, pool, match in (
            ("measured", measured, lambda p: p.gpu.name == gpu.name),
            ("published-gpu", published, lambda p: p.gpu.name == gpu.name),
            ("published-generation", published, lambda p: _generation(p.gpu) == _generation(gpu)),
            ("published-any", published, lambda p: True),
        ):
            hits = [p for p in pool if p.train.method is m and match(p)]
            mfus = [point_mfu(p, c, consts) for p in hits]
            mfus = [x for x in mfus if x == x and 0 < x < 1]
            if mfus:
                note = "" if m is method else f" ({m.value} figure used for {method.value})"
                return Utilization(
                    mfu=round(statistics.median(mfus), 4),
                    overhead_s_per_layer=c,
                    basis=basis,
                    sources=tuple(sorted({p.source + note for p in hits})),
                )
    default = consts["default_mfu"]
    return Utilization(mfu=default["value"], overhead_s_per_layer=c, basis="default", sources=(default["source"],))
