"""``loraplan probe --matrix FILE --out DIR``: the measurement matrix options of ``probe``.

Applied to ``probe`` with one decorator (:func:`matrix_options`); :func:`run_matrix_command` does the
work. The runner (:mod:`probes.matrix`) starts one fresh ``loraplan probe`` process per row, so this
command itself imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from planner.cli.output import emit_json
from planner.matrix.budget import DEFAULT_BUDGET_S, DEFAULT_TIMEOUT_S, plan
from planner.matrix.spec import load_matrix

MATRIX_KEYS = ("matrix", "out", "timeout_per_run", "budget_s", "dry_run")


def matrix_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--matrix``, ``--out``, ``--timeout-per-run``, ``--budget-s``, ``--dry-run``."""
    for option in reversed([
        click.option("--matrix", "matrix", type=click.Path(dir_okay=False), default=None,
                     help="Run every row of this matrix JSON, each in a fresh process."),
        click.option("--out", type=click.Path(file_okay=False), default=None,
                     help="--matrix: directory for runs/*.json and summary.json / summary.md."),
        click.option("--timeout-per-run", type=click.FloatRange(min=1), default=DEFAULT_TIMEOUT_S, show_default=True,
                     help="--matrix: kill a row's process after this many seconds (recorded as timeout)."),
        click.option("--budget-s", type=click.FloatRange(min=0), default=DEFAULT_BUDGET_S, show_default=True,
                     help="--matrix: drop the lowest-priority rows until the estimated GPU time fits."),
        click.option("--dry-run", is_flag=True, help="--matrix: print the plan (seconds per row) and exit."),
    ]):
        f = option(f)
    return f


def run_matrix_command(options: dict[str, Any], *, trace: bool, as_json: bool) -> None:
    """Validate the matrix, then print the plan (``--dry-run``) or run it and print the summary."""
    from planner.cli.render import matrix as render
    from probes.matrix import run_matrix

    matrix = load_matrix(options["matrix"])
    if options["dry_run"]:
        the_plan = plan(matrix, options["budget_s"])
        if as_json:
            emit_json(the_plan.model_dump(mode="json"))
        else:
            render.render_plan(the_plan)
        return
    if not options["out"]:
        raise click.UsageError("--matrix needs --out DIR (or --dry-run)")
    _, summary = run_matrix(matrix, Path(options["out"]), trace=trace, timeout_s=options["timeout_per_run"],
                            budget_s=options["budget_s"], on_row=None if as_json else render.render_row_done)
    if as_json:
        emit_json(summary.model_dump(mode="json"))
    else:
        render.render_summary(summary)
        click.echo(f"wrote {Path(options['out']) / 'summary.json'} and summary.md")
