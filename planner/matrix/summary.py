"""Estimate vs measured for matrix runs: the summary table and the CI check's tolerances.

Measured quantities (``probes.results.MeasuredGiB``): ``peak_allocated`` (``torch.cuda.max_memory_allocated``,
or the traced live-byte peak), ``peak_reserved`` (``max_memory_reserved``) and ``device`` (NVML, CUDA
context included). Error is ``(estimate - measured) / measured * 100``. Tolerances are issue 10's:
allocated 5 %, reserved 8 %, device 10 %.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable

from planner.catalog import load_gpu
from planner.estimator import estimate
from planner.matrix.spec import RunRecord, row_profile
from planner.specs import Frozen

TOLERANCE_PCT = {"allocated": 5.0, "reserved": 8.0, "device": 10.0}
_MEASURED_KEY = {"allocated": "peak_allocated", "reserved": "peak_reserved", "device": "device"}


def _err(est: float | None, meas: float | None) -> float | None:
    if est is None or not meas:
        return None
    return (est - meas) / meas * 100.0


class Quantity(Frozen):
    estimate_gib: float | None = None
    measured_gib: float | None = None
    error_pct: float | None = None


class SummaryRow(Frozen):
    id: str
    status: str
    allocated: Quantity = Quantity()
    reserved: Quantity = Quantity()
    device: Quantity = Quantity()
    tokens_per_s: float | None = None
    seconds: float = 0.0
    max_batch: int | None = None
    max_batch_estimated: int | None = None


class Summary(Frozen):
    matrix: str
    gpu: str
    mode: str
    rows: list[SummaryRow]
    median_abs_error_pct: dict[str, float | None]
    worst_abs_error_pct: dict[str, float | None]
    total_seconds: float


def summary_row(rec: RunRecord, reestimate: bool = False) -> SummaryRow:
    """One run's row; ``reestimate`` recomputes the estimate from the recorded configuration (CI check)
    instead of reading the estimate the probe recorded."""
    res = rec.result or {}
    measured = res.get("measured_gib") or {}
    if reestimate:
        peak = estimate(row_profile(rec.row), rec.row.train, load_gpu(rec.gpu)).peak_gib.model_dump()
    else:
        peak = ((res.get("estimate") or {}).get("peak_gib")) or {}
    quantities = {}
    for key, mkey in _MEASURED_KEY.items():
        e, m = peak.get(key), measured.get(mkey)
        quantities[key] = Quantity(estimate_gib=e, measured_gib=m, error_pct=_err(e, m))
    mb = res.get("max_batch") or {}
    return SummaryRow(id=rec.row.id, status=rec.status, tokens_per_s=res.get("tokens_per_s"), seconds=rec.seconds,
                      max_batch=mb.get("measured"), max_batch_estimated=mb.get("estimated"), **quantities)


def _stats(rows: list[SummaryRow], pick: str, fn) -> float | None:
    errs = [abs(getattr(r, pick).error_pct) for r in rows if r.status == "ok" and getattr(r, pick).error_pct is not None]
    return fn(errs) if errs else None


def summarize(records: Iterable[RunRecord], reestimate: bool = False) -> Summary:
    recs = list(records)
    rows = [summary_row(r, reestimate) for r in recs]
    first = recs[0] if recs else None
    return Summary(
        matrix=first.matrix if first else "", gpu=first.gpu if first else "", mode=first.mode if first else "",
        rows=rows,
        median_abs_error_pct={k: _stats(rows, k, statistics.median) for k in TOLERANCE_PCT},
        worst_abs_error_pct={k: _stats(rows, k, max) for k in TOLERANCE_PCT},
        total_seconds=sum(r.seconds for r in recs),
    )


def violations(rows: Iterable[SummaryRow], tolerance_pct: dict[str, float] = TOLERANCE_PCT) -> list[str]:
    """One line per ``ok`` row and quantity whose |error| exceeds its tolerance."""
    out = []
    for r in rows:
        if r.status != "ok":
            continue
        for key, tol in tolerance_pct.items():
            q: Quantity = getattr(r, key)
            if q.error_pct is not None and abs(q.error_pct) > tol:
                out.append(f"{r.id}: {key} estimate {q.estimate_gib:.3f} GiB vs measured {q.measured_gib:.3f} GiB "
                           f"({q.error_pct:+.1f}% > {tol:g}%)")
    return out


def markdown_table(summary: Summary) -> str:
    """``summary.md``: the per-run table plus median / worst error."""
    def f(x: float | None, spec: str = ".2f") -> str:
        return "" if x is None else format(x, spec)

    lines = [f"# {summary.matrix} on {summary.gpu} ({summary.mode})", "",
             "| run | status | alloc est | alloc meas | err % | resv est | resv meas | err % "
             "| dev est | dev meas | err % | tok/s | s |",
             "|" + "---|" * 13]
    for r in summary.rows:
        cells = [r.id, r.status]
        for q in (r.allocated, r.reserved, r.device):
            cells += [f(q.estimate_gib), f(q.measured_gib), f(q.error_pct, "+.1f")]
        cells += [f(r.tokens_per_s, ".0f"), f(r.seconds, ".0f")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| | allocated | reserved | device |", "|---|---|---|---|"]
    for label, d in (("median abs err %", summary.median_abs_error_pct), ("worst abs err %", summary.worst_abs_error_pct)):
        lines.append(f"| {label} | " + " | ".join(f(d[k], ".1f") for k in TOLERANCE_PCT) + " |")
    lines.append(f"\nTotal wall time of the runs: {summary.total_seconds:.0f} s")
    return "\n".join(lines) + "\n"
