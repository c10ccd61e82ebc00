"""Rich rendering of a :class:`~planner.dataset.report.DatasetReport` (fits 80 columns)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from planner.cli.render.console import make_console
from planner.cli.render.table import compact_table
from planner.dataset.report import DatasetReport

_BAR = 30
"""Width of the longest histogram bar, in characters."""


def render_dataset(report: DatasetReport, console: Console | None = None) -> None:
    """Print the dataset's lengths, histogram, truncation, padding and epoch time."""
    console = console or make_console()
    name = report.tokenizer if report.tokenizer == "bytes-estimate" else "tokenizer.json"
    console.print(f"dataset {escape(report.path)} ({report.format}, field {escape(report.field)})")
    console.print(f"{report.examples:,} examples, {report.tokens_total:,} tokens ({name})")
    n = report.lengths
    console.print(f"tokens/example: min {n.min:,}  median {n.median:,.0f}  p95 {n.p95:,.0f}  "
                  f"p99 {n.p99:,.0f}  max {n.max:,}")
    table = compact_table(("tokens", "right"), ("examples", "right"), ("", "left"))
    top = max(b.count for b in report.histogram) or 1
    for b in report.histogram:
        table.add_row(f"{b.lo:,}-{b.hi:,}", f"{b.count:,}", "#" * max(1 if b.count else 0, round(_BAR * b.count / top)))
    console.print(table)
    bt = report.batching
    pct = 100.0 * report.truncated / report.examples
    cut = "split across blocks" if report.packing else "truncated"
    console.print(f"{report.truncated:,} examples ({pct:.1f}%) longer than seq {report.seq_len:,}: {cut}")
    how = (f"packed into {report.seq_len:,}-token blocks" if report.packing
           else f"padded per batch of {bt.micro_batch}")
    console.print(f"{how}: {report.padding_waste_pct:.1f}% padding "
                  f"({bt.tokens_trained:,} real of {bt.tokens_processed:,} tokens)")
    console.print(f"{bt.micro_batches:,} micro-batches/epoch; memory sized for the longest batch, "
                  f"{bt.micro_batch} x {bt.batch_seq_len:,}")
    if report.hours_per_epoch is not None:
        console.print(f"time: {report.hours_per_epoch:.3g} h/epoch at {report.tokens_per_s:,.0f} tokens/s")
    for w in report.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}")


def render_seq_len_rows(rows: list, console: Console | None = None) -> None:
    """``sweep --dataset``: truncation, longest batch, padding and epoch time per swept ``--seq-len``."""
    console = console or make_console()
    table = compact_table(("seq-len", "right"), ("truncated", "right"), ("longest batch", "right"),
                          ("padding %", "right"), ("h/epoch", "right"), title="your dataset per --seq-len")
    for r in rows:
        hours = "-" if r.hours_per_epoch is None else f"{r.hours_per_epoch:.3g}"
        table.add_row(f"{r.seq_len:,}", f"{r.truncated:,}", f"{r.batch_seq_len:,}", f"{r.padding_waste_pct:.1f}", hours)
    console.print(table)
