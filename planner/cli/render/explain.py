"""Rich rendering of an :class:`~planner.explain.Explanation` (``estimate --explain``)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from planner.cli.render.console import make_console
from planner.cli.render.table import compact_table
from planner.explain import Change, ChangeStatus, Explanation

NOT_MODELED = "not modeled for this stack"


def _gib(value: float, sign: str = "") -> str:
    """Two decimals below 1000 GiB, one above (the table stays within 80 columns)."""
    return f"{value:{sign}.{2 if abs(value) < 1000 else 1}f}"


def _fits(change: Change) -> str:
    if change.fits is None:
        return "-"
    return "[green]yes[/]" if change.fits else "[red]no[/]"


def render_explanation(explanation: Explanation, console: Console | None = None) -> None:
    """The single-change table (largest savings first), the not-modeled notes and the changes that do not apply."""
    console = console or make_console()
    gpu = explanation.gpu
    limit = f"; {gpu.name} usable {explanation.usable_gib:.2f} GiB" if gpu and explanation.usable_gib else ""
    console.print(f"[bold]What would it take[/] (device peak now {explanation.peak_gib:.2f} GiB{limit}):")
    columns = [("change", "left"), ("flags", "left"), ("peak", "right"), ("saves", "right")]
    table = compact_table(*columns, *([("fits", "left")] if gpu else []))
    skipped = []
    for c in explanation.changes:
        if c.status is ChangeStatus.NOT_APPLICABLE:
            skipped.append(f"{c.change} ({c.note})")
            continue
        if c.status is ChangeStatus.NOT_MODELED:
            row = [c.change, f"[dim]{NOT_MODELED}[/]", "-", "-"]
        else:
            row = [c.change, escape(c.flags), _gib(c.peak_gib), _gib(c.saves_gib, "+")]
        table.add_row(*row, *([_fits(c) if c.status is ChangeStatus.MODELED else "-"] if gpu else []))
    console.print(table)
    console.print("[dim]peak: device GiB with that one change; saves: GiB less than now (negative: more)[/]")
    for c in explanation.changes:
        if c.note and c.status is not ChangeStatus.NOT_APPLICABLE:
            console.print(f"[dim] - {escape(c.change)}: {escape(c.note)}[/]", highlight=False)
    if skipped:
        console.print(f"[dim]not applicable: {escape('; '.join(skipped))}[/]", highlight=False)
