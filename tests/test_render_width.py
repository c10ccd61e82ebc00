"""Every table is readable in an 80-column terminal: rendered at 80 and 120 columns, no cell wraps.

Each table a command prints is captured, rendered alone at the width, and every row must come out on
one line with each cell whole (so no cell is split mid-word, nor wrapped at a space).
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import Any

import pytest
from rich.console import Console
from rich.table import Table
from rich.text import Text

from planner.cli.render.estimate import render_estimate
from planner.cli.render.explain import render_explanation
from planner.cli.render.recommend import render_instances, render_recommendation
from planner.cli.render.sweep import render_sweep
from planner.estimator.api import estimate_with_advice, resolve
from planner.explain import explain
from planner.recommender import make_request, plan_instances, recommend
from planner.specs import Method, Optim, TrainSpec
from planner.sweep import Axis, make_request as sweep_request, run_sweep

WIDTHS = (80, 120)


class _Recorder(Console):
    """A console that keeps every table it prints."""

    def __init__(self, width: int) -> None:
        super().__init__(width=width, file=io.StringIO(), color_system=None)
        self.tables: list[Table] = []

    def print(self, *objects: Any, **kwargs: Any) -> None:  # noqa: D102
        self.tables.extend(o for o in objects if isinstance(o, Table))
        super().print(*objects, **kwargs)


def _plain(cell: Any) -> str:
    return cell.plain if isinstance(cell, Text) else Text.from_markup(str(cell)).plain


def _rows(table: Table) -> list[list[str]]:
    columns = [[_plain(c) for c in col.cells] for col in table.columns]
    return [list(row) for row in zip(*columns)]


def _assert_unwrapped(table: Table, width: int) -> None:
    console = Console(width=width, file=io.StringIO(), color_system=None, record=True)
    console.print(table)
    lines = console.export_text().splitlines()
    assert max(len(line.rstrip()) for line in lines) <= width
    for row in _rows(table):
        pattern = r"[\s│┃]*".join(re.escape(cell.strip()) for cell in row if cell.strip())
        assert any(re.search(pattern, line) for line in lines), f"row {row} wrapped at width {width}:\n" + "\n".join(lines)
    header = [_plain(col.header) for col in table.columns]
    pattern = r"[\s│┃]*".join(re.escape(h) for h in header if h)
    assert any(re.search(pattern, line) for line in lines), f"header {header} wrapped at width {width}"


def _estimates(console: Console) -> None:
    render_estimate(estimate_with_advice("llama-3-8b", TrainSpec(), "4090"), console)
    render_estimate(estimate_with_advice("llama-3-70b", TrainSpec(method=Method.FULL), "4090"), console)
    render_estimate(estimate_with_advice("mixtral-8x7b", TrainSpec(method=Method.QLORA)), console)
    from planner.parallel.spec import Offload, ParallelSpec, Strategy

    zero3 = ParallelSpec(strategy=Strategy.ZERO3, gpus=8, nodes=2, offload=Offload.OPTIMIZER)
    render_estimate(estimate_with_advice("llama-3-70b", TrainSpec(method=Method.FULL), "h100", parallel=zero3), console)


def _explain(console: Console) -> None:
    for model, train, gpu in (("llama-3-8b", TrainSpec(), "4090"),
                              ("llama-3.1-70b", TrainSpec(method=Method.FULL, micro_batch=16, seq_len=16384), "a100-80gb"),
                              ("qwen2.5-7b", TrainSpec(method=Method.QLORA, grad_ckpt=False, micro_batch=4), None)):
        render_explanation(explain(resolve(model, gpu), train), console)


def _recommend(console: Console) -> None:
    render_recommendation(recommend("llama-3-8b", "4090", request=make_request(dataset_tokens=20e6, top=5)), console)
    render_recommendation(recommend("llama-3.1-70b", "h100", request=make_request(dataset_tokens=1e9, task="code")),
                          console)
    render_recommendation(recommend("llama-3-70b", "4090", request=make_request(dataset_tokens=20e6)), console)
    render_recommendation(recommend("qwen2.5-0.5b", "t4", request=make_request(methods=["full"])), console)
    render_recommendation(recommend("llama-3-70b", "h100", request=make_request(methods=["full"], max_gpus=16,
                                                                                 dataset_tokens=1e7)), console)
    render_recommendation(recommend("llama-3-70b", "h100", request=make_request(methods=["full"], gpus=4)), console)
    render_recommendation(recommend("llama-3-70b", "h100", request=make_request(methods=["full"], gpus=4,
                                                                                 host_ram_gib=100)), console)


def _instances(console: Console) -> None:
    render_instances(plan_instances("llama-3-8b", request=make_request(dataset_tokens=20e6)), console, show_all=True)
    render_instances(plan_instances("llama-3.1-70b", request=make_request()), console, show_all=True)
    render_instances(plan_instances("llama-3-70b", request=make_request(methods=["full"], examples=10000,
                                                                        avg_tokens=1024)), console, show_all=True)


def _sweep(console: Console) -> None:
    base = TrainSpec()
    request = sweep_request(base, {Axis.SEQ_LEN: (256, 512, 1024, 2048, 4096, 8192, 16384, 32768),
                                   Axis.MICRO_BATCH: (1, 2, 4, 8)}, [Method.LORA], [Optim.ADAMW])
    render_sweep(run_sweep(resolve("llama-3-8b", "4090"), request), console)
    request = sweep_request(base, {Axis.RANK: (8, 16, 32, 64, 128, 256)}, list(Method),
                            [Optim.ADAMW, Optim.PAGED_ADAMW_8BIT])
    render_sweep(run_sweep(resolve("llama-3.1-8b", "l4"), request), console)


def _probe(console: Console) -> None:
    """Probe tables from result models (pydantic only: no torch needed)."""
    from planner.cli.render.probe import render_gpus, render_result
    from probes.results import (Breakdown, ComponentRow, Environment, GpuInfo, MeasuredGiB, PhaseMemory,
                                ProbeResult, TraceDetail)

    render_gpus([GpuInfo(index=i, name="NVIDIA H100 80GB HBM3", total_gib=79.19, free_gib=78.5,
                         compute_capability="9.0", bf16=True, driver="570.86.15", cuda="12.8",
                         other_processes_gib=0.0, source="nvml", profile="H100 SXM") for i in range(2)], console)
    split = Breakdown(weights_gib=14.96, trainable_gib=0.16, gradients_gib=0.16, optimizer_gib=0.31, other_gib=3.2,
                      paged_gib=0.0)
    rows = [ComponentRow(name="after load (weights + adapters)", estimate_gib=15.12, measured_gib=15.12),
            ComponentRow(name="peak allocated", estimate_gib=18.90, measured_gib=18.89,
                         note="estimate: backward, trace: backward"),
            ComponentRow(name="paged optimizer state", estimate_gib=0.04, measured_gib=0.04,
                         note="CUDA managed memory, outside torch")]
    trace = TraceDetail(emulated=["bitsandbytes NF4"], steps=2, peak_gib=18.89, peak_rounded_gib=18.9,
                        phases=[PhaseMemory(step=2, phase="backward", peak_gib=18.89, end_gib=15.6)],
                        breakdown_gib={"after_load": split, "end": split}, peak_phase="backward", peak_step=2,
                        at_peak_gib=split)
    render_result(ProbeResult(model="llama-3-8b", mode="trace", measured_gib=MeasuredGiB(peak_allocated=18.89),
                              environment=Environment(), fits=True, components=rows, trace=trace), console)


def _serve(console: Console) -> None:
    from planner.cli.render.serve import render_serve
    from planner.serve.estimate import serve
    from planner.serve.spec import Engine, KvDtype, Quant, ServeSpec

    render_serve(serve("llama-3-8b", ServeSpec(adapters=4), "4090"), console)
    render_serve(serve("llama-3.1-8b", ServeSpec(engine=Engine.VLLM, context=20000), "3090"), console)
    render_serve(serve("mistral-7b", ServeSpec(quant=Quant.AWQ, dtype="fp16", batch=4, context=32768), "4090"),
                 console)
    render_serve(serve("gemma-2-9b", ServeSpec(engine=Engine.VLLM, kv_dtype=KvDtype.FP8, adapters=8), "a100-80gb"),
                 console)
    render_serve(serve("qwen2.5-7b", ServeSpec(quant=Quant.NF4, merged=True, adapters=1)), console)


COMMANDS: dict[str, Callable[[Console], None]] = {
    "probe": _probe, "serve": _serve,
    "estimate": _estimates, "explain": _explain, "recommend": _recommend, "instances": _instances, "sweep": _sweep,
}


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_tables_do_not_wrap(command: str, width: int) -> None:
    console = _Recorder(width)
    COMMANDS[command](console)
    assert console.tables, f"{command} printed no table"
    for table in console.tables:
        _assert_unwrapped(table, width)


def test_learning_rates_are_scientific() -> None:
    console = _Recorder(80)
    _recommend(console)
    lrs = {row[7] for table in console.tables if table.columns[0].header == "#" for row in _rows(table)}
    assert lrs and all(re.fullmatch(r"\d(\.\d+)?e-\d", lr) for lr in lrs), lrs


def test_recommend_cli_at_80_columns_breaks_no_word() -> None:
    """The issue's example: no "metho|d" or "0.000|2" in the real command's output."""
    from click.testing import CliRunner

    from planner.cli import cli

    res = CliRunner().invoke(cli, ["recommend", "llama-3-8b", "--gpu", "4090", "--dataset-tokens", "20M", "--no-code",
                                   "--framework", "trainer"],  # the row below is the Trainer stack's plan
                             env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    table = res.output.split("Plans (quality tier first, then fastest)")[1].split("\n\n")[0]
    assert "metho\n" not in table and "0.000" not in table
    assert re.search(r"#\s+method\s+targets\s+r\s+batch\s+ckpt\s+optim\s+lr\s+GiB\s+time", table)
    assert re.search(r"1\s+lora\s+all-linear\s+32\s+1x16\s+on\s+adamw\s+2e-4", table)


@pytest.mark.parametrize("detected", [False, True])
def test_stack_lines_fit_80_columns(detected: bool) -> None:
    """Every framework's stack line (with Liger where allowed, at the newest and at long local versions) fits 80."""
    from planner.cli.render.estimate import stack_line
    from planner.stack.resolve import framework_choices, framework_names, newest_versions, resolve_stack

    long_versions = {k: v + "+cu128" for k, v in newest_versions().items() if k in ("torch", "bitsandbytes")}
    for fw in framework_names():
        for liger in (False, True) if framework_choices(fw)[1] else (False,):
            for versions in (None, long_versions):
                stack = resolve_stack(fw, versions=versions, liger=liger, detect=False).stack
                text = stack_line(stack.ref(detected))
                assert text.startswith(f"stack: {fw}")
                assert all(len(line) <= 80 for line in text.splitlines()), text
