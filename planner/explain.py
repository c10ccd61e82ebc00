"""'What would it take': single changes to a configuration and what each does to the device peak.

``loraplan estimate --explain`` lists them beside the one-line advice of
:mod:`planner.estimator.advice` (which stops at the first change that fits; this evaluates them all).
Each change alters one thing: the :class:`~planner.specs.TrainSpec`, the stack's loss path (a fused or
chunked loss the framework offers, Liger) or where the optimizer state lives (ZeRO-Offload). A change
that cannot apply says why instead of being given a number. Pure: no I/O, no CLI objects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from planner.estimator.api import Resolved
from planner.estimator.core import usable_gib
from planner.results import Estimate, GpuRef
from planner.specs import Frozen, Method, Optim, TrainSpec
from planner.parallel.spec import Offload, ParallelSpec, Strategy
from planner.stack.resolve import LossChoice, framework_choices, resolve_stack
from planner.stack.stack import LossKind, default_stack

_8BIT = (Optim.ADAMW_8BIT, Optim.PAGED_ADAMW_8BIT)
_ATTENTION_ONLY = (("attn",), ("qv",), ("q_proj", "v_proj"), ("q_proj", "k_proj", "v_proj", "o_proj"))


class ChangeStatus(str, Enum):
    """Whether a change was estimated."""

    MODELED = "modeled"
    NOT_APPLICABLE = "not_applicable"
    """The configuration already has it (or it cannot be applied, e.g. halving micro-batch 1)."""
    NOT_MODELED = "not_modeled"
    """The modeled stack does not cover it: no number is given."""


class Change(Frozen):
    """One single change and its effect on the device peak (GiB)."""

    change: str
    """What changes, in words."""
    flags: str
    """The command-line options that make the change."""
    status: ChangeStatus
    peak_gib: float | None = None
    """Device peak with the change (what must fit on the card)."""
    saves_gib: float | None = None
    """Current device peak minus the changed one (negative: the change needs more memory)."""
    fits: bool | None = None
    """Whether the changed configuration fits the GPU (None without a GPU or when not modeled)."""
    note: str = ""


class Explanation(Frozen):
    """Result of :func:`explain`: modeled changes by savings (largest first), then the others."""

    peak_gib: float
    """The current configuration's device peak."""
    gpu: GpuRef | None
    usable_gib: float | None
    fits: bool | None
    changes: tuple[Change, ...]

    def to_json(self) -> dict[str, Any]:
        """The ``explain`` object of ``estimate --explain --json``: sizes rounded to 4 decimals (GiB)."""
        data = self.model_dump(mode="json")
        for key in ("peak_gib", "usable_gib"):
            data[key] = None if data[key] is None else round(data[key], 4)
        for change in data["changes"]:
            for key in ("peak_gib", "saves_gib"):
                change[key] = None if change[key] is None else round(change[key], 4)
        return data


@dataclass(frozen=True)
class _Candidate:
    change: Callable[[TrainSpec], str]
    flags: Callable[[TrainSpec], str]
    apply: Callable[[TrainSpec], TrainSpec | str]
    """The changed spec, or why the change does not apply."""


def _set(t: TrainSpec, **update: object) -> TrainSpec:
    return t.model_copy(update=update)


def _ckpt(t: TrainSpec) -> TrainSpec:
    return _set(t, grad_ckpt=not t.grad_ckpt)


def _qlora(t: TrainSpec) -> TrainSpec | str:
    return "already QLoRA" if t.method is Method.QLORA else _set(t, method=Method.QLORA)


def _lora(t: TrainSpec) -> TrainSpec | str:
    return _set(t, method=Method.LORA) if t.method is Method.FULL else f"method is already {t.method.value}"


def _optim(optim: Optim) -> Callable[[TrainSpec], TrainSpec | str]:
    def apply(t: TrainSpec) -> TrainSpec | str:
        if t.optim is optim or (optim is Optim.ADAMW_8BIT and t.optim in _8BIT):
            return f"already {t.optim.value}"
        return _set(t, optim=optim)
    return apply


def _lora_only(apply: Callable[[TrainSpec], TrainSpec | str]) -> Callable[[TrainSpec], TrainSpec | str]:
    return lambda t: "full fine-tuning has no adapters" if t.method is Method.FULL else apply(t)


