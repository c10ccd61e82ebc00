"""Rich rendering of an :class:`~planner.results.Estimate`."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from planner.cli.render.console import make_console
from planner.cli.render.table import compact_table
from planner.results import Estimate, StackRef

_NOTES = {
    "weights": "base model weights",
    "adapters": "LoRA/DoRA adapters (fp32, PEFT default)",
    "gradients": "one per trainable parameter",
    "optimizer": "optimizer state (+ step transient)",
    "activations": "saved for backward (+ recompute / in-flight)",
    "logits": "lm_head output + fp32 cross-entropy",
    "overhead": "CUDA context, cuBLAS workspace, allocator",
}


def _train_lines(est: Estimate) -> tuple[str, str]:
    """The configuration on two short lines: method and adapters; then batch, checkpointing, optimizer, dtypes."""
    t = est.train
    head = t.method.value
    if t.method.value != "full":
        head += f", r={t.rank} alpha={t.alpha:g} targets={','.join(t.targets)}"
    rest = [f"micro-batch {t.micro_batch} x seq {t.seq_len}", "grad-ckpt" if t.grad_ckpt else "no grad-ckpt",
            t.optim.value, t.attn.value, t.dtype.value]
    return head, ", ".join(rest)


def _note(est: Estimate, name: str) -> str:
    """The component's note; adapters and logits follow the stack's adapter dtype and loss path."""
    behaviours = {b.name: b.value for b in est.stack.behaviours} if est.stack else {}
    if name == "adapters" and est.params.total and est.memory_gib.adapters:
        per_param = est.memory_gib.adapters * 2**30 / max(est.params.trainable, 1)
        if per_param < 3:
            return "LoRA/DoRA adapters (16-bit: the stack's cast)"
    if name == "logits" and behaviours.get("loss", "full_logits_fp32") != "full_logits_fp32":
        return f"lm_head + loss ({behaviours['loss']})"
    return _NOTES[name]


STACK_LINE_COLUMNS = 80
"""The widest stack line printed as one line (tests/test_render_width.py)."""

_LIB_ABBREV = {"transformers": "tf", "bitsandbytes": "bnb", "accelerate": "acc"}


def stack_line(stack: StackRef) -> str:
    """``stack: trl 1.16.0 (tf 5.24.0, peft 0.21.2, bnb 0.50.2, torch 2.13.0; detected)``: the assumed stack."""
    fw = stack.framework + ("+liger" if "+liger" in stack.name else "")
    own = stack.versions.get(stack.framework)
    order = ("transformers", "peft", "bitsandbytes", "torch")
    libs = [f"{_LIB_ABBREV.get(k, k)} {stack.versions[k].split('+')[0]}" for k in order
            if k in stack.versions and k != stack.framework]
    where = "installed" if stack.detected else "assumed"
    line = f"stack: {fw}{' ' + own if own else ''}, {', '.join(libs)} ({where})"
    if len(line) <= STACK_LINE_COLUMNS:
        return line
    # Too wide for an 80-column terminal (e.g. unsloth's calendar version): the libraries on a second line.
    return f"stack: {fw}{' ' + own if own else ''} ({where}) on\n       {', '.join(libs)}"


def render_estimate(est: Estimate, console: Console | None = None) -> None:
    """Print the breakdown table, peaks, verdict and advice."""
    console = console or make_console()
    params = est.params
    pct = 100.0 * params.trainable / params.total if params.total else 0.0
    head, rest = _train_lines(est)
    if est.stack is not None:
        console.print(escape(stack_line(est.stack)), highlight=False)
    console.print(f"[bold]{escape(est.model)}[/]: {escape(head)}", highlight=False)
    console.print(escape(rest), highlight=False)
    if est.parallel is not None:
        from planner.cli.render.parallel import parallel_header

        console.print(escape(parallel_header(est)), highlight=False)
    table = compact_table(("component", "left"), ("GiB", "right"), ("what", "left"))
    table.columns[-1].style = "dim"
    for name, value in est.memory_gib.model_dump().items():
        table.add_row(name, f"{value:.2f}", _note(est, name))
    console.print(table)
    if est.parallel is not None:
        from planner.cli.render.parallel import render_sharding

        render_sharding(est, console)
    console.print(f"params: {params.total:,} total, {params.trainable:,} trainable ({pct:.3f}%)")
    peak = est.peak_gib
    where = " per GPU" if est.parallel is not None else ""
    console.print(
        f"peak{where} ({est.peak_phase}): [bold]{peak.allocated:.2f}[/] GiB allocated, {peak.reserved:.2f} reserved, "
        f"[bold]{peak.device:.2f}[/] on {'' if where else 'the '}device"
    )
    for warning in est.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    if est.gpu is not None:
        g = est.gpu
        budget = (f"{g.budget_gib:.2f} GiB budget = {g.usable_gib:.2f} usable of {g.memory_gib:.2f} "
                  f"less {g.headroom:.0%} headroom")
        if est.fits:
            console.print(f"[green]fits[/] {g.name}: {est.headroom_gib:.2f} GiB to spare ({budget})")
        else:
            console.print(f"[red]does not fit[/] {g.name}: short by {-est.headroom_gib:.2f} GiB ({budget})")
    if est.advice:
        console.print(escape(est.advice))
