"""``loraplan probe``: measure what the estimator predicts (GPU, or CPU trace with ``--trace``).

Thin: parsing and output only. The probe stack (torch, transformers, peft, bitsandbytes) is imported
inside the command, so ``import planner.cli`` stays light.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from planner.cli.options import model_options, train_spec
from planner.errors import PlannerError

INTERRUPTED_EXIT = 130


def _positive(ctx: click.Context, param: click.Parameter, value: int) -> int:
    if value <= 0:
        raise click.BadParameter(f"must be a positive integer, got {value}")
    return value


def _probe_stack() -> Any:
    try:
        import probes.run  # noqa: F401 - the heavy import, on purpose here
    except ImportError as err:
        raise PlannerError(f"loraplan probe needs the probe extra (pip install 'loraplan[probe]'): {err}") from None
    import probes

    return probes


@click.command()
@click.argument("model", required=False)
@model_options
@click.option("--steps", type=int, default=2, show_default=True, callback=_positive,
              help="Optimizer steps measured after one warm-up step (at least 2 are run).")
@click.option("--find-max-batch", is_flag=True, help="Search the largest micro-batch that fits (and the estimator's).")
@click.option("--save", type=click.Path(dir_okay=False), default=None, help="Write the result JSON to PATH.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--trace", is_flag=True, help="No GPU: run the step on CPU fake tensors and count live bytes.")
@click.option("--detect", is_flag=True, help="List the visible GPUs and exit.")
def probe(model: str | None, gpu: str | None, steps: int, find_max_batch: bool, save: str | None, as_json: bool,
          trace: bool, detect: bool, **options: Any) -> None:
    """Measure MODEL's fine-tuning memory on this GPU (random weights), or trace it on CPU (--trace).

    Runs on the first visible GPU (select one with CUDA_VISIBLE_DEVICES); the estimate it is
    compared with uses --gpu, else the shipped profile matching the detected device.
    """
    stack = _probe_stack()
    from planner.cli.render import probe as render

    if detect:
        gpus = stack.detect.require_gpu()
        if as_json:
            click.echo(json.dumps({"gpus": [g.model_dump(mode="json") for g in gpus]}, indent=2))
        else:
            render.render_gpus(gpus)
        return
    if model is None:
        raise click.UsageError("missing argument MODEL (or use --detect)")
    from planner.catalog import load_model

    load_model(model)  # unknown names fail here, before any GPU check
    request = stack.run.ProbeRequest(model=model, spec=train_spec(**options), gpu=gpu, steps=steps,
                                     find_max_batch=find_max_batch, argv=list(sys.argv))
    try:
        if trace:
            with render.trace_status():
                result = stack.run.run_trace_probe(request, on_try=render.trying)
        else:
            gpus = stack.detect.require_gpu()
            if not as_json:
                render.render_gpus(gpus)
            with render.ProbeProgress() as progress:
                result = stack.run.run_gpu_probe(request, progress)
    except KeyboardInterrupt:
        click.echo("interrupted: probe stopped, its memory was released", err=True)
        sys.exit(INTERRUPTED_EXIT)
    if save:
        stack.run.save_result(result, save)
    cached = stack.run.cache_calibration(result) if result.mode == "gpu" else None
    if as_json:
        click.echo(json.dumps(result.model_dump(mode="json"), indent=2))
    else:
        render.render_result(result)
        if save:
            click.echo(f"saved {save}")
        if cached is not None:
            click.echo(f"calibration for {result.calibration.profile or result.calibration.gpu} cached at {cached}")
    if result.interrupted:
        sys.exit(INTERRUPTED_EXIT)
