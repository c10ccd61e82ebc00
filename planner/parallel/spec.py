"""``ParallelSpec``: the data-parallel / sharding engine a plan runs under, and how it divides the ledger.

Only ``none`` (one GPU, one process) is modeled today. The multi-GPU engines (DDP, torch FSDP/FSDP2,
DeepSpeed ZeRO as accelerate and torchrun run them) attach here: :func:`per_gpu` receives the
single-process ledger and returns what one rank holds.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

from pydantic import Field

from planner.specs import Frozen

if TYPE_CHECKING:
    from planner.memory.ledger import Ledger


class Strategy(str, Enum):
    NONE = "none"


class ParallelSpec(Frozen):
    """Where the step runs: GPUs per node, nodes, and the engine's strategy."""

    strategy: Strategy = Strategy.NONE
    gpus: int = Field(default=1, ge=1, le=1)
    nodes: int = Field(default=1, ge=1, le=1)

    @property
    def world_size(self) -> int:
        return self.gpus * self.nodes


def per_gpu(ledger: Ledger, parallel: ParallelSpec) -> Ledger:
    """The ledger one rank holds under ``parallel`` (``none``: the whole ledger)."""
    if parallel.strategy is Strategy.NONE:
        return ledger
    raise NotImplementedError(parallel.strategy)  # pragma: no cover - only NONE is constructible
