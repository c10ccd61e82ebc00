"""``--gpus``, ``--nodes``, ``--parallel``, ``--offload``, ``--quant-storage``, ``--host-ram``: one decorator.

:func:`parallel_options` adds the options and hands the command one ``parallel=`` keyword, a
:class:`~planner.parallel.spec.ParallelSpec`. Bad combinations are one line and exit 2.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from planner.errors import PlannerError
from planner.parallel.spec import Offload, ParallelSpec, QuantStorage, Strategy

NAMES = ("gpus", "nodes", "parallel_strategy", "offload", "quant_storage", "host_ram")


def _choice(enum: type) -> click.Choice:
    return click.Choice([e.value for e in enum], case_sensitive=False)


def _at_least_one(ctx: click.Context, param: click.Parameter, value: int) -> int:
    if value < 1:
        raise click.BadParameter(f"must be at least 1, got {value}")
    return value


def _positive(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and value <= 0:
        raise click.BadParameter(f"must be > 0, got {value}")
    return value


def max_gpus_per_node() -> int:
    """The most GPUs one catalogued instance has (``profiles/instances.json``): the largest node we plan for.

    Not per GPU kind: workstations hold several consumer cards that no cloud instance offers.
    """
    from planner.recommender.catalogue import load_instances

    return max(i.gpus for i in load_instances())


def build_parallel(gpus: int, nodes: int, strategy: str | None, offload: str, quant_storage: str | None,
                   host_ram: float | None) -> ParallelSpec:
    """The :class:`ParallelSpec` the options describe (``--parallel`` default: none on one GPU, else fsdp)."""
    world = gpus * nodes
    chosen = Strategy(strategy) if strategy else (Strategy.NONE if world == 1 else Strategy.FSDP)
    limit = max_gpus_per_node()
    if gpus > limit:
        raise PlannerError(f"--gpus {gpus} is more than any catalogued node has ({limit} per node): "
                           "use --nodes for more")
    return ParallelSpec(strategy=chosen, gpus=gpus, nodes=nodes, offload=Offload(offload),
                        quant_storage=QuantStorage(quant_storage) if quant_storage else None, host_ram_gib=host_ram)


def parallel_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add the multi-GPU options; the command receives ``parallel: ParallelSpec``."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = [kwargs.pop(n) for n in NAMES]
        kwargs["parallel"] = build_parallel(*values)
        return f(*args, **kwargs)

    options = [
        click.option("--host-ram", "host_ram", type=float, default=None, callback=_positive,
                     help="Host RAM per node (GiB) for offloaded state; warns when offload needs more."),
        click.option("--quant-storage", "quant_storage", type=_choice(QuantStorage), default=None,
                     help="QLoRA bnb_4bit_quant_storage (FSDP needs bf16: same bytes, shardable)."),
        click.option("--offload", type=_choice(Offload), default=Offload.NONE.value, show_default=True,
                     help="Move state to host RAM: ZeRO-Offload optimizer/params, FSDP cpu_offload (params)."),
        click.option("--parallel", "parallel_strategy", type=_choice(Strategy), default=None,
                     help="Engine: none (1 GPU default), ddp, fsdp (multi-GPU default), fsdp-shard-grad-op, "
                          "fsdp2, zero1, zero2, zero3."),
        click.option("--nodes", type=int, default=1, show_default=True, callback=_at_least_one, help="Nodes."),
        click.option("--gpus", type=int, default=1, show_default=True, callback=_at_least_one,
                     help="GPUs per node (peak_gib is per GPU)."),
    ]
    for option in options:
        wrapper = option(wrapper)
    return wrapper
