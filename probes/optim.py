"""Optimizers as transformers' Trainer builds them, plus a state-only emulation of bitsandbytes'.

``Trainer`` (transformers 5, ``trainer_optimizer.py``) defaults to ``adamw_torch_fused`` for
torch >= 2.8, lr 5e-5, betas (0.9, 0.999), eps 1e-8, weight decay 0; ``sgd`` is ``torch.optim.SGD``
(momentum 0, no state); ``adafactor`` is ``transformers.optimization.Adafactor(scale_parameter=False,
relative_step=False)``; the bitsandbytes ones are ``bnb.optim.AdamW(optim_bits=8|32, is_paged=...)``
and, for 8-bit, every ``nn.Embedding`` weight is overridden to 32-bit state
(``GlobalOptimManager.register_module_override``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from planner.catalog import runtime_constants
from planner.errors import PlannerError
from planner.specs import Optim
from planner.stack.optimizers import Family, Library, OptimizerInfo, optimizer_info

LR = 5e-5
"""``TrainingArguments.learning_rate`` default."""
ADAM_BETAS = (0.9, 0.999)
"""``TrainingArguments.adam_beta1`` / ``adam_beta2`` defaults."""
ADAM_EPS = 1e-8
"""``TrainingArguments.adam_epsilon`` default."""
# bitsandbytes 8-bit optimizer constants, one source with the estimator (profiles/runtime.json, cited there):
# ``Optimizer2State.init_state`` keeps one fp32 absmax per ``blocksize`` elements of 8-bit state; parameters
# under ``min_8bit_size`` keep 32-bit state; ``Optimizer8bit.get_state_buffer`` pages only states of at
# least ``paged_min_numel`` elements.
_BNB = runtime_constants()["bnb_8bit_optimizer"]
BNB_BLOCKSIZE = int(_BNB["blocksize"])
BNB_MIN_8BIT_SIZE = int(_BNB["min_8bit_size"])
BNB_MIN_PAGED_NUMEL = int(_BNB["paged_min_numel"])

EmulateBnb = Callable[..., torch.optim.Optimizer]
"""The trace's stand-in for bitsandbytes: ``(params, optim_bits, is_paged, fp32_param_ids) -> optimizer``."""


def trainable(model: nn.Module) -> list[nn.Parameter]:
    """Parameters with ``requires_grad`` (what Trainer hands the optimizer)."""
    return [p for p in model.parameters() if p.requires_grad]


def embedding_weights(model: nn.Module) -> list[nn.Parameter]:
    """Weights Trainer gives 32-bit state in 8-bit bitsandbytes optimizers."""
    return [m.weight for m in model.modules() if isinstance(m, nn.Embedding)]


def adamw_is_foreach() -> bool:
    """Whether the installed transformers' default AdamW is ``adamw_torch`` (foreach on CUDA: transformers
    < 4.55) rather than ``adamw_torch_fused`` (the stack's ``default_optimizer`` behaviour, profiles/stacks/)."""
    from planner.stack.resolve import resolve_stack

    return resolve_stack("trainer", detect=True).stack.value("default_optimizer") == "adamw_torch_foreach"


def _torch_adamw(model: nn.Module, info: OptimizerInfo, emulate_bnb: EmulateBnb | None) -> torch.optim.Optimizer:
    # transformers < 4.55: TrainingArguments.optim 'adamw_torch' -> torch.optim.AdamW(foreach=None), which picks
    # the foreach implementation for CUDA tensors; run it explicitly (the fake tensors are on the CPU).
    impl = {"foreach": True} if adamw_is_foreach() else {"fused": True}
    return torch.optim.AdamW(trainable(model), lr=LR, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=0.0, **impl)


def _torch_sgd(model: nn.Module, info: OptimizerInfo, emulate_bnb: EmulateBnb | None) -> torch.optim.Optimizer:
    return torch.optim.SGD(trainable(model), lr=LR)


def _adafactor(model: nn.Module, info: OptimizerInfo, emulate_bnb: EmulateBnb | None) -> torch.optim.Optimizer:
    from transformers.optimization import Adafactor

    return Adafactor(trainable(model), lr=LR, scale_parameter=False, relative_step=False)


def _bnb_adamw(model: nn.Module, info: OptimizerInfo, emulate_bnb: EmulateBnb | None) -> torch.optim.Optimizer:
    """``bnb.optim.AdamW(optim_bits, is_paged)`` from the table row, with Trainer's 32-bit embedding override."""
    params = trainable(model)
    fp32_ids = {id(p) for p in embedding_weights(model)} if info.embedding_32bit_state else set()
    if emulate_bnb is not None:
        return emulate_bnb(params, info.state_bits, info.paged, fp32_ids)
    import bitsandbytes as bnb

    opt = bnb.optim.AdamW(params, lr=LR, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=0.0, optim_bits=info.state_bits,
                          is_paged=info.paged)
    if info.embedding_32bit_state:
        manager = bnb.optim.GlobalOptimManager.get_instance()
        for module in model.modules():
            if isinstance(module, nn.Embedding):
                manager.register_module_override(module, "weight", {"optim_bits": 32})
    return opt


