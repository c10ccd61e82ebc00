"""``loraplan probe``: measure what the estimator predicts (GPU, or CPU trace with ``--trace``).

Thin: parsing and output only. The probe stack (torch, transformers, peft, bitsandbytes) and rich are
imported inside the command, so ``import planner.cli`` stays light.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import click

from planner.calibration import cache_calibration
from planner.catalog import load_model
from planner.cli.options import model_options, train_spec
from planner.cli.output import check_writable, emit_json, save_json
from planner.cli.parallel_options import parallel_options
from planner.cli.probe_matrix import MATRIX_KEYS, matrix_options, run_matrix_command
from planner.errors import PlannerError
from planner.parallel.spec import ParallelSpec, Strategy

INTERRUPTED_EXIT = 130


def _positive(ctx: click.Context, param: click.Parameter, value: int) -> int:
    if value <= 0:
        raise click.BadParameter(f"must be a positive integer, got {value}")
    return value


def _probe_stack() -> ModuleType:
    """:mod:`probes.run` (imports torch, transformers, peft), or one line naming the missing extra."""
    try:
        from probes import run  # the heavy import, on purpose here
    except ImportError as err:
        raise PlannerError(f"loraplan probe needs the probe extra (pip install 'loraplan[probe]'): {err}") from None
    return run


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
@click.option("--device", "launch_device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto",
              show_default=True, help="With --gpus N / --parallel: cuda (NCCL), or cpu (gloo ranks: a plumbing "
                                      "check of launch and gathering, not a GPU measurement).")
@parallel_options
@matrix_options
def probe(model: str | None, gpu: str | None, steps: int, find_max_batch: bool, save: str | None, as_json: bool,
          trace: bool, detect: bool, parallel: ParallelSpec, launch_device: str, **options: Any) -> None:
    """Measure MODEL's fine-tuning memory on this GPU (random weights), or trace it on CPU (--trace).

    Runs on the first visible GPU (select one with CUDA_VISIBLE_DEVICES); the estimate it is
    compared with uses --gpu, else the shipped profile matching the detected device. With --gpus N or
    --parallel fsdp/fsdp2/ddp it launches N ranks under torch.distributed.run and reports each rank's peak.
    """
    matrix = {k: options.pop(k) for k in MATRIX_KEYS}
    if matrix["matrix"]:
        run_matrix_command(matrix, trace=trace, as_json=as_json)
        return
    run = _probe_stack()
    if detect:
        _detect(as_json)
        return
    if model is None:
        raise click.UsageError("missing argument MODEL (or use --detect)")
    load_model(model)  # unknown names fail here, before any GPU check
    if save:
        check_writable(save)  # before minutes of probing, not after
    if parallel.gpus > 1 or parallel.strategy is not Strategy.NONE:
        _launch(model, train_spec(**options), parallel, launch_device, gpu=gpu, steps=steps, save=save,
                as_json=as_json)
        return
    request = run.ProbeRequest(model=model, spec=train_spec(**options), gpu=gpu, steps=steps,
                               find_max_batch=find_max_batch, argv=list(sys.argv))
    result = _measure(run, request, trace=trace, as_json=as_json)
    _report(result, save=save, as_json=as_json)
    if result.interrupted:
        sys.exit(INTERRUPTED_EXIT)


def _launch(model: str, spec: Any, parallel: ParallelSpec, device: str, *, gpu: str | None, steps: int,
            save: str | None, as_json: bool) -> None:
    """``--gpus N`` / ``--parallel``: the ranks under torch.distributed.run (:mod:`probes.launch`)."""
    from probes.launch import run_launch_probe

    try:
        result = run_launch_probe(model, spec, parallel, device=device, steps=steps, gpu=gpu)
    except KeyboardInterrupt:
        click.echo("interrupted: launched probe stopped", err=True)
        sys.exit(INTERRUPTED_EXIT)
    data = result.model_dump(mode="json")
    if save:
        save_json(data, save)
    if as_json:
        emit_json(data)
        return
    from planner.cli.render.probe import render_launch

    render_launch(result)
    if save:
        click.echo(f"saved {save}")


def _detect(as_json: bool) -> None:
    """``--detect``: the visible GPUs, or exit 1 pointing to ``--trace``."""
    from probes.detect import NO_GPU_MESSAGE, detect_gpus, require_gpu

    if as_json:
        gpus = detect_gpus()
        emit_json({"gpus": [g.model_dump(mode="json") for g in gpus], "error": None if gpus else NO_GPU_MESSAGE})
        if not gpus:
            sys.exit(1)
        return
    gpus = require_gpu()
    from planner.cli.render.probe import render_gpus

    render_gpus(gpus)


def _measure(run: ModuleType, request: Any, *, trace: bool, as_json: bool) -> Any:
    """Run the trace or the GPU probe with its progress display; Ctrl-C exits 130."""
    from planner.cli.render import probe as render
    from probes.detect import require_gpu

    try:
        if trace:
            with render.trace_status():
                return run.run_trace_probe(request, on_try=render.trying)
        gpus = require_gpu()
        if not as_json:
            render.render_gpus(gpus)
        with render.ProbeProgress() as progress:
            return run.run_gpu_probe(request, progress)
    except KeyboardInterrupt:
        click.echo("interrupted: probe stopped, its memory was released", err=True)
        sys.exit(INTERRUPTED_EXIT)


def _report(result: Any, *, save: str | None, as_json: bool) -> None:
    """Save, cache the GPU's calibration, then print the JSON object or the tables."""
    data = result.model_dump(mode="json")
    if save:
        save_json(data, save)
    cached = None
    if result.mode == "gpu" and result.calibration is not None:
        cached = cache_calibration(result.calibration)
    if as_json:
        emit_json(data)
        return
    from planner.cli.render.probe import render_result

    render_result(result)
    if save:
        click.echo(f"saved {save}")
    if cached is not None:
        click.echo(f"calibration for {result.calibration.profile or result.calibration.gpu} cached at {cached}")
