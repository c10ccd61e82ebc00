"""CPU trace: run the real training step on fake tensors and count live bytes.

The model, PEFT, gradient checkpointing, autocast, loss and optimizer code all run unmodified on
``FakeTensorMode`` tensors (shapes and dtypes only, no data, no RAM for weights) while a
:class:`~probes.memtrack.LiveBytesTracker` counts every storage. The fake device is the CPU; what
differs from CUDA dispatch is emulated (:mod:`probes.cuda_emulation`), bitsandbytes 4-bit layers
and optimizers are emulated (:mod:`probes.nf4`, :class:`probes.optim.EmulatedBnbAdamW`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol
from unittest import mock

import torch
from torch import nn

from planner.errors import PlannerError
from planner.specs import GIB, Method, TrainSpec
from planner.stack.optimizers import Library, optimizer_info
from probes import build
from probes.memtrack import LiveBytesTracker
from probes.results import Breakdown, PhaseMemory, TraceDetail

EMULATION_NOTES = (
    "fake tensors on CPU with the CUDA autocast op lists and CUDA dropout (bool mask)",
    "not counted: kernel workspaces that are not tensors of the step (cuBLAS 8-32 MiB, flash backward dq_accum)",
    "sdpa runs the CUDA kernel CUDA would pick (flash / memory-efficient, shapes from their meta functions)",
)
NF4_NOTE = "NF4 emulated: bitsandbytes 4-bit storage and MatMul4Bit dataflow (saves only the packed weight)"
FLASH_NOTE = "flash_attention_2 accounted as sdpa's flash kernel (same saved tensors)"
BNB_OPTIM_NOTE = "bitsandbytes optimizer state emulated (Optimizer2State.init_state)"
PAGED_NOTE = "paged optimizer state (params >= 1e5 elements) lives in CUDA unified memory: reported as paged_gib"


TRACED_FRAMEWORKS = ("trainer", "trl")
TRL_NOTE = ("trl SFTTrainer: its model preparation and compute_loss ran unmodified; the fused head's Triton folds "
            "and fp32 addmm ran as in-place no-ops (the memory of their CUDA path)")
TRL_LEGACY_NOTE = ("trl SFTTrainer < 0.15: prepare_model_for_kbit_training, get_peft_model and its "
                   "peft_module_casting_to_bf16 ran unmodified; the loss is Trainer's (no compute_loss override)")


class Sharding(Protocol):
    """How the traced model is wrapped for data-parallel sharding (:mod:`probes.trace_fsdp`)."""

    notes: list[str]

    def context(self, tracker: LiveBytesTracker) -> AbstractContextManager[None]:
        """Entered around the whole trace (e.g. to report storages the engine resizes to the tracker)."""

    def apply(self, model: nn.Module) -> nn.Module:
        """Wrap the prepared (PEFT, checkpointing) model; runs on fake tensors."""


@dataclass
class TraceRun:
    """Everything the trace measured, in bytes."""

    detail: TraceDetail
    after_load_bytes: float
    peak_bytes: float
    params_total: int
    params_trainable: int
    seconds: float
    notes: list[str] = field(default_factory=list)


def _fake_mode() -> Any:
    from torch._subclasses.fake_tensor import FakeTensorMode

    mode = FakeTensorMode(allow_non_fake_inputs=True)
    # FakeTensorMode memoizes each fake tensor it wraps from a fresh meta tensor in a
    # WeakValueDictionary; that weak reference makes torch.utils.swap_tensors refuse the tensor,
    # and nn.Module.to swaps fake parameters (PEFT moves every adapter with .to(device, dtype)).
    # Fresh op outputs are never looked up again, so that memo can stay empty.
    mode.fake_tensor_converter.set_tensor_memo = lambda tensor, fake: None
    return mode


@contextmanager
def _trace_context(tracker: LiveBytesTracker) -> Iterator[None]:
    from probes.cuda_emulation import cuda_autocast_policy, cuda_dropout_patch, cuda_sdpa_patch

    # transformers treats fake tensors like a graph trace and keeps data-dependent checks
    # conservative: it cannot read the position ids, so it assumes packed sequences and builds a
    # full attention mask (disabling sdpa's is_causal path and GQA). The probe's batches are
    # single unpacked sequences, for which the real check returns None.
    # transformers 4.x (no masking_utils, before 4.53) has no packed-sequence check: its sdpa path drops
    # the mask of an unmasked batch (AttentionMaskConverter._ignore_causal_mask_sdpa) without reading data.
    with _no_packed_sequences(), cuda_autocast_policy(), cuda_dropout_patch(), cuda_sdpa_patch(), _fake_mode(), \
            tracker:
        yield


def _no_packed_sequences() -> AbstractContextManager[Any]:
    try:
        import transformers.masking_utils as masking
    except ImportError:
        return nullcontext()
    if not hasattr(masking, "find_packed_sequence_indices"):
        return nullcontext()
    return mock.patch.object(masking, "find_packed_sequence_indices", lambda position_ids: None)


@contextmanager
def _balanced_routing(raw: dict[str, Any]) -> Iterator[None]:
    """transformers 4.x MoE blocks (v4.44.2 ``MixtralSparseMoeBlock.forward``) pick each expert's tokens with
    ``torch.where(expert_mask[e])``, a data-dependent shape fake tensors cannot have. Give every expert the
    balanced share, ``top_k x tokens / experts`` (token, slot) pairs, the routing the estimate assumes."""
    experts = raw.get("num_local_experts") or raw.get("num_experts")
    if not experts or build.transformers_major() >= 5:
        yield
        return
    from torch._subclasses.fake_tensor import FakeTensor

    where = torch.where

    def balanced_where(condition: Any, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs or not isinstance(condition, FakeTensor):
            return where(condition, *args, **kwargs)
        pairs = round(condition.numel() / experts)
        return tuple(torch.zeros(pairs, dtype=torch.long, device=condition.device) for _ in range(condition.dim()))

    with mock.patch.object(torch, "where", balanced_where):
        yield


@contextmanager
def _framework_context(framework: str) -> Iterator[None]:
    if framework == "trl":
        from probes.trl_step import cuda_fused_head, is_legacy_trl

        if is_legacy_trl():  # no fused head before TRL 0.15
            yield
            return
        with cuda_fused_head():
            yield
    else:
        yield


def _param_counts(model: nn.Module, spec: TrainSpec) -> tuple[int, int]:
    """(base-model, trainable) parameter counts, a 4-bit weight counted at its unpacked size."""
    from probes.nf4 import EmulatedLinear4bit

    packed = {id(m.weight): m.in_features * m.out_features for m in model.modules() if isinstance(m, EmulatedLinear4bit)}
    return build.count_params(model, packed, spec)


def _quant_state_tensors(model: nn.Module) -> list[torch.Tensor]:
    from probes.nf4 import EmulatedLinear4bit

    out: list[torch.Tensor] = []
    for m in model.modules():
        if isinstance(m, EmulatedLinear4bit):
            out += [t for t in vars(m.emulated_state).values() if isinstance(t, torch.Tensor)]
    return out


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]


class _Accounting:
    """Phase bookkeeping around the tracker: boundaries, breakdowns, gradient bytes."""

    def __init__(self, tracker: LiveBytesTracker, model: nn.Module) -> None:
        self.tracker = tracker
        self.model = model
        self.optimizer: torch.optim.Optimizer | None = None
        self.paged_bytes = 0.0
        self.phases: list[PhaseMemory] = []
        self.breakdowns: dict[str, Breakdown] = {}
        self.step = 0
        self._current: str | None = None
        self._grad: dict[int, float] = {}
        self._frozen = [p for p in model.parameters() if not p.requires_grad]
        self._trainable = [p for p in model.parameters() if p.requires_grad]
        self._static = self._frozen + list(model.buffers()) + _quant_state_tensors(model)
        for p in self._trainable:
            p.register_post_accumulate_grad_hook(self._on_grad)

    def _on_grad(self, p: torch.Tensor) -> None:
        nbytes = self.tracker.storage_bytes([p.grad]) if p.grad is not None else 0.0
        self.tracker.grad_bytes += nbytes - self._grad.get(id(p), 0.0)
        self._grad[id(p)] = nbytes

    def breakdown(self) -> Breakdown:
        t = self.tracker
        weights = t.storage_bytes(self._static)
        trainable = t.storage_bytes(self._trainable)
        grads = t.storage_bytes([p.grad for p in self._trainable if p.grad is not None])
        optim = t.storage_bytes(_optimizer_tensors(self.optimizer)) if self.optimizer is not None else 0.0
        other = t.live_bytes - weights - trainable - grads - optim
        return Breakdown.from_bytes(weights, trainable, grads, optim, other, self.paged_bytes)

    def record(self, label: str) -> None:
        self.breakdowns[label] = self.breakdown()

    def on_phase(self, name: str) -> None:
        """Close the current phase (its end and peak) and open ``name``."""
        self._close()
        if name == "forward" and self._current is None:
            self.step += 1
        self._current = name
        self.tracker.set_phase(self._label(name))
        self.tracker.backward = name == "backward"

    def _label(self, name: str) -> str:
        return f"step{self.step}.{name}.{len(self.phases)}"

    def _close(self) -> None:
        if self._current is None:
            return
        label = self.tracker.phase
        self.phases.append(PhaseMemory(
            step=self.step, phase=self._current,
            peak_gib=self.tracker.phase_peak_bytes.get(label, self.tracker.live_bytes) / GIB,
            end_gib=self.tracker.live_bytes / GIB,
        ))
        if self._current in ("forward", "backward"):
            self.record(f"end_of_{self._current}.step{self.step}")

    def end_step(self) -> None:
        self._close()
        self._current = None
        self.tracker.backward = False
        if self.optimizer is not None:
            self.tracker.optimizer_bytes = self.tracker.storage_bytes(_optimizer_tensors(self.optimizer))
        self.tracker.grad_bytes = 0.0
        self._grad.clear()
        self.tracker.set_phase("idle")


def run_trace(raw: dict[str, Any], spec: TrainSpec, *, steps: int = 2, framework: str = "trainer",
              sharding: Sharding | None = None) -> TraceRun:
    """Trace ``steps`` optimizer steps of ``spec`` on the model ``raw`` describes.

    Args:
        raw: The model's ``config.json`` dict.
        spec: The training configuration.
        steps: Optimizer steps (at least 2: optimizer state exists only after the first).
        framework: ``trainer`` (``transformers.Trainer``: the model's own loss) or ``trl`` (``SFTTrainer``'s
            preparation and ``compute_loss`` with its fused LM head, :mod:`probes.trl_step`).
        sharding: Wraps the prepared model (FSDP2 on a fake process group); None: one process.
    """
    if framework not in TRACED_FRAMEWORKS:
        raise PlannerError(f"the CPU trace runs {' and '.join(TRACED_FRAMEWORKS)}, not {framework} (its kernels "
                           "need a GPU)")
    from probes.optim import EmulatedBnbAdamW, build_optimizer

    steps = max(2, steps)
    if spec.method is Method.QLORA and spec.quant_bits != 4:
        raise PlannerError(
            "the CPU trace emulates 4-bit NF4 only (LLM.int8 picks outlier columns from the data, which fake "
            "tensors do not have); run --quant-bits 8 on a GPU"
        )
    started = time.perf_counter()
    tracker = LiveBytesTracker("cpu")
    notes = list(EMULATION_NOTES) + (list(sharding.notes) if sharding is not None else [])
    with _trace_context(tracker), _framework_context(framework), _balanced_routing(raw), \
            (sharding.context(tracker) if sharding is not None else nullcontext()):
        model = build.create_model(raw, spec, "cpu", trace=True)
        if spec.method is Method.QLORA:
            from probes.nf4 import replace_with_emulated_nf4

            replace_with_emulated_nf4(model, build.compute_dtype(spec), spec.double_quant)
            notes.append(NF4_NOTE)
        model = build.prepare(model, raw, spec)
        loss_fn = None
        if framework == "trl":
            from probes.trl_step import is_legacy_trl, prepare_trl, trl_loss

            model = prepare_trl(model, spec)
            if is_legacy_trl():  # SFTTrainer < 0.15 has no compute_loss: Trainer's (the model's own loss)
                notes.append(TRL_LEGACY_NOTE)
            else:
                loss_fn = trl_loss
                notes.append(TRL_NOTE)
        if sharding is not None:
            model = sharding.apply(model)
        total, trainable = _param_counts(model, spec)
        acct = _Accounting(tracker, model)
        acct.record("after_load")
        after_load = tracker.live_bytes

        def make_paged(alloc: Any) -> torch.Tensor:
            with tracker.paused():
                return alloc()

        def emulate(params: Any, bits: int, paged: bool, fp32_ids: set[int]) -> torch.optim.Optimizer:
            return EmulatedBnbAdamW(params, bits, paged, fp32_ids, make_paged=make_paged)

        optimizer = build_optimizer(model, spec.optim, emulate_bnb=emulate)
        acct.optimizer = optimizer
        acct.record("after_optimizer_init")
        tracker.reset_peak()
        batch = build.random_batch(build.vocab_size(model), spec, "cpu")
        for _ in range(steps):
            build.train_step(model, optimizer, batch, spec, "cpu", acct.on_phase, loss_fn)
            if isinstance(optimizer, EmulatedBnbAdamW):
                acct.paged_bytes = optimizer.paged_bytes
            acct.end_step()
            if acct.step == 1:
                acct.record("after_first_step")
        acct.record("end")
        peak = tracker.at_peak
        peak_phase = _phase_name(peak.phase)
        detail = TraceDetail(
            emulated=notes,
            steps=steps,
            phases=acct.phases,
            breakdown_gib=acct.breakdowns,
            peak_gib=tracker.peak_bytes / GIB,
            peak_rounded_gib=tracker.peak_rounded_bytes / GIB,
            peak_phase=peak_phase,
            peak_step=_phase_step(peak.phase),
            at_peak_gib=Breakdown.at_peak(acct.breakdowns["after_optimizer_init"], peak, acct.paged_bytes),
            paged_gib=acct.paged_bytes / GIB,
            ops=tracker.ops,
            seconds=0.0,
        )
    if spec.attn.value == "flash":
        notes.append(FLASH_NOTE)
    if spec.attn.value != "eager" and not build.supports_sdpa(build.hf_config(raw, spec, trace=True)):
        notes.append("this model class has no sdpa support in transformers: ran eager attention (its default)")
    optim = optimizer_info(spec.optim)
    if optim.library is Library.BITSANDBYTES:
        notes.append(BNB_OPTIM_NOTE)
    if optim.paged:
        notes.append(PAGED_NOTE)
    seconds = time.perf_counter() - started
    detail = detail.model_copy(update={"seconds": seconds, "emulated": notes})
    return TraceRun(detail=detail, after_load_bytes=after_load, peak_bytes=tracker.peak_bytes,
                    params_total=total, params_trainable=trainable, seconds=seconds, notes=notes)


def _phase_name(label: str) -> str:
    parts = label.split(".")
    return parts[1] if len(parts) > 1 else label


def _phase_step(label: str) -> int:
    head = label.split(".")[0]
    return int(head[4:]) if head.startswith("step") and head[4:].isdigit() else 0
