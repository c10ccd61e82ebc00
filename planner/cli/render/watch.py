"""Rich rendering of a :class:`~probes.watch_results.WatchResult` (fits 80 columns)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from planner.cli.render.console import make_console
from planner.cli.render.table import compact_table

if TYPE_CHECKING:
    from planner.results import Estimate
    from probes.watch_results import WatchResult


def render_watch(result: WatchResult, estimate: Estimate | None = None, console: Console | None = None) -> None:
    """Per-GPU peaks (device and the command's processes), when they happened, the exit status."""
    console = console or make_console(stderr=False)
    table = compact_table(("gpu", "left"), ("before", "right"), ("peak device", "right"), ("at s", "right"),
                          ("peak job", "right"), ("at s", "right"), title="measured GiB (NVML)")
    for g in result.gpus:
        table.add_row(f"{g.index} {escape(g.name)}"[:28], f"{g.baseline_gib:.2f}", f"{g.peak_device_gib:.2f}",
                      f"{g.peak_device_at_s:.1f}", f"{g.peak_job_gib:.2f}", f"{g.peak_job_at_s:.1f}")
    console.print(table)
    console.print(f"{result.samples:,} samples every {result.interval_s:g} s over {result.seconds:.1f} s; "
                  f"exit status {result.exit_code}")
    if estimate is not None:
        measured = result.peak_job_gib
        diff = (f" ({(estimate.peak_gib.device - measured) / measured * 100:+.1f}%)" if measured else "")
        console.print(f"estimate {escape(estimate.model)}: {estimate.peak_gib.device:.2f} GiB on the device vs "
                      f"{measured:.2f} measured{diff}")
