"""Rich rendering for ``loraplan probe --matrix``: the budget plan and the estimate-vs-measured summary."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from planner.cli.render.console import make_console
from planner.cli.render.table import compact_table


def _f(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def render_plan(plan: Any, console: Console | None = None) -> None:
    """``--dry-run``: every row's estimated GPU seconds and whether it fits the budget."""
    console = console or make_console()
    table = compact_table(("row", "left"), ("prio", "right"), ("tokens", "right"), ("tok/s", "right"),
                          ("est s", "right"), ("run", "left"), title="matrix plan (H200 time model)")
    for r in plan.rows:
        table.add_row(r.id, str(r.priority), str(r.tokens), f"{r.tokens_per_s:.0f}", f"{r.seconds:.1f}",
                      "yes" if r.keep else "drop")
    console.print(table)
    console.print(f"kept {plan.kept_s:.0f} s of {plan.total_s:.0f} s planned; budget {plan.budget_s:.0f} s")


def render_row_done(record: Any, console: Console | None = None) -> None:
    """One line per finished row (stderr)."""
    console = console or make_console(stderr=True)
    console.print(f"{record.row.id}: {record.status} ({record.seconds:.0f} s)", highlight=False)


def render_summary(summary: Any, console: Console | None = None) -> None:
    """Estimate vs measured GiB (allocated) and the error of allocated / reserved / device per row."""
    console = console or make_console()
    table = compact_table(("run", "left"), ("status", "left"), ("alloc est", "right"), ("meas", "right"),
                          ("err%", "right"), ("resv", "right"), ("dev", "right"), ("tok/s", "right"),
                          title=f"{summary.matrix} on {summary.gpu} ({summary.mode})")
    for r in summary.rows:
        table.add_row(r.id, r.status, _f(r.allocated.estimate_gib), _f(r.allocated.measured_gib, ".3f"),
                      _f(r.allocated.error_pct, "+.1f"), _f(r.reserved.error_pct, "+.1f"),
                      _f(r.device.error_pct, "+.1f"), _f(r.tokens_per_s, ".0f"))
    console.print(table)
    med, worst = summary.median_abs_error_pct, summary.worst_abs_error_pct
    console.print("median |err| %: " + ", ".join(f"{k} {_f(v, '.1f')}" for k, v in med.items()), highlight=False)
    console.print("worst |err| %:  " + ", ".join(f"{k} {_f(v, '.1f')}" for k, v in worst.items()), highlight=False)
    console.print(f"total run time {summary.total_seconds:.0f} s", highlight=False)
