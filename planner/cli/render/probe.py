"""Rich rendering for ``loraplan probe``: detected GPUs, progress, and estimate-vs-measured tables.

Progress goes to stderr (so ``--json`` on stdout stays one clean object) and only animates on a
terminal.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from planner.cli.render.table import compact_table

from planner.cli.render.console import make_console

_PHASES = {
    "load": "building the model (random weights)",
    "optimizer_init": "creating the optimizer",
    "forward": "forward",
    "backward": "backward",
    "optimizer": "optimizer step",
}


def _gib(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}%"


def render_gpus(gpus: list[Any], console: Console | None = None) -> None:
    """Table of visible GPUs (``--detect`` and the start of every GPU probe)."""
    console = console or make_console()
    table = compact_table(("#", "right"), ("name", "left"), ("GiB", "right"), ("free", "right"), ("CC", "left"),
                          ("bf16", "left"), ("others", "right"), ("profile", "left"), title="visible GPUs")
    for g in gpus:
        table.add_row(
            str(g.index), g.name, _gib(g.total_gib), _gib(g.free_gib), g.compute_capability,
            "yes" if g.bf16 else "no", _gib(g.other_processes_gib), g.profile or "[dim]none[/]",
        )
    console.print(table)
    versions = sorted({f"driver {g.driver or '-'}, CUDA {g.cuda or '-'}" for g in gpus})
    console.print(f"[dim]GiB: total; others: held by other processes; {'; '.join(versions)}[/]")
    if any(g.source != "nvml" for g in gpus):
        console.print("[dim]nvidia-ml-py not available: 'others' is total - free - this process's "
                      "reserved memory (includes this process's CUDA context)[/]")


class ProbeProgress:
    """Progress display for load and steps; implements ``probes.gpu.ProbeEvents``."""

    def __init__(self, console: Console | None = None, enabled: bool = True) -> None:
        self.console = console or make_console(stderr=True)
        self.progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(), console=self.console, transient=True,
            disable=not (enabled and self.console.is_terminal),
        )
        self._load = None
        self._steps = None
        self._micro_batch: int | None = None

    def __enter__(self) -> ProbeProgress:
        self.progress.__enter__()
        self._load = self.progress.add_task(_PHASES["load"], total=None)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def phase(self, name: str) -> None:
        text = _PHASES.get(name, name)
        if name in ("load", "optimizer_init") and self._load is not None:
            self.progress.update(self._load, description=text)
        elif self._steps is not None:
            self.progress.update(self._steps, description=f"step: {text}")

    def step(self, done: int, total: int, seconds: float | None) -> None:
        if self._load is not None:
            self.progress.update(self._load, visible=False)
        if self._steps is None or done == 0:
            if self._steps is not None:
                self.progress.remove_task(self._steps)
            self._steps = self.progress.add_task("steps (1 warm-up)", total=total)
        self.progress.update(self._steps, completed=done)

    def trying(self, micro_batch: int) -> None:
        self.console.print(f"[dim]trying micro-batch {micro_batch}[/]")


def trying(micro_batch: int, console: Console | None = None) -> None:
    """One line per micro-batch the max-batch search tries (stderr)."""
    (console or make_console(stderr=True)).print(f"[dim]trying micro-batch {micro_batch}[/]")


def trace_status(console: Console | None = None) -> Any:
    """Spinner while the CPU trace runs."""
    console = console or make_console(stderr=True)
    return console.status("tracing the training step on fake tensors (CPU)...")


def render_result(result: Any, console: Console | None = None) -> None:
    """Estimate vs measured table, verdict, per-phase trace table, max micro-batch, notes."""
    console = console or make_console()
    mode = "CPU trace (fake tensors)" if result.mode == "trace" else f"GPU: {result.environment.gpu}"
    console.print(f"[bold]{result.model}[/] - {mode}")
    table = compact_table(("quantity", "left"), ("estimate", "right"), ("measured", "right"), ("error", "right"),
                          title="estimate vs measured (GiB)")
    for row in result.components:
        table.add_row(row.name, _gib(row.estimate_gib), _gib(row.measured_gib), _pct(row.error_pct))
    console.print(table)
    for row in result.components:
        if row.note:
            console.print(f"[dim] - {row.name}: {row.note}[/]", highlight=False)
    if result.params:
        console.print(f"params: {result.params.get('total', 0):,} base, {result.params.get('trainable', 0):,} trainable")
    if result.trace is not None:
        _render_trace(result.trace, console)
    if result.gpu is not None and result.gpu.step_seconds:
        steps = ", ".join(f"{s:.2f}" for s in result.gpu.step_seconds)
        console.print(f"step time (s): {steps}; [bold]{result.tokens_per_s:,.0f}[/] tokens/s")
    if result.max_batch is not None:
        mb = result.max_batch
        est = "-" if mb.estimated is None else str(mb.estimated)
        console.print(f"largest micro-batch that fits: measured [bold]{mb.measured}[/], estimator {est}")
    err = result.error_pct
    if result.interrupted:
        console.print(f"[yellow]interrupted[/] during {result.failed_phase}")
    elif result.fits:
        console.print(f"[green]fits[/]: peak allocated error {_pct(err.allocated)}"
                      + (f", reserved {_pct(err.reserved)}" if err.reserved is not None else ""))
    else:
        console.print(f"[red]does not fit[/]: out of memory in {result.failed_phase}"
                      + (f" ({result.error})" if result.error else ""))
    if result.calibration is not None:
        cal = result.calibration
        console.print(f"calibration: CUDA context {_gib(cal.cuda_context_gib)} GiB, allocator reserve "
                      f"{_gib(cal.allocator_reserve_gib)} GiB ({(cal.allocator_reserve_fraction or 0) * 100:.1f}%)")


def _render_trace(trace: Any, console: Console) -> None:
    table = compact_table(("step", "left"), ("phase", "left"), ("peak", "right"), ("end", "right"),
                          title="traced phases (live GiB)")
    for p in trace.phases:
        table.add_row(str(p.step), p.phase, _gib(p.peak_gib), _gib(p.end_gib))
    console.print(table)
    split = compact_table(("at", "left"), *((col, "right") for col in
                                            ("weights", "trainable", "grads", "optimizer", "other", "paged")),
                          title="traced split (GiB)")
    rows = [(k, v) for k, v in trace.breakdown_gib.items() if k in ("after_load", "end")
            or k.endswith(f"step{trace.steps}")]
    rows.append((f"peak ({trace.peak_phase}, step {trace.peak_step})", trace.at_peak_gib))
    for name, b in rows:
        split.add_row(name, _gib(b.weights_gib), _gib(b.trainable_gib), _gib(b.gradients_gib), _gib(b.optimizer_gib),
                      _gib(b.other_gib), _gib(b.paged_gib))
    console.print(split)
    console.print(f"[dim]traced {trace.ops:,} ops in {trace.seconds:.1f} s; peak with 512-byte allocator "
                  f"rounding {trace.peak_rounded_gib:.3f} GiB[/]")
    for note in trace.emulated:
        console.print(f"[yellow]emulated:[/] {note}")


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value * 1024:.1f}"


def render_launch(result: Any, console: Console | None = None) -> None:
    """``probe --gpus N``: one row per rank (MiB), the max over ranks and the per-GPU estimate."""
    console = console or make_console()
    where = "CPU gloo ranks (plumbing check)" if result.plumbing_check else "GPUs (NCCL)"
    table = compact_table(("rank", "right"), ("device", "left"), ("loaded", "right"), ("peak alloc", "right"),
                          ("peak resv", "right"), ("RSS", "right"),
                          title=f"{result.strategy} on {result.world_size} {where}, MiB")
    for r in result.ranks:
        table.add_row(str(r.rank), r.device, _mib(r.after_load_gib), _mib(r.peak_allocated_gib),
                      _mib(r.peak_reserved_gib), _mib(r.peak_rss_gib))
    console.print(table)
    console.print(f"peak (max over ranks) {_mib(result.peak_allocated_gib)} MiB; per-GPU estimate "
                  f"{_mib(result.estimate_allocated_gib)} MiB ({_pct(result.error_pct)})")
    console.print(f"[dim]{result.path}; {result.seconds:.1f} s[/]")
