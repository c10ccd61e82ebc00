"""The multi-GPU part of ``estimate``'s table: where it runs, and which state terms are sharded."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from planner.cli.render.table import compact_table
from planner.results import Estimate

STATE_COMPONENTS = ("weights", "adapters", "gradients", "optimizer")


def _how(name: str, world_size: int) -> str:
    """How the term is divided across ranks, from the per-GPU ledger's term name."""
    if "(sharded in step)" in name:
        return f"1/{world_size} in step"
    if "(shard" in name:
        return f"1/{world_size}"
    if name.startswith(("all-gathered", "unsharded", "ZeRO", "DDP", "fp32 gradient")):
        return "engine"
    return "replicated"


def parallel_header(est: Estimate) -> str:
    """``per GPU: fsdp, 4 GPUs x 1 node (world 4), offload none``."""
    p = est.parallel
    assert p is not None
    host = f", host {est.host_gib:.1f} GiB/node" if est.host_gib else ""
    return f"per GPU: {p.strategy}, {p.gpus} GPUs x {p.nodes} node (world {p.world_size}), offload {p.offload}{host}"


def render_sharding(est: Estimate, console: Console) -> None:
    """The state terms one rank holds and how each is divided."""
    p = est.parallel
    assert p is not None
    table = compact_table(("state term (per GPU)", "left"), ("GiB", "right"), ("division", "left"))
    for term in est.terms:
        if term.component in STATE_COMPONENTS or term.name.startswith(("all-gathered", "unsharded")):
            table.add_row(escape(term.name), f"{term.gib:.2f}", _how(term.name, p.world_size))
    console.print(table)
