"""Result models of ``recommend`` and ``instances``. Field names and order are the ``--json`` contract."""

from __future__ import annotations

from typing import Any

from planner.recommender.rules import Task
from planner.recommender.snippets import Code
from planner.results import MemoryGiB, ParallelRef, PeakGiB, StackRef
from planner.specs import DType, Frozen, Method, Optim
from planner.time import TimeBreakdown, Utilization
from planner.time.comm import CommBreakdown


class Dataset(Frozen):
    """How much data the job trains on."""

    tokens: float | None
    """Training tokens per epoch (None: not given; hours are then null)."""
    examples: int | None = None
    avg_tokens: float | None = None
    epochs: float


class GpuBudget(Frozen):
    name: str
    memory_gib: float
    usable_gib: float
    """Memory a process can allocate (total less driver-reserved)."""
    budget_gib: float
    """What a plan's device peak must stay under: usable x (1 - headroom)."""
    headroom: float
    detected: bool = False


class Plan(Frozen):
    """One recommended configuration. The first fields are the ``--json`` contract."""

    method: Method
    rank: int | None
    alpha: float | None
    targets: str | None
    """Target preset (``all-linear``, ``attn``, ``qv``); None for full fine-tuning."""
    micro_batch: int
    grad_accum: int
    grad_ckpt: bool
    optim: Optim
    learning_rate: float
    peak_gib: PeakGiB
    tokens_per_s: float
    hours: float | None
    hours_range: tuple[float, float] | None
    """[low, high] hours: the time model's held-out error band (``time.tokens_per_s_high/low``)."""
    reasons: tuple[str, ...]
    # -- details
    target_modules: str | list[str] | None
    lora_dropout: float | None
    use_rslora: bool
    seq_len: int
    dtype: DType
    effective_batch: int
    lr_scheduler: str
    warmup_ratio: float
    epochs: float
    optimizer_steps: int | None
    memory_gib: MemoryGiB
    headroom_gib: float
    time: TimeBreakdown
    warnings: tuple[str, ...] = ()
    code: Code | None = None
    parallel: ParallelRef | None = None
    """Multi-GPU plans: strategy, GPUs per node, nodes, world size, offload (as ``estimate``'s); ``peak_gib`` is
    per GPU, ``tokens_per_s`` and ``hours`` for all GPUs together, ``micro_batch`` per GPU."""
    comm: CommBreakdown | None = None
    """Multi-GPU plans: communication time, exposed part and scaling efficiency."""
    accelerate_config_yaml: str | None = None
    """Multi-GPU plans: the ``accelerate.yaml`` to launch with (FSDP / DeepSpeed plugin or MULTI_GPU)."""
    launch_command: str | None = None
    """Multi-GPU plans: ``accelerate launch --config_file accelerate.yaml train.py`` (with node flags)."""
    host_gib: float | None = None
    """Offload plans: host RAM per node the offloaded state needs (GiB)."""
    deepspeed_config_json: dict[str, Any] | None = None
    """ZeRO plans: the DeepSpeed ``ds.json`` (``accelerate launch`` or ``torchrun ... --deepspeed ds.json``)."""
    torchrun_command: str | None = None
    """ZeRO plans: the torchrun alternative to ``launch_command``."""


class GpuOption(Frozen):
    name: str
    memory_gib: float
    method: Method
    targets: str | None
    hours: float | None
    tokens_per_s: float


class InstanceOption(Frozen):
    provider: str
    instance: str
    gpu: str
    gpus: int
    price_per_hour: float
    hours: float | None
    cost: float | None


class GpuCountOption(Frozen):
    """How many of the requested GPU would fit a plan, with the best strategy there."""

    gpus: int
    """World size (all nodes)."""
    nodes: int
    strategy: str
    method: Method
    targets: str | None
    peak_gib: float
    """Device peak per GPU."""
    hours: float | None
    tokens_per_s: float


class Alternatives(Frozen):
    """When nothing fits: the smallest GPU profiles and the cheapest instances that would."""

    gpus: tuple[GpuOption, ...]
    instances: tuple[InstanceOption, ...]
    more_gpus: GpuCountOption | None = None
    """The fewest GPUs of the requested kind (up to 64, data-parallel) on which a plan fits."""


class Recommendation(Frozen):
    """Result of :func:`recommend`; field names are the ``recommend --json`` contract."""

    model: str
    gpu: GpuBudget
    plans: tuple[Plan, ...]
    reason: str | None
    dataset: Dataset
    task: Task
    utilization: Utilization
    assumptions: tuple[str, ...]
    searched: int
    stack: StackRef | None = None
    """The training stack every plan was estimated on (the same object as ``estimate --json``'s ``stack``)."""
    """Configurations evaluated (estimate + time model)."""
    alternatives: Alternatives | None = None
    stack: StackRef | None = None
    """The training stack every plan was estimated on (the same object as ``estimate --json``'s ``stack``)."""


class InstanceResult(Frozen):
    """One instance: does a plan fit on one of its GPUs, how long, how much. First fields: the JSON contract."""

    provider: str
    instance: str
    gpu: str
    gpus: int
    price_per_hour: float
    fits: bool
    plan: Plan | None
    hours: float | None
    cost: float | None
    hours_range: tuple[float, float] | None = None
    cost_range: tuple[float, float] | None = None
    """[low, high] USD from ``hours_range``."""
    # -- details
    fastest: bool = False
    cost_per_mtok: float | None = None
    """USD per million training tokens (defined even without a dataset size)."""
    region: str
    price_date: str
    price_source: str
    note: str | None = None


class InstancesReport(Frozen):
    instances: tuple[InstanceResult, ...]
    model: str
    dataset: Dataset
    assumptions: tuple[str, ...]
    searched: int
    stack: StackRef | None = None
    """The training stack every plan was estimated on (the same object as ``estimate --json``'s ``stack``)."""
