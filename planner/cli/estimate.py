"""``loraplan estimate``: thin click command over :func:`planner.estimator.estimate_with_advice`."""

from __future__ import annotations

from typing import Any

import click

from planner.cli.estimate_extras import check_needs_gpu, estimate_json, exit_for_check, explain_check_options
from planner.cli.estimate_extras import explanation_for
from planner.cli.dataset_options import dataset_for, dataset_options, pop_dataset
from planner.cli.options import model_options, train_spec
from planner.cli.output import emit_json
from planner.cli.parallel_options import parallel_options
from planner.cli.stack_options import apply_stack, stack_from_options, stack_options
from planner.estimator.stack_api import estimate_with_stack


@click.command()
@click.argument("model")
@model_options
@parallel_options
@stack_options
@click.option("--calibrate", "calibrate", type=click.Path(dir_okay=False), default=None,
              help="Use a probe result (loraplan probe --save) for this GPU's CUDA context and allocator reserve.")
@explain_check_options
@dataset_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def estimate(model: str, gpu: str | None, calibrate: str | None, as_json: bool, explain: bool, check: bool,
             **options: Any) -> None:
    """Estimate GPU memory of fine-tuning MODEL (name, alias, hub id, or local config.json)."""
    parallel = options.pop("parallel")
    resolution = stack_from_options(options)
    data_values = pop_dataset(options)
    train, dataset = dataset_for(model, apply_stack(train_spec(**options), resolution), gpu, data_values)
    check_needs_gpu(check, gpu)
    parallel = parallel if parallel.multi else None
    est = estimate_with_stack(model, train, gpu, calibrate, resolution, parallel=parallel)
    explanation = explanation_for(model, train, gpu, calibrate, est, parallel) if explain else None
    if as_json:
        emit_json(estimate_json(est, explanation, dataset))
    else:
        from planner.cli.render.estimate import render_estimate  # rich: only for the table

        render_estimate(est)
        if dataset is not None:
            from planner.cli.render.dataset import render_dataset

            render_dataset(dataset)
        if explanation is not None:
            from planner.cli.render.explain import render_explanation

            render_explanation(explanation)
    if check:
        exit_for_check(est)
