"""Rich rendering of :class:`~planner.recommend.Recommendation` and :class:`~planner.recommend.InstancesReport`."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table

from planner.cli.render.console import make_console
from planner.cli.render.estimate import stack_line
from planner.cli.render.table import compact_table, sci
from planner.recommender import InstancesReport, Plan, Recommendation
from planner.recommender.schemas import InstanceResult


def _hours(hours: float | None) -> str:
    if hours is None:
        return "-"
    if hours < 1:
        return f"{hours * 60:.0f} min"
    return f"{hours:.1f} h"


def _hours_with_range(hours: float | None, hours_range: tuple[float, float] | None) -> str:
    """``9.7 h (9.0-10.1)``: the central estimate and the time model's error band."""
    if hours is None or hours_range is None:
        return _hours(hours)
    lo, hi = hours_range
    if hours < 1:
        return f"{hours * 60:.0f} min ({lo * 60:.0f}\u2013{hi * 60:.0f})"
    return f"{hours:.1f} h ({lo:.1f}\u2013{hi:.1f})"


def _plan_title(i: int, plan: Plan) -> str:
    what = plan.method.value.upper() if plan.method.value != "full" else "Full fine-tuning"
    if plan.targets:
        what += f" r={plan.rank} alpha={plan.alpha:g} on {plan.targets}"
    return (f"Plan {i}: {what}, micro-batch {plan.micro_batch} x accum {plan.grad_accum}, "
            f"{'checkpointing' if plan.grad_ckpt else 'no checkpointing'}, {plan.optim.value}, lr {sci(plan.learning_rate)}")


def render_recommendation(rec: Recommendation, console: Console | None = None, show_code: bool = True) -> None:
    console = console or make_console()
    if rec.stack is not None:
        console.print(escape(stack_line(rec.stack)), highlight=False)
    if rec.plans and rec.plans[0].time.kernels == "fused":
        console.print("speed: norm/rotary/SwiGLU bytes counted from fused Liger/Unsloth kernels",
                      highlight=False)
    g = rec.gpu
    detected = " (detected)" if g.detected else ""
    data = (f"{rec.dataset.tokens / 1e6:,.1f}M tokens x {rec.dataset.epochs:g} epochs" if rec.dataset.tokens
            else "dataset size not given")
    console.print(f"[bold]{rec.model}[/] on [bold]{g.name}[/]{detected}: {g.memory_gib:.1f} GiB, {g.usable_gib:.1f} usable, "
                  f"budget {g.budget_gib:.1f} GiB ({g.headroom:.0%} headroom)")
    console.print(f"{data}, task {rec.task.value}")
    if not rec.plans:
        console.print(f"[red]No plan fits.[/] {escape(rec.reason or '')}")
        alts = rec.alternatives
        if alts is not None:
            if alts.gpus:
                console.print("Smallest GPUs that fit: " + "; ".join(
                    f"{o.name} ({o.memory_gib:.0f} GiB, {o.method.value}{' ' + o.targets if o.targets else ''}, "
                    f"{_hours(o.hours)})" for o in alts.gpus))
            if alts.more_gpus is not None:
                m = alts.more_gpus
                console.print(f"Fits on {m.gpus} x {g.name} ({m.strategy}, {m.method.value}, {m.peak_gib:.1f} GiB per "
                              f"GPU, {_hours(m.hours)}): --gpus {m.gpus}" if m.nodes == 1 else
                              f"Fits on {m.gpus} x {g.name} ({m.nodes} nodes, {m.strategy}, {m.method.value}, "
                              f"{m.peak_gib:.1f} GiB per GPU, {_hours(m.hours)}): --max-gpus {m.gpus}",
                              highlight=False)
            if alts.instances:
                console.print("Cheapest instances that fit: " + "; ".join(
                    f"{o.provider} {o.instance} ({o.gpus}x {o.gpu}, ${o.price_per_hour:.2f}/h"
                    f"{', $' + format(o.cost, ',.2f') + ' total' if o.cost is not None else ''})" for o in alts.instances))
        _assumptions(rec, console)
        return
    console.print(_plans_table(rec))
    console.print("[dim]batch: micro-batch x gradient accumulation; GiB: device peak; lr: learning rate[/]")
    for i, p in enumerate(rec.plans, 1):
        console.print()
        console.print(f"[bold]{_plan_title(i, p)}[/]")
        m = p.memory_gib
        console.print(
            f"  memory: weights {m.weights:.2f} + adapters {m.adapters:.2f} + grads {m.gradients:.2f} + optimizer "
            f"{m.optimizer:.2f} + activations {m.activations:.2f} + logits {m.logits:.2f} + overhead {m.overhead:.2f} GiB"
            f" -> peak {p.peak_gib.device:.2f} GiB on the device ({p.headroom_gib:.2f} GiB under budget)"
        )
        steps = f", {p.optimizer_steps:,} optimizer steps" if p.optimizer_steps else ""
        console.print(f"  speed: {p.tokens_per_s:,.0f} tokens/s, {_hours_with_range(p.hours, p.hours_range)}{steps}")
        _parallel_lines(p, console, show_code and i == 1)
        first = rec.plans[0].reasons
        reasons = p.reasons if i == 1 else tuple(r for r in p.reasons if r not in first)
        console.print("  why:" if i == 1 else "  why (what differs from plan 1):")
        for r in reasons:
            console.print(f"   - {escape(r)}", highlight=False)
        for w in p.warnings:
            console.print(f"  [yellow]warning:[/] {escape(w)}")
        if show_code and p.code is not None and i == 1:
            _code(p, console)
    if show_code and len(rec.plans) > 1:
        console.print(escape("\n(code for the other plans: --json, plans[i].code)"))
    _assumptions(rec, console)


