"""Rich rendering of a :class:`~planner.serve.result.ServeEstimate` (fits 80 columns)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from planner.cli.render.console import make_console
from planner.cli.render.table import compact_table
from planner.serve.result import ServeEstimate


def _head(est: ServeEstimate) -> tuple[str, str]:
    s = est.spec
    quant = "" if s.quant.value == "none" else f" {s.quant.value}"
    kv = " kv fp8" if s.kv_dtype.value == "fp8" else ""
    first = f"{s.engine.value}, {s.dtype.value}{quant}{kv}, batch {s.batch} x context {s.context}"
    if s.merged:
        second = f"1 adapter merged (r={s.rank})"
    elif s.adapters:
        second = f"{s.adapters} adapter{'s' if s.adapters > 1 else ''}, r={s.rank} targets={','.join(s.targets)}"
    else:
        second = "no adapters"
    return first, second


def _rows(est: ServeEstimate) -> list[tuple[str, float, str]]:
    vllm = est.vllm is not None
    rows = [
        ("weights", est.weights_gib, "base weights (quantized with scales)" if est.spec.quant.value != "none"
         else "base weights"),
        ("adapters", est.adapters_gib, f"{est.adapter_each_gib:.3f} GiB each" + (" (slot)" if vllm else " (fp32)")),
        ("lora compute", est.lora_transient_gib, "unmerged x@A, B output (prefill)"),
        ("dequant", est.dequant_transient_gib, "16-bit copy of the widest weight"),
        ("kv cache", est.kv_cache_gib, f"{est.kv_bytes_per_token / 1024:.0f} KiB/token, "
         f"{est.spec.batch} x {est.spec.context} tokens"),
        ("prefill", est.prefill_activations_gib, "profile run peak" if vllm else "one layer's MLP peak, rotary tables"),
        ("logits", est.logits_gib, "sampled rows, fp32"),
        ("overhead", est.overhead_gib, "non-torch memory" if vllm else "CUDA context, cuBLAS workspace"),
    ]
    return [r for r in rows if r[1] or r[0] in ("weights", "kv cache")]


def render_serve(est: ServeEstimate, console: Console | None = None) -> None:
    """Print the breakdown, the vLLM pool and the answer: concurrent sequences and adapters that fit."""
    console = console or make_console()
    first, second = _head(est)
    console.print(f"[bold]{escape(est.model)}[/]: {escape(first)}", highlight=False)
    console.print(escape(second), highlight=False)
    table = compact_table(("component", "left"), ("GiB", "right"), ("what", "left"))
    table.columns[-1].style = "dim"
    for name, value, note in _rows(est):
        table.add_row(name, f"{value:.2f}", note)
    console.print(table)
    if est.vllm is not None:
        v = est.vllm
        console.print(f"vLLM: {v.requested_gib:.2f} GiB = {v.gpu_memory_utilization:g} x {v.total_gpu_memory_gib:.2f}"
                      f"; profile run {v.max_num_batched_tokens} tokens", highlight=False)
        console.print(f"KV pool [bold]{v.kv_pool_gib:.2f}[/] GiB = {v.num_blocks} blocks of {v.block_size} tokens"
                      f" (max concurrency {v.max_concurrency:.2f}x)", highlight=False)
    else:
        console.print(f"total [bold]{est.total_gib:.2f}[/] GiB", highlight=False)
    for warning in est.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    if est.gpu is None:
        console.print("pass --gpu to see how many sequences and adapters fit")
        return
    budget = "" if est.vllm is not None else f" (budget {est.budget_gib:.2f} GiB)"
    verdict = "[green]fits[/]" if est.fits else "[red]does not fit[/]"
    console.print(f"{verdict} {escape(est.gpu)}{budget}", highlight=False)
    n = est.max_concurrent_sequences
    console.print(f"concurrent sequences of {est.spec.context} tokens: [bold]{n}[/]", highlight=False)
    console.print(f"adapters of r={est.spec.rank} that fit with batch {est.spec.batch}: [bold]{est.max_adapters}[/]",
                  highlight=False)
