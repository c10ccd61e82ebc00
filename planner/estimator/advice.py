"""One actionable line when a configuration does not fit: the first single change that makes it fit."""

from __future__ import annotations

from collections.abc import Callable

from planner.results import Estimate
from planner.specs import GpuProfile, Method, ModelProfile, Optim, TrainSpec

# Each candidate changes one thing, cheapest in quality/speed first.
_CHANGES: tuple[tuple[str, Callable[[TrainSpec], TrainSpec | None]], ...] = (
    ("enable gradient checkpointing (--grad-ckpt)", lambda t: None if t.grad_ckpt else t.model_copy(update={"grad_ckpt": True})),
    ("use an 8-bit paged optimizer (--optim paged-adamw-8bit)",
     lambda t: None if t.optim is Optim.PAGED_ADAMW_8BIT else t.model_copy(update={"optim": Optim.PAGED_ADAMW_8BIT})),
    ("use LoRA instead of full fine-tuning (--method lora)",
     lambda t: t.model_copy(update={"method": Method.LORA}) if t.method is Method.FULL else None),
    ("use QLoRA (--method qlora)",
     lambda t: None if t.method is Method.QLORA else t.model_copy(update={"method": Method.QLORA})),
    ("use micro-batch 1 with gradient accumulation (--micro-batch 1 --grad-accum N)",
     lambda t: None if t.micro_batch == 1 else t.model_copy(update={"micro_batch": 1, "grad_accum": t.grad_accum * t.micro_batch})),
    ("use QLoRA with checkpointing and a paged 8-bit optimizer (--method qlora --grad-ckpt --optim paged-adamw-8bit)",
     lambda t: t.model_copy(update={"method": Method.QLORA, "grad_ckpt": True, "optim": Optim.PAGED_ADAMW_8BIT, "micro_batch": 1})),
)


def advise(
    model: ModelProfile,
    train: TrainSpec,
    gpu: GpuProfile,
    run: Callable[[ModelProfile, TrainSpec, GpuProfile], Estimate],
) -> str:
    """What to change so ``train`` fits ``gpu``, as one line.

    ``run`` is the estimator (passed in to keep this module free of import cycles).
    """
    for label, change in _CHANGES:
        candidate = change(train)
        if candidate is None:
            continue
        est = run(model, candidate, gpu)
        if est.fits:
            return f"To fit: {label} -> peak {est.peak_gib.device:.1f} GiB of {gpu.memory_gib:.1f} GiB."
    half = train.model_copy(update={"seq_len": max(1, train.seq_len // 2), "micro_batch": 1})
    if run(model, half, gpu).fits:
        return f"To fit: shorten sequences to {half.seq_len} tokens with micro-batch 1, or use a larger GPU (loraplan instances)."
    return "Does not fit even as QLoRA at micro-batch 1: use a larger GPU (see `loraplan instances`) or a multi-GPU sharded setup."
