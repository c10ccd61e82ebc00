"""Result models of the time model: the utilization assumption, the loop implementation, the step breakdown."""

from __future__ import annotations

from enum import Enum

from planner.specs import Frozen, Method


class Provenance(str, Enum):
    """Where a GPU's utilization comes from."""

    MEASURED = "measured"
    """``loraplan probe`` results for this GPU in ``profiles/measurements/``."""
    FITTED = "fitted"
    """Fitted on published runs of this GPU's generation (``from_gpu`` names the GPU the runs used)."""
    INFERRED = "inferred"
    """No run of this generation: borrowed from another generation's fit (``from_gpu``)."""


class OptimizerImpl(str, Enum):
    """How the optimizer step runs (its DRAM traffic differs)."""

    FUSED = "fused"
    """One kernel per tensor group: ``adamw_torch_fused`` (Trainer default), bitsandbytes kernels."""
    FOREACH = "foreach"
    """``torch.optim.AdamW`` default on CUDA: one multi-tensor op per formula step, with temporaries."""


class StepImpl(Frozen):
    """What the training loop runs that :class:`~planner.specs.TrainSpec` does not describe.

    The default is the modeled stack (transformers 5 Trainer: fused AdamW, bf16 autocast); published runs
    state theirs (``impl`` in ``profiles/throughput_runs.json``).
    """

    optimizer_impl: OptimizerImpl = OptimizerImpl.FUSED
    autocast: bool = True
    """False: the model runs in its load dtype without autocast (fp32 adapters then see fp32 casts of x)."""


class Utilization(Frozen):
    """The utilization assumption behind a tokens/s figure, stated in the output."""

    mfu: float
    """Fraction of the dense peak a reference matmul (2048 rows, 4096 wide) reaches on this GPU; other GEMM
    sizes scale by the GEMM-size factor (:func:`planner.time.gemm.size_factor`)."""
    gemm_half_tokens: float
    """GEMM-size factor: rows (tokens) at which a matmul reaches half of ``mfu`` from the token side."""
    gemm_half_dim: float
    """GEMM-size factor: the same for the smaller weight dimension."""
    overhead_s_per_layer: float
    """Fixed seconds per decoder layer per forward-equivalent pass (kernel launches, Python), fitted."""
    overhead_s_per_module: float
    """Fixed seconds per adapted module per forward-equivalent pass (PEFT LoRA dispatch), fitted."""
    basis: str
    """``measured``, ``fitted`` or ``inferred`` (same as ``provenance``; kept for older readers)."""
    provenance: Provenance
    from_gpu: str | None
    """The GPU whose runs set ``mfu`` (None when measured on this GPU)."""
    generation: str
    sources: tuple[str, ...]


class ReferencePoint(Frozen):
    """One published (or measured) training speed, with the model's prediction."""

    id: str
    gpu: str
    method: Method
    stack: str
    split: str
    """``fit``, ``holdout`` or ``other-stack``."""
    measured_tokens_per_s: float
    predicted_tokens_per_s: float
    source: str

    @property
    def error(self) -> float:
        """Signed relative error of the prediction (predicted / measured - 1)."""
        return self.predicted_tokens_per_s / self.measured_tokens_per_s - 1.0


class TimeBreakdown(Frozen):
    """Seconds per micro-batch by part, and the resulting throughput with its error band."""

    compute_s: float
    """Matmuls and attention (each GEMM at its roofline: compute at utilization, or its own bytes)."""
    weights_s: float
    """Reading every weight once per pass at the effective bandwidth (informational floor)."""
    dequant_s: float
    """QLoRA: NF4 -> 16-bit dequantization of every quantized weight, per pass."""
    memory_s: float
    """Memory-bound elementwise work: norms, activations, rotary, residuals, LoRA path, loss, DoRA norms."""
    overhead_s: float
    """CPU dispatch seconds per layer, adapted module and routed expert; the micro-batch takes
    ``max(compute + memory + dequant, overhead)`` (launches overlap GPU work)."""
    optimizer_s: float
    """Per optimizer step (once every ``grad_accum`` micro-batches): optimizer and gradient clipping passes."""
    tokens_per_s: float
    tokens_per_s_low: float
    tokens_per_s_high: float
    """Error band from the held-out residual quantiles (``profiles/throughput.json`` ``error_band``)."""
    mfu: float
    peak_tflops: float
    kernels: str = "eager"
    """Norm/rotary/SwiGLU traffic of the stack: ``eager`` (counted from transformers' op sequence) or ``fused``
    (counted from Liger / Unsloth Triton kernels, ``throughput.json`` ``fused_kernels``). The loss term follows
    the stack's loss kind; GEMM utilization and dispatch are fitted on transformers-stack runs for every stack."""
