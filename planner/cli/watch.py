"""``loraplan watch -- CMD ...``: run a command, sample NVML device memory until it exits, report the peaks."""

from __future__ import annotations

from typing import Any

import click

from planner.cli.options import model_options, train_spec
from planner.cli.output import check_writable, emit_json, save_json


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--interval", "interval_s", type=click.FloatRange(min=0.001), default=0.1, show_default=True,
              help="Seconds between NVML samples.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Write the result as JSON to this file ('-': print it instead of the table).")
@click.option("--model", "model", default=None,
              help="Also estimate this model with the options below and print it beside the measured peak.")
@model_options
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def watch(interval_s: float, json_out: str | None, model: str | None, gpu: str | None,
          command: tuple[str, ...], **options: Any) -> int:
    """Run COMMAND (after --) and report its peak device memory per GPU (NVML); exits with COMMAND's code."""
    if json_out and json_out != "-":
        check_writable(json_out)
    estimate = None
    if model:
        from planner.estimator import estimate_with_advice

        estimate = estimate_with_advice(model, train_spec(**options), gpu)
    from probes.watch import watch as run_watch  # NVML: only here

    result = run_watch(command, interval_s)
    if estimate is not None:
        result = result.model_copy(update={"estimate": estimate.to_json()})
    if json_out == "-":
        emit_json(result.model_dump(mode="json"))
        return result.exit_code
    if json_out:
        save_json(result.model_dump(mode="json"), json_out)
    from planner.cli.render.watch import render_watch

    render_watch(result, estimate)
    return result.exit_code
