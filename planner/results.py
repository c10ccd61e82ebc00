"""What the estimator returns: typed, frozen results whose field names are the ``--json`` contract.

``Estimate.to_json()`` is the one ``loraplan estimate --json`` object (also embedded in probe results).
"""

from __future__ import annotations

from typing import Any



from pydantic import PrivateAttr, computed_field

from planner.specs import GIB, Frozen, Method, TrainSpec



COMPONENTS = ("weights", "adapters", "gradients", "optimizer", "activations", "logits", "overhead")
"""The memory components, in display order."""


class TermGiB(Frozen):
    """One named term of the memory ledger: its component, size and the phases of the step it is alive in."""

    name: str
    component: str
    gib: float
    """Its largest size over the phases it is alive in (GiB)."""
    phases: tuple[str, ...]
    """Sub-phases of the step holding it (see :class:`planner.memory.ledger.Phase`)."""
    source: str = ""
    """Where the term comes from (library file and function, or paper)."""


class BehaviourRef(Frozen):
    """One library behaviour the estimate assumed (see ``profiles/stacks/``)."""

    name: str
    value: str
    source: str


class StackRef(Frozen):
    """The training stack an estimate assumed: framework, library versions and the behaviours that follow."""

    name: str
    framework: str
    versions: dict[str, str]
    detected: bool = False
    behaviours: tuple[BehaviourRef, ...] = ()


class ParamCounts(Frozen):
    total: int
    trainable: int


class MemoryGiB(Frozen):
    """Memory by component, GiB. Each is the component's size at the step's peak."""

    weights: float
    adapters: float
    gradients: float
    optimizer: float
    activations: float
    logits: float
    overhead: float


class PeakGiB(Frozen):
    allocated: float
    """What ``torch.cuda.max_memory_allocated`` would read."""
    reserved: float
    """What ``torch.cuda.max_memory_reserved`` would read."""
    device: float
    """Reserved plus CUDA context and workspaces: what must fit on the card (nvidia-smi)."""


class GpuRef(Frozen):
    name: str
    memory_gib: float
    """nvidia-smi's total."""
    usable_gib: float | None = None
    """Total less what the driver reserves."""
    budget_gib: float | None = None
    """Usable less the headroom kept free: what ``fits`` compares the device peak with."""
    headroom: float | None = None
    """Fraction of the usable memory kept free."""


class ParallelRef(Frozen):
    """Where a multi-GPU estimate runs (``estimate --json`` ``parallel``)."""

    strategy: str
    gpus: int
    """GPUs per node."""
    nodes: int
    world_size: int
    offload: str


class Estimate(Frozen):
    """Result of :func:`planner.estimate`. Field names are the ``--json`` contract."""

    model: str
    method: Method
    train: TrainSpec
    params: ParamCounts
    memory_gib: MemoryGiB
    peak_gib: PeakGiB
    peak_phase: str
    """Which phase of the step holds the peak: ``forward``, ``backward`` or ``optimizer``."""
    host_spillable_gib: float = 0.0
    """Paged optimizer state that CUDA unified memory can evict to host RAM under pressure."""
    gpu: GpuRef | None = None
    fits: bool | None = None
    headroom_gib: float | None = None
    """Budget left after the device peak (negative: short by that much)."""
    advice: str | None = None
    warnings: tuple[str, ...] = ()
    stack: StackRef | None = None
    """The training stack the estimate assumed."""
    parallel: ParallelRef | None = None
    """Multi-GPU plans only: strategy, GPUs per node, nodes, world size, offload (``peak_gib`` is per GPU)."""
    host_gib: float | None = None
    """Multi-GPU plans only: host RAM per node the offloaded state needs (GiB)."""
    _ledger: Any = PrivateAttr(default=None)
    """The :class:`planner.memory.ledger.Ledger` behind the numbers (set by the estimator)."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def terms(self) -> tuple[TermGiB, ...]:
        """The ledger: every named memory term with its component, size and sub-phases (``memory_gib`` is
        their per-component sum). Built on access, so the recommender's thousands of estimates skip it."""
        if self._ledger is None:
            return ()
        return tuple(
            TermGiB(name=t.name, component=t.component, gib=t.size_bytes / GIB,
                    phases=tuple(p.value for p in self._ledger.phases if t.at(p)), source=t.source)
            for t in self._ledger.terms
        )


    def to_json(self) -> dict[str, Any]:
        """The ``loraplan estimate --json`` object: component and peak sizes rounded to 4 decimals (GiB)."""
        data = self.model_dump(mode="json")
        data["memory_gib"] = {k: round(v, 4) for k, v in data["memory_gib"].items()}
        data["peak_gib"] = {k: round(v, 4) for k, v in data["peak_gib"].items()}
        for key in ("parallel", "host_gib"):
            if data.get(key) is None:
                data.pop(key, None)  # single-GPU output stays as it was
        for key in ("headroom_gib", "host_spillable_gib", "host_gib"):
            if data.get(key) is not None:
                data[key] = round(data[key], 4)
        for term in data.get("terms") or ():
            term["gib"] = round(term["gib"], 4)
        return data