def _code(p: Plan, console: Console) -> None:
    """The plan's snippet: Python, the framework's config file, or why there is none."""
    code = p.code
    if code is None:
        return
    if code.python is not None:
        console.print("  code:")
        console.print(Syntax(code.python, "python", theme="ansi_dark", word_wrap=True))
    elif code.yaml is not None:
        console.print(f"  {code.framework} config (config.yml; {code.framework} train config.yml):")
        console.print(Syntax(code.yaml, "yaml", theme="ansi_dark", word_wrap=True))
    elif code.shell is not None:
        console.print(f"  {code.framework} command:")
        console.print(Syntax(code.shell, "bash", theme="ansi_dark", word_wrap=True))
    elif code.note is not None:
        console.print(f"  code: {escape(code.note)}", highlight=False)
def _parallel_lines(p: Plan, console: Console, show_config: bool) -> None:
    """A multi-GPU plan's GPUs, strategy, communication, and (plan 1) its accelerate config and launch command."""
    if p.parallel is None:
        return
    par, c = p.parallel, p.comm
    nodes = f" on {par.nodes} nodes" if par.nodes > 1 else ""
    offload = f" + offload {par.offload} ({p.host_gib:,.0f} GiB host RAM per node)" \
        if par.offload != "none" and p.host_gib is not None else ""
    console.print(f"  GPUs: {par.world_size}{nodes}, {par.strategy}{offload}; peak and micro-batch are per GPU, "
                  "tokens/s for all", highlight=False)
    if c is not None:
        console.print(f"  comm: {c.comm_s:.2f} s/step over {escape(c.link)} ({c.bus_gb_per_s:g} GB/s), "
                      f"{c.exposed_comm_s:.2f} s exposed; scaling efficiency {c.scaling_efficiency:.0%}",
                      highlight=False)
    if p.launch_command:
        console.print(f"  launch: {escape(p.launch_command)}", highlight=False)
    if show_config and p.accelerate_config_yaml:
        console.print("  accelerate.yaml:")
        console.print(Syntax(p.accelerate_config_yaml, "yaml", theme="ansi_dark", word_wrap=True))


def _plans_table(rec: Recommendation) -> Table:
    """One row per plan: short headers and values that fit an 80-column terminal (speed and memory below)."""
    first = rec.plans[0].parallel if rec.plans else None
    where = f" on {first.world_size} x {rec.gpu.name}" if first is not None else ""
    table = compact_table(("#", "right"), ("method", "left"), ("targets", "left"), ("r", "right"),
                          ("batch", "right"), ("ckpt", "left"), ("optim", "left"), ("lr", "right"),
                          ("GiB", "right"), ("time", "right"),
                          title=f"Plans{where} (quality tier first, then fastest)")
    for i, p in enumerate(rec.plans, 1):
        table.add_row(str(i), p.method.value, p.targets or "all", str(p.rank or "-"),
                      f"{p.micro_batch}x{p.grad_accum}", "on" if p.grad_ckpt else "off", p.optim.value,
                      sci(p.learning_rate), f"{p.peak_gib.device:.1f}", _hours(p.hours))
    return table