def _half_rank(t: TrainSpec) -> TrainSpec | str:
    return "rank is 1" if t.rank < 2 else _set(t, rank=t.rank // 2, alpha=t.alpha / 2)


def _attention(t: TrainSpec) -> TrainSpec | str:
    return "targets already attention-only" if t.targets in _ATTENTION_ONLY else _set(t, targets=("attn",))


def _half_batch(t: TrainSpec) -> TrainSpec | str:
    if t.micro_batch < 2:
        return "micro-batch is 1"
    return _set(t, micro_batch=t.micro_batch // 2, grad_accum=t.grad_accum * 2)


def _half_seq(t: TrainSpec) -> TrainSpec | str:
    return "sequence length is 1" if t.seq_len < 2 else _set(t, seq_len=t.seq_len // 2)


# The changes the issue asks for, each altering one thing. Micro-batch halving doubles gradient
# accumulation so the effective batch is unchanged; rank halving keeps alpha / r.
CANDIDATES: tuple[_Candidate, ...] = (
    _Candidate(lambda t: f"checkpointing {'off' if t.grad_ckpt else 'on'}",
               lambda t: "--no-grad-ckpt" if t.grad_ckpt else "--grad-ckpt", _ckpt),
    _Candidate(lambda t: "QLoRA (4-bit base)", lambda t: "--method qlora", _qlora),
    _Candidate(lambda t: "LoRA, not full", lambda t: "--method lora", _lora),
    _Candidate(lambda t: "8-bit AdamW", lambda t: "--optim adamw-8bit", _optim(Optim.ADAMW_8BIT)),
    _Candidate(lambda t: "paged 8-bit AdamW", lambda t: "--optim paged-adamw-8bit",
               _optim(Optim.PAGED_ADAMW_8BIT)),
    _Candidate(lambda t: "rank halved", lambda t: f"--rank {max(1, t.rank // 2)}", _lora_only(_half_rank)),
    _Candidate(lambda t: "attention-only", lambda t: "--targets attn", _lora_only(_attention)),
    _Candidate(lambda t: "micro-batch halved", lambda t: f"--micro-batch {max(1, t.micro_batch // 2)} "
               f"--grad-accum {t.grad_accum * 2}", _half_batch),
    _Candidate(lambda t: "seq-len halved", lambda t: f"--seq-len {max(1, t.seq_len // 2)}", _half_seq),
)


def _loss_change(inputs: Resolved, current: Estimate) -> Change:
    """The loss path the stack's framework offers that never builds the full logits (Liger, fused, chunked)."""
    stack = inputs.stack or default_stack()
    if stack.loss not in (LossKind.FULL_LOGITS_FP32, LossKind.FULL_LOGITS_CONTIGUOUS):
        return Change(change="fused/chunked loss", flags="-", status=ChangeStatus.NOT_APPLICABLE,
                      note=f"{stack.framework} already uses a {stack.loss.value} loss "
                           f"({current.memory_gib.logits:.2f} GiB now)")
    losses, liger = framework_choices(stack.framework)
    pick = ((LossChoice.FUSED, "--loss fused") if LossChoice.FUSED.value in losses else
            (None, "--liger") if liger else
            (LossChoice.CHUNKED, "--loss chunked") if LossChoice.CHUNKED.value in losses else None)
    if pick is None:
        return Change(change="fused/chunked loss", flags="-", status=ChangeStatus.NOT_APPLICABLE,
                      note=f"{stack.framework} offers no other loss path")
    loss, flags = pick
    variant = resolve_stack(stack.framework, dict(stack.versions), liger=loss is None, loss=loss, detect=False)
    est = replace(inputs, stack=variant.stack).run(current.train)
    return Change(change="Liger fused CE" if loss is None else f"{loss.value} loss", flags=flags,
                  status=ChangeStatus.MODELED, peak_gib=est.peak_gib.device,
                  saves_gib=current.peak_gib.device - est.peak_gib.device, fits=est.fits,
                  note=f"{stack.framework} with {flags} never builds the {current.memory_gib.logits:.2f} GiB of logits"
                  if est.memory_gib.logits < current.memory_gib.logits else "")


def _offload_change(inputs: Resolved, current: Estimate) -> Change:
    """ZeRO-Offload of the optimizer state to host RAM (DeepSpeed ZeRO-2, also on one GPU)."""
    parallel = inputs.parallel or ParallelSpec()
    if parallel.offload is not Offload.NONE:
        return Change(change="CPU offload", flags="-", status=ChangeStatus.NOT_APPLICABLE,
                      note=f"already offloading {parallel.offload.value}")
    strategy = parallel.strategy if parallel.strategy.is_zero and parallel.strategy.shards_optimizer \
        else Strategy.ZERO2
    offloaded = parallel.model_copy(update={"strategy": strategy, "offload": Offload.OPTIMIZER})
    est = replace(inputs, parallel=offloaded).run(current.train)
    flags = f"--parallel {strategy.value} --offload optimizer"
    return Change(change="optimizer offload", flags=flags, status=ChangeStatus.MODELED,
                  peak_gib=est.peak_gib.device, saves_gib=current.peak_gib.device - est.peak_gib.device,
                  fits=est.fits, note=f"{est.host_gib or 0.0:.2f} GiB moves to host RAM; "
                                      "the CPU runs the optimizer step (slower)")


def explain(inputs: Resolved, train: TrainSpec, current: Estimate | None = None) -> Explanation:
    """Every single change of :data:`CANDIDATES`, estimated, with its savings and whether it fits.

    Args:
        inputs: Model, GPU and calibration (:func:`planner.estimator.api.resolve`).
        train: The current configuration.
        current: Its estimate, when already computed.

    Returns:
        Modeled changes sorted by ``saves_gib`` (largest first), then not-modeled, then not-applicable ones.
    """
    current = current or inputs.run(train)
    base_peak = current.peak_gib.device
    modeled: list[Change] = []
    skipped: list[Change] = []
    for candidate in CANDIDATES:
        changed = candidate.apply(train)
        if isinstance(changed, str):
            skipped.append(Change(change=candidate.change(train), flags="-",
                                  status=ChangeStatus.NOT_APPLICABLE, note=changed))
            continue
        est = inputs.run(changed)
        note = (f"paged state ({est.host_spillable_gib:.2f} GiB) counts on the device; CUDA may spill it "
                "to host RAM (slower)") if est.host_spillable_gib and not current.host_spillable_gib else ""
        modeled.append(Change(change=candidate.change(train), flags=candidate.flags(train), status=ChangeStatus.MODELED,
                              peak_gib=est.peak_gib.device, saves_gib=base_peak - est.peak_gib.device,
                              fits=est.fits, note=note))
    for extra in (_loss_change(inputs, current), _offload_change(inputs, current)):
        (modeled if extra.status is ChangeStatus.MODELED else skipped).append(extra)
    modeled.sort(key=lambda c: -(c.saves_gib or 0.0))
    gpu = inputs.gpu
    return Explanation(
        peak_gib=base_peak, gpu=current.gpu, usable_gib=usable_gib(gpu) if gpu else None, fits=current.fits,
        changes=(*modeled, *skipped),
    )