Builder = Callable[[nn.Module, OptimizerInfo, EmulateBnb | None], torch.optim.Optimizer]

_BUILDERS: dict[tuple[Library, Family], Builder] = {
    (Library.TORCH, Family.ADAM): _torch_adamw,
    (Library.TORCH, Family.SGD): _torch_sgd,
    (Library.TRANSFORMERS, Family.ADAFACTOR): _adafactor,
    (Library.BITSANDBYTES, Family.ADAM): _bnb_adamw,
}
"""Implementation per (library, family) of the optimizer table (``planner.stack.optimizers``)."""


def build_optimizer(model: nn.Module, optim: Optim, *, emulate_bnb: EmulateBnb | None = None) -> torch.optim.Optimizer:
    """The optimizer Trainer would build for ``optim`` over ``model``'s trainable parameters.

    What to build (library, family, state bits, paging, the 32-bit embedding override) comes from the
    optimizer table row :func:`planner.stack.optimizers.optimizer_info`.

    Args:
        model: The (PEFT-wrapped) model.
        optim: Which optimizer.
        emulate_bnb: For the trace: a factory ``(params, optim_bits, is_paged, fp32_params)`` used
            instead of bitsandbytes (whose kernels cannot run on fake tensors).

    Raises:
        PlannerError: the table names a (library, family) the probes have no implementation for.
    """
    info = optimizer_info(optim)
    builder = _BUILDERS.get((info.library, info.family))
    if builder is None:
        raise PlannerError(f"the probes cannot build --optim {optim.value} ({info.library.value} {info.family.value})")
    return builder(model, info, emulate_bnb)


class EmulatedBnbAdamW(torch.optim.Optimizer):
    """State allocation of ``bnb.optim.AdamW`` (``Optimizer2State.init_state``) without its kernels.

    8-bit: ``state1``/``state2`` uint8 like the parameter plus ``absmax1``/``absmax2`` fp32 per 256
    elements, for parameters with at least 4096 elements (and not overridden to 32-bit); otherwise
    fp32 ``state1``/``state2``. Paged: states of parameters with at least 1e5 elements live in CUDA
    unified memory, outside torch's counters; ``on_paged(nbytes)`` is told about each and
    ``make_paged`` allocates them (the trace allocates them uncounted). The update itself is in
    place (no temporaries), so the step only touches the parameter.
    """

    def __init__(self, params: Iterable[nn.Parameter], optim_bits: int, is_paged: bool, fp32_ids: set[int],
                 make_paged: Callable[[Callable[[], torch.Tensor]], torch.Tensor] | None = None) -> None:
        super().__init__(list(params), {"lr": LR})
        self.optim_bits = optim_bits
        self.is_paged = is_paged
        self.fp32_ids = fp32_ids
        self.make_paged = make_paged
        self.paged_bytes = 0.0
        self.qmaps: list[torch.Tensor] = []

    def _buffer(self, p: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        def alloc() -> torch.Tensor:
            return torch.zeros_like(p, dtype=dtype)

        if self.is_paged and p.numel() >= BNB_MIN_PAGED_NUMEL:
            self.paged_bytes += float(p.numel() * dtype.itemsize)
            return self.make_paged(alloc) if self.make_paged is not None else alloc()
        return alloc()

    def _init_state(self, p: torch.Tensor) -> None:
        state = self.state[p]
        state["step"] = 0
        eight_bit = self.optim_bits == 8 and p.numel() >= BNB_MIN_8BIT_SIZE and id(p) not in self.fp32_ids
        if not eight_bit:
            state["state1"] = self._buffer(p, torch.float32)
            state["state2"] = self._buffer(p, torch.float32)
            return
        blocks = -(-p.numel() // BNB_BLOCKSIZE)
        if not self.qmaps:  # the shared 256-entry fp32 "dynamic" / "udynamic" maps, moved to the device once
            self.qmaps = [torch.zeros(256, dtype=torch.float32, device=p.device) for _ in range(2)]
        state["qmap1"], state["qmap2"] = self.qmaps
        state["state1"] = self._buffer(p, torch.uint8)
        state["state2"] = self._buffer(p, torch.uint8)
        state["absmax1"] = torch.zeros((blocks,), dtype=torch.float32, device=p.device)
        state["absmax2"] = torch.zeros((blocks,), dtype=torch.float32, device=p.device)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> None:  # noqa: D102
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p not in self.state or not self.state[p]:
                    self._init_state(p)
                self.state[p]["step"] += 1
                p.add_(p.grad, alpha=-group["lr"])  # in place, like the fused 8/32-bit kernels