def _assumptions(rec: Recommendation, console: Console) -> None:
    console.print()
    console.print(f"[dim]searched {rec.searched} configurations. Assumptions:[/]")
    for a in rec.assumptions:
        console.print(f"[dim] - {escape(a)}[/]", highlight=False)


def _short_plan(p: Plan) -> str:
    """``lora all-linear r32 2x8 ckpt`` (the optimizer only when not AdamW)."""
    what = f"{p.method.value} {p.targets} r{p.rank}" if p.targets else p.method.value
    optim = "" if p.optim.value == "adamw" else f" {p.optim.value}"
    par = f" {p.parallel.strategy}" if p.parallel is not None else ""
    return f"{what} {p.micro_batch}x{p.grad_accum}{' ckpt' if p.grad_ckpt else ''}{optim}{par}"


def _instances_table(model: str, data: str, rows: list[InstanceResult]) -> Table:
    table = compact_table(("instance", "left"), ("GPU", "left"), ("$/h", "right"), ("time", "right"),
                          ("cost", "right"), title=f"{model}: {data}")
    for r in rows:
        gpu = f"{r.gpus}x {r.gpu}" if r.gpus > 1 else r.gpu
        name = f"{r.provider} {escape(r.instance)}" + (" [bold green]*[/]" if r.fastest else "")
        cost = f"${r.cost:,.2f}" if r.cost is not None else (
            f"${r.cost_per_mtok:.3f}/Mtok" if r.cost_per_mtok is not None else "-")
        time = _hours(r.hours) if r.fits else "[red]no fit[/]"
        table.add_row(name, gpu, f"{r.price_per_hour:.2f}", time, cost)
    return table


def _plans_by_gpu(rows: list[InstanceResult]) -> Table:
    """The best plan on each GPU type (every instance with that GPU runs it)."""
    table = compact_table(("GPU", "left"), ("best plan (batch = micro-batch x accumulation)", "left"),
                          ("tok/s", "right"))
    seen: set[tuple[str, int]] = set()
    for r in rows:
        if r.plan is None or (r.gpu, r.gpus) in seen:
            continue
        seen.add((r.gpu, r.gpus))
        table.add_row(f"{r.gpus}x {r.gpu}" if r.gpus > 1 else r.gpu, _short_plan(r.plan), f"{r.plan.tokens_per_s:,.0f}")
    return table


def render_instances(report: InstancesReport, console: Console | None = None, show_all: bool = False) -> None:
    console = console or make_console()
    if report.stack is not None:
        console.print(escape(stack_line(report.stack)), highlight=False)
    data = (f"{report.dataset.tokens / 1e6:,.1f}M tokens x {report.dataset.epochs:g} epochs" if report.dataset.tokens
            else "dataset size not given: sorted by $ per million tokens")
    shown = [r for r in report.instances if r.fits or show_all]
    console.print(_instances_table(report.model, data, shown))
    if any(r.fastest for r in shown):
        console.print("[dim]* fastest; cost: the whole job at the hourly price; best plan per GPU below[/]")
    plans = _plans_by_gpu(shown)
    if plans.row_count:
        console.print(plans)
    hidden = sum(1 for r in report.instances if not r.fits)
    if hidden and not show_all:
        console.print(f"[dim]{hidden} instances where nothing fits are hidden (--all shows them)[/]")
    if not any(r.fits for r in report.instances):
        console.print("[red]No instance fits.[/]")
    dates = sorted({r.price_date for r in report.instances})
    if dates:
        console.print(f"[dim] - prices dated {dates[0]}{' to ' + dates[-1] if len(dates) > 1 else ''} (sources in --json)[/]")
    for a in report.assumptions:
        console.print(f"[dim] - {escape(a)}[/]", highlight=False)
