"""One actionable line when a configuration does not fit: the first single change that makes it fit."""

from __future__ import annotations

from collections.abc import Callable

from planner.results import Estimate
from planner.specs import GpuProfile, Method, ModelProfile, Optim, TrainSpec

_LEAN_QLORA = {"method": Method.QLORA, "grad_ckpt": True, "optim": Optim.PAGED_ADAMW_8BIT, "micro_batch": 1,
               "optimizer_in_backward": False}
_NOT_FULL = {"optimizer_in_backward": False}  # torchtune's optimizer_in_bwd exists for full fine-tuning only

# Each candidate changes one thing, cheapest in quality/speed first; then the leanest combinations.
_CHANGES: tuple[tuple[str, Callable[[TrainSpec], TrainSpec | None]], ...] = (
    ("enable gradient checkpointing (--grad-ckpt)", lambda t: None if t.grad_ckpt else t.model_copy(update={"grad_ckpt": True})),
    ("use an 8-bit paged optimizer (--optim paged-adamw-8bit)",
     lambda t: None if t.optim is Optim.PAGED_ADAMW_8BIT else t.model_copy(update={"optim": Optim.PAGED_ADAMW_8BIT})),
    ("use LoRA instead of full fine-tuning (--method lora)",
     lambda t: t.model_copy(update={"method": Method.LORA, **_NOT_FULL}) if t.method is Method.FULL else None),
    ("use QLoRA (--method qlora)",
     lambda t: None if t.method is Method.QLORA else t.model_copy(update={"method": Method.QLORA, **_NOT_FULL})),
    ("use micro-batch 1 with gradient accumulation (--micro-batch 1 --grad-accum N)",
     lambda t: None if t.micro_batch == 1 or t.optimizer_in_backward
     else t.model_copy(update={"micro_batch": 1, "grad_accum": t.grad_accum * t.micro_batch})),
    ("use QLoRA with checkpointing and a paged 8-bit optimizer (--method qlora --grad-ckpt --optim paged-adamw-8bit)",
     lambda t: t.model_copy(update=_LEAN_QLORA)),
    ("use QLoRA with 16-bit embeddings and norms as current TRL does (--method qlora --no-kbit-prepare --grad-ckpt "
     "--optim paged-adamw-8bit)",
     lambda t: t.model_copy(update={**_LEAN_QLORA, "kbit_prepare": False})),
)


def advise(
    model: ModelProfile,
    train: TrainSpec,
    gpu: GpuProfile,
    run: Callable[[ModelProfile, TrainSpec, GpuProfile], Estimate],
) -> str:
    """What to change so ``train`` fits ``gpu``, as one line.

    ``run`` is the estimator with the caller's fit rule (passed in to keep this module free of import cycles).
    """
    for label, change in _CHANGES:
        candidate = change(train)
        if candidate is None or candidate == train:
            continue
        est = run(model, candidate, gpu)
        if est.fits:
            return f"To fit: {label} -> peak {est.peak_gib.device:.1f} GiB within the {_budget(est):.1f} GiB budget."
    for base, how in ((train.model_copy(update={"micro_batch": 1}), "with micro-batch 1"),
                      (train.model_copy(update={**_LEAN_QLORA, "kbit_prepare": False}), "as lean QLoRA (--method "
                       "qlora --no-kbit-prepare --grad-ckpt --optim paged-adamw-8bit --micro-batch 1)")):
        seq = _longest_fitting_seq(model, base, gpu, run)
        if seq is not None:
            return (f"To fit: shorten sequences to {seq} tokens {how}, or use a larger GPU (loraplan instances).")
    return ("Does not fit even as lean QLoRA at 256 tokens: use a larger GPU (see `loraplan instances`) or a "
            "multi-GPU sharded setup.")


def _budget(est: Estimate) -> float:
    assert est.gpu is not None and est.gpu.budget_gib is not None
    return est.gpu.budget_gib


def _longest_fitting_seq(model: ModelProfile, base: TrainSpec, gpu: GpuProfile,
                         run: Callable[[ModelProfile, TrainSpec, GpuProfile], Estimate]) -> int | None:
    """The longest power-of-two sequence length below ``base.seq_len`` (down to 256) that fits, if any."""
    seq = 1 << (max(base.seq_len - 1, 1).bit_length() - 1)  # largest power of two below seq_len
    while seq >= 256:
        if run(model, base.model_copy(update={"seq_len": seq}), gpu).fits:
            return seq
        seq //= 2
    return None
