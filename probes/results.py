"""Result models of ``loraplan probe``: the ``--json`` / ``--save`` contract.

Top-level keys (issue #3): ``estimate`` (the estimator's JSON), ``measured_gib`` {``after_load``,
``peak_allocated``, ``peak_reserved``, ``device``}, ``tokens_per_s``, ``error_pct`` {``allocated``,
``reserved``}, ``environment``, ``mode`` (``gpu`` | ``trace``), ``fits``, ``failed_phase``; plus
``calibration`` (a :class:`planner.calibration.Calibration`: what ``loraplan estimate --calibrate``
reads), ``trace`` / ``gpu`` details and ``max_batch``. All memory is GiB (2**30 bytes). Every model
is a :class:`planner.specs.Frozen` (immutable, unknown fields rejected).
"""

from __future__ import annotations

from typing import Any, Literal

from planner.calibration import Calibration
from planner.specs import GIB, Frozen


class MeasuredGiB(Frozen):
    after_load: float | None = None
    """Allocated right after the model is built, prepared and wrapped (before the optimizer)."""
    peak_allocated: float | None = None
    """``torch.cuda.max_memory_allocated`` over the steps (trace: the traced peak of live bytes)."""
    peak_reserved: float | None = None
    """``torch.cuda.max_memory_reserved`` over the steps (GPU only)."""
    device: float | None = None
    """Peak device memory used by this process per NVML, CUDA context included (GPU only)."""


class ErrorPct(Frozen):
    """``(estimate - measured) / measured * 100``."""

    allocated: float | None = None
    reserved: float | None = None


class Environment(Frozen):
    gpu: str | None = None
    driver: str | None = None
    cuda: str | None = None
    torch: str | None = None
    transformers: str | None = None
    peft: str | None = None
    bitsandbytes: str | None = None
    accelerate: str | None = None
    trl: str | None = None
    python: str | None = None
    command: list[str] = []
    """The exact argv of the probe."""


class Breakdown(Frozen):
    """Live memory split by owner at one moment, GiB."""

    weights_gib: float
    """Frozen parameters, buffers and 4-bit quantization state."""
    trainable_gib: float
    """Trainable parameters (adapters for LoRA/QLoRA, everything for full fine-tuning)."""
    gradients_gib: float
    optimizer_gib: float
    """Optimizer state held in torch memory (paged state excluded)."""
    other_gib: float
    """Everything else: saved activations, logits, autocast weight copies, temporaries, the batch."""
    paged_gib: float = 0.0
    """Paged optimizer state in CUDA unified memory (outside torch's counters)."""

    @property
    def total_gib(self) -> float:
        return self.weights_gib + self.trainable_gib + self.gradients_gib + self.optimizer_gib + self.other_gib

    @classmethod
    def from_bytes(cls, weights: float, trainable: float, grads: float, optim: float, other: float,
                   paged: float = 0.0) -> Breakdown:
        return cls(weights_gib=weights / GIB, trainable_gib=trainable / GIB, gradients_gib=grads / GIB,
                   optimizer_gib=optim / GIB, other_gib=other / GIB, paged_gib=paged / GIB)

    @classmethod
    def at_peak(cls, static: Breakdown, peak: Any, paged: float) -> Breakdown:
        """The split at the traced peak: static parts from ``static``, counters from ``peak`` (bytes)."""
        weights = static.weights_gib * GIB
        trainable = static.trainable_gib * GIB
        other = peak.live_bytes - weights - trainable - peak.grad_bytes - peak.optimizer_bytes
        return cls.from_bytes(weights, trainable, peak.grad_bytes, peak.optimizer_bytes, other, paged)


class PhaseMemory(Frozen):
    step: int
    phase: str
    """``forward``, ``backward`` or ``optimizer`` (clip + step + zero_grad)."""
    peak_gib: float
    end_gib: float


