"""``loraplan sweep``: device peak over one or two swept axes, as a terminal chart, a table, a file or JSON.

Takes ``estimate``'s options; ``--seq-len``, ``--micro-batch`` and ``--rank`` also accept ranges
(``512:8192`` doubles) and lists (``1,2,4,8``), ``--method`` and ``--optim`` lists (one line each).
"""

from __future__ import annotations

from dataclasses import replace

from typing import Any

import click

from planner.cli.output import emit_json

from planner.cli.dataset_options import dataset_options, pop_dataset
from planner.cli.options import model_options, train_spec
from planner.cli.stack_options import apply_stack, stack_from_options, stack_options
from planner.specs import TrainSpec

_DEFAULT = TrainSpec()
_AXIS_HELP = "N, START:STOP (doubling), START:STOP:xF or :+N, or a list such as 1,2,4,8"
_SWEPT = {
    "seq_len": click.Option(["--seq-len"], default=str(_DEFAULT.seq_len), show_default=True,
                            help=f"Tokens per sequence: {_AXIS_HELP}."),
    "micro_batch": click.Option(["--micro-batch"], default=str(_DEFAULT.micro_batch), show_default=True,
                                help=f"Sequences per forward pass: {_AXIS_HELP}."),
    "rank": click.Option(["--rank"], default=str(_DEFAULT.rank), show_default=True, help=f"LoRA rank: {_AXIS_HELP}."),
    "method": click.Option(["--method"], default=_DEFAULT.method.value, show_default=True,
                           help="lora, qlora, full, or a list (lora,qlora): one line each."),
    "optim": click.Option(["--optim"], default=_DEFAULT.optim.value, show_default=True,
                          help="Optimizer, or a list (adamw,paged-adamw-8bit): one line each."),
}


def sweep_options(f: Any) -> Any:
    """``estimate``'s options, with the sweepable ones taking ranges and lists."""
    f = model_options(f)
    f.__click_params__ = [_SWEPT.get(p.name, p) for p in f.__click_params__]
    return f


def sweep_request(x: str | None, options: dict[str, Any]) -> Any:
    """Parse the options into a :class:`planner.sweep.SweepRequest` (one-line errors, exit 2)."""
    from planner.specs import Method, Optim
    from planner.sweep import Axis, make_request, parse_choices, parse_values

    values = {a: parse_values(options[a.value], a.flag) for a in Axis}
    methods = parse_choices(options["method"], Method, "--method")
    optims = parse_choices(options["optim"], Optim, "--optim")
    first = {a.value: values[a][0] for a in Axis}
    resolution = options.pop("_stack", None)
    base = train_spec(**{**options, **first, "method": methods[0].value, "optim": optims[0].value})
    if resolution is not None:
        base = apply_stack(base, resolution)
    return make_request(base, values, methods, optims, Axis(x.replace("-", "_")) if x else None,
                        alpha_follows_rank=options.get("alpha") is None)


@click.command()
@click.argument("model")
@sweep_options
@stack_options
@click.option("--calibrate", type=click.Path(dir_okay=False), default=None,
              help="Use a probe result (loraplan probe --save) for this GPU's CUDA context and allocator reserve.")
@click.option("--x", "x", type=click.Choice(["seq-len", "micro-batch", "rank"]), default=None,
              help="Axis along x when two are swept [default: seq-len, then micro-batch, then rank].")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Also write the chart to FILE.png, FILE.svg or FILE.html (needs the plot extra: matplotlib).")
@dataset_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with every point.")
def sweep(model: str, gpu: str | None, calibrate: str | None, x: str | None, plot: str | None, as_json: bool,
          **options: Any) -> None:
    """Device peak of fine-tuning MODEL over swept settings: a chart, a table, and the largest value that fits.

    Example: loraplan sweep llama-3-8b --gpu 4090 --seq-len 512:8192 --method lora,qlora
    """
    from planner.estimator.api import resolve
    from planner.sweep import run_sweep

    if plot:
        from planner.cli.plot import plot_format

        plot_format(plot)  # a bad suffix fails before any work
    from planner.cli.sweep_dataset import apply_sweep_dataset

    resolution = stack_from_options(options)
    data_values = pop_dataset(options)
    request, dataset, rows = apply_sweep_dataset(model, gpu, sweep_request(x, {**options, "_stack": resolution}),
                                                 data_values)
    inputs = replace(resolve(model, gpu, calibrate), stack=resolution.stack)
    result = run_sweep(inputs, request)
    if plot:
        from planner.cli.plot import write_plot

        click.echo(f"wrote {write_plot(result, plot)}", err=True)
    if as_json:
        data = result.to_json()
        if dataset is not None:
            data["dataset"] = dataset.model_dump(mode="json")
            data["dataset_by_seq_len"] = [r.model_dump(mode="json") for r in rows]
        emit_json(data)
        return
    from planner.cli.render.estimate import stack_line
    from planner.cli.render.sweep import render_sweep

    click.echo(stack_line(resolution.stack.ref(resolution.detected)))
    render_sweep(result)
    if dataset is not None:
        from planner.cli.render.dataset import render_dataset, render_seq_len_rows

        render_dataset(dataset)
        render_seq_len_rows(rows)
