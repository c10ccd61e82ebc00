"""The memory ledger: every named term of one training step, with the phases it is alive in.

A steady-state step (the second one: optimizer state exists from the first ``step()`` on) is cut into
sub-phases, each the moment of one local peak:

- ``forward.layer``   inside a decoder layer's forward (its short-lived transients)
- ``forward.loss``    the end of the loss forward (logits, their fp32 copy, log_softmax)
- ``backward.loss``   inside cross-entropy backward
- ``backward.layer``  the top layer's backward (recomputed layer with checkpointing, gradients in flight)
- ``backward.bottom`` full fine-tuning: the bottom layer's backward, when every parameter gradient exists
- ``optimizer.step``  inside ``optimizer.step()``

A :class:`Term` says how many bytes it holds in each sub-phase and which memory pool those bytes are
in: torch's caching allocator (``allocated``), blocks the allocator caches but no tensor uses
(``cached``: counted by ``memory_reserved``), CUDA managed memory (``managed``: paged optimizer state)
or the CUDA context (``context``): neither of the last two is visible to torch's counters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from planner.results import COMPONENTS


class Phase(str, Enum):
    LAYER_FORWARD = "forward.layer"
    LOSS_FORWARD = "forward.loss"
    LOSS_BACKWARD = "backward.loss"
    LAYER_BACKWARD = "backward.layer"
    BOTTOM_BACKWARD = "backward.bottom"
    OPTIMIZER = "optimizer.step"

    @property
    def group(self) -> str:
        """The step phase a user sees: ``forward``, ``backward`` or ``optimizer``."""
        return self.value.split(".")[0]


GROUPS = ("forward", "backward", "optimizer")
"""Step phases in order (a tie goes to the earlier one)."""

FORWARD = (Phase.LAYER_FORWARD, Phase.LOSS_FORWARD)
BACKWARD = (Phase.LOSS_BACKWARD, Phase.LAYER_BACKWARD, Phase.BOTTOM_BACKWARD)
FORWARD_BACKWARD = (Phase.LAYER_FORWARD, Phase.LOSS_FORWARD, Phase.LOSS_BACKWARD, Phase.LAYER_BACKWARD)
"""Phases where the saved-for-backward tensors are alive (until the bottom layer frees them)."""


class Pool(str, Enum):
    """Where a term's bytes live, which decides which counter sees them."""

    ALLOCATED = "allocated"
    """Live tensors in torch's caching allocator (``torch.cuda.memory_allocated``)."""
    CACHED = "cached"
    """Blocks torch's allocator keeps but no tensor uses (``memory_reserved - memory_allocated``)."""
    MANAGED = "managed"
    """CUDA managed memory (bitsandbytes paged state): on the device, outside torch's counters."""
    CONTEXT = "context"
    """CUDA context and module images: on the device (nvidia-smi), outside torch's counters."""


RESERVED_POOLS = (Pool.ALLOCATED, Pool.CACHED)
"""What ``torch.cuda.memory_reserved`` counts (the first is ``memory_allocated``)."""
DEVICE_POOLS = (Pool.ALLOCATED, Pool.CACHED, Pool.CONTEXT, Pool.MANAGED)
"""What the card holds for the process (nvidia-smi)."""


@dataclass(frozen=True)
class Term:
    """One named memory term.

    Attributes:
        name: What it is (``"base weights"``, ``"saved activations"``).
        component: Its ``memory_gib`` component (:data:`planner.results.COMPONENTS`).
        bytes_by_phase: Bytes it holds in each sub-phase it is alive in.
        pool: Which counter sees it.
        source: Library file and function (or paper) it follows.
    """

    name: str
    component: str
    bytes_by_phase: Mapping[Phase, float]
    pool: Pool = Pool.ALLOCATED
    source: str = ""

    def __post_init__(self) -> None:
        if self.component not in COMPONENTS:
            raise ValueError(f"unknown component {self.component!r}")

    @property
    def size_bytes(self) -> float:
        """Its largest size over the phases it is alive in."""
        return max(self.bytes_by_phase.values(), default=0.0)

    def at(self, phase: Phase) -> float:
        return self.bytes_by_phase.get(phase, 0.0)


def alive(size_bytes: float, phases: Iterable[Phase]) -> dict[Phase, float]:
    """``size_bytes`` in every phase of ``phases`` (a zero-size term is alive nowhere)."""
    return {p: size_bytes for p in phases} if size_bytes else {}


@dataclass(frozen=True)
class Ledger:
    """The terms of one step and the sub-phases that step has."""

    terms: tuple[Term, ...]
    phases: tuple[Phase, ...]

    def plus(self, *terms: Term) -> Ledger:
        return Ledger(self.terms + tuple(terms), self.phases)

    def total(self, phase: Phase, pools: Iterable[Pool] = (Pool.ALLOCATED,)) -> float:
        """Bytes of the terms in ``pools`` alive in ``phase``."""
        wanted = tuple(pools)
        return sum(t.bytes_by_phase.get(phase, 0.0) for t in self.terms if t.pool in wanted)

    def allocated(self, phase: Phase) -> float:
        return self.total(phase, (Pool.ALLOCATED,))

    def group_peaks(self, pools: Iterable[Pool] = (Pool.ALLOCATED,)) -> dict[str, tuple[Phase, float]]:
        """For each step phase, its sub-phase with the most bytes in ``pools``, and those bytes."""
        pools = tuple(pools)
        totals = dict.fromkeys(self.phases, 0.0)
        for t in self.terms:
            if t.pool in pools:
                for phase, size in t.bytes_by_phase.items():
                    totals[phase] += size
        out: dict[str, tuple[Phase, float]] = {}
        for phase, value in totals.items():
            best = out.get(phase.group)
            if best is None or value > best[1]:
                out[phase.group] = (phase, value)
        return {g: out[g] for g in GROUPS if g in out}

    def peak(self, pools: Iterable[Pool] = (Pool.ALLOCATED,)) -> tuple[Phase, float]:
        """The sub-phase holding the most bytes in ``pools`` (ties: the earliest step phase)."""
        best: tuple[Phase, float] | None = None
        for phase, value in self.group_peaks(pools).values():
            if best is None or value > best[1]:
                best = (phase, value)
        assert best is not None
        return best

    def component_bytes(self, component: str) -> float:
        return sum(t.size_bytes for t in self.terms if t.component == component)

    def components(self) -> dict[str, float]:
        """Bytes by component (:data:`planner.results.COMPONENTS`, in order)."""
        out = dict.fromkeys(COMPONENTS, 0.0)
        for t in self.terms:
            out[t.component] += t.size_bytes
        return out

    def size_of(self, name: str) -> float:
        """The largest size of the term called ``name`` (0 when the ledger has none)."""
        return next((t.size_bytes for t in self.terms if t.name == name), 0.0)
