"""``loraplan estimate``: thin click command over :func:`planner.estimator.estimate_with_advice`."""

from __future__ import annotations

from typing import Any

import click

from planner.cli.options import model_options, train_spec
from planner.cli.output import emit_json
from planner.estimator import estimate_with_advice


@click.command()
@click.argument("model")
@model_options
@click.option("--calibrate", "calibrate", type=click.Path(dir_okay=False), default=None,
              help="Use a probe result (loraplan probe --save) for this GPU's CUDA context and allocator reserve.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def estimate(model: str, gpu: str | None, calibrate: str | None, as_json: bool, **options: Any) -> None:
    """Estimate GPU memory of fine-tuning MODEL (name, alias, hub id, or local config.json)."""
    est = estimate_with_advice(model, train_spec(**options), gpu, calibrate)
    if as_json:
        emit_json(est.to_json())
        return
    from planner.cli.render.estimate import render_estimate  # rich: only for the table

    render_estimate(est)