class TraceDetail(Frozen):
    emulated: list[str]
    """What the trace emulates instead of running (always shown to the user)."""
    steps: int
    phases: list[PhaseMemory]
    breakdown_gib: dict[str, Breakdown]
    """Split at ``after_load``, ``after_optimizer_init``, ``end_of_forward.stepN``, ``after_first_step``, ``end``."""
    peak_gib: float
    peak_rounded_gib: float
    """The peak with each tensor rounded up to the CUDA allocator's 512-byte blocks."""
    peak_phase: str
    peak_step: int
    at_peak_gib: Breakdown
    """Split at the peak (gradient bytes are counted when accumulated, so may lag one tensor)."""
    paged_gib: float = 0.0
    ops: int = 0
    seconds: float = 0.0


class ComponentRow(Frozen):
    """One line of the side-by-side table: a quantity both the estimator and the probe give."""

    name: str
    estimate_gib: float | None = None
    measured_gib: float | None = None
    note: str = ""

    @property
    def error_pct(self) -> float | None:
        return error_pct(self.estimate_gib, self.measured_gib)


class GpuDetail(Frozen):
    steps: int
    """Measured optimizer steps (after one warm-up step)."""
    load_seconds: float | None = None
    after_optimizer_init_gib: float | None = None
    after_first_step_gib: float | None = None
    step_seconds: list[float] = []
    paged_gib: float | None = None
    """NVML device use minus torch reserved minus CUDA context at the peak (paged optimizers), if measurable."""
    nvml: bool = False


class StepMemory(Frozen):
    """Peaks of one optimizer step (``MemoryCallback``: the counters are reset after every step)."""

    step: int
    allocated_gib: float
    """``torch.cuda.max_memory_allocated`` since the previous step ended."""
    reserved_gib: float
    """``torch.cuda.max_memory_reserved`` since the previous step ended."""
    seconds: float | None = None


class MaxBatch(Frozen):
    measured: int
    """Largest micro-batch that ran (0: not even 1 fits)."""
    estimated: int | None = None
    """The estimator's largest fitting micro-batch for this GPU."""
    tried: dict[int, bool] = {}


class GpuInfo(Frozen):
    """One visible GPU (``--detect``)."""

    index: int
    name: str
    total_gib: float
    free_gib: float | None = None
    compute_capability: str
    bf16: bool
    driver: str | None = None
    cuda: str | None = None
    other_processes_gib: float | None = None
    """Memory held by other processes (NVML), or by anything but this process (torch.cuda fallback)."""
    source: Literal["nvml", "torch"] = "torch"
    profile: str | None = None
    """Matching shipped GPU profile (``planner.catalog.match_gpu``)."""


class ProbeResult(Frozen):
    model: str
    mode: Literal["gpu", "trace"]
    estimate: dict[str, Any] | None = None
    """``Estimate.model_dump(mode="json")`` for the same configuration (and GPU)."""
    measured_gib: MeasuredGiB
    tokens_per_s: float | None = None
    error_pct: ErrorPct = ErrorPct()
    environment: Environment
    fits: bool
    failed_phase: str | None = None
    """Phase that ran out of memory: ``load``, ``optimizer_init``, ``forward``, ``backward``, ``optimizer``."""
    error: str | None = None
    peak_phase: str | None = None
    params: dict[str, int] = {}
    """``total`` (base model) and ``trainable`` parameter counts of the built model."""
    components: list[ComponentRow] = []
    """Estimate next to measurement for every quantity the probe can read."""
    calibration: Calibration | None = None
    trace: TraceDetail | None = None
    gpu: GpuDetail | None = None
    max_batch: MaxBatch | None = None
    gpus: list[GpuInfo] = []
    """Visible GPUs at the start of a GPU probe (the probe runs on the first)."""
    interrupted: bool = False
    step_memory: list[StepMemory] = []
    """Per-step peaks (``probes.callbacks.MemoryCallback``)."""


def error_pct(estimate_gib: float | None, measured_gib: float | None) -> float | None:
    """``(estimate - measured) / measured * 100``, or None when either is missing."""
    if estimate_gib is None or not measured_gib:
        return None
    return (estimate_gib - measured_gib) / measured_gib * 100.0
