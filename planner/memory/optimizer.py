"""Optimizer state after the first step and the transient inside ``step()``, from the optimizer table.

The rules per optimizer (state tensors, their dtype, 8-bit and paged thresholds, Trainer's 32-bit
``nn.Embedding`` override, the step transient) are rows of ``profiles/optimizers.json``
(:mod:`planner.stack.optimizers`); the bitsandbytes constants are in ``profiles/runtime.json``.
Per-tensor rules need each trainable tensor's shape: :func:`trainable_tensors`.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.catalog import runtime_constants
from planner.memory.context import FP32_BYTES, Context
from planner.memory.states import trainable_params
from planner.model.params import stacked_rank
from planner.stack.optimizers import Family, Library, StateDtype, StepTransient


@dataclass(frozen=True)
class TrainableTensor:
    """One kind of trainable tensor: its shape, how many there are, and whether it is an ``nn.Embedding`` weight."""

    shape: tuple[int, ...]
    count: int
    embedding: bool = False

    @property
    def numel(self) -> int:
        n = 1
        for dim in self.shape:
            n *= dim
        return n


def _full_tensors(ctx: Context) -> list[TrainableTensor]:
    config, arch, layers = ctx.config, ctx.arch, ctx.layers
    h, i, e = config.hidden_size, config.intermediate_size, config.num_local_experts
    norm_tensors = 2 if arch.norm_has_bias else 1  # LayerNorm weight and bias
    tensors = [TrainableTensor((lin.out_features, lin.in_features), layers) for lin in arch.linears]
    tensors += [TrainableTensor((lin.out_features,), layers) for lin in arch.linears if lin.bias]
    tensors += [TrainableTensor((h,), layers * arch.norms_per_layer * norm_tensors)]
    if arch.expert_params:  # MixtralExperts gate_up_proj (E, 2i, h), down_proj (E, h, i); router (E, h)
        tensors += [TrainableTensor((e, 2 * i, h), layers), TrainableTensor((e, h, i), layers),
                    TrainableTensor((e, h), layers)]
    token_embed = config.vocab_size * h
    tensors += [TrainableTensor((config.vocab_size, h), 1, embedding=True), TrainableTensor((h,), norm_tensors)]
    if arch.embed_params > token_embed:  # GPT-2 learned positions (an nn.Embedding too)
        tensors += [TrainableTensor(((arch.embed_params - token_embed) // h, h), 1, embedding=True)]
    if arch.lm_head_params:
        tensors += [TrainableTensor((config.vocab_size, h), 1)]
    return tensors


def trainable_tensors(ctx: Context) -> list[TrainableTensor]:
    """Every trainable tensor by shape, for the optimizers' per-tensor rules (8-bit thresholds, factoring)."""
    if ctx.full:
        return _full_tensors(ctx)
    tensors = []
    for lin in ctx.targets:
        # transformers 4.x: one plain LoRA per expert's w1/w3/w2.
        if ctx.stack.per_expert_linears and lin.experts > 1:
            for one in lin.per_expert_linears():
                n = ctx.layers * lin.experts
                r = ctx.train.rank
                tensors += [TrainableTensor((r, one.in_features), n), TrainableTensor((one.out_features, r), n)]
                if ctx.train.dora:
                    tensors += [TrainableTensor((one.out_features,), n)]
            continue
        r = stacked_rank(lin, ctx.train.rank)
        tensors += [TrainableTensor((r, lin.in_features), ctx.layers), TrainableTensor((lin.out_features, r), ctx.layers)]
        if ctx.train.dora:
            tensors += [TrainableTensor((lin.out_features,), ctx.layers)]
    return tensors


@dataclass(frozen=True)
class OptimizerMemory:
    state_bytes: float
    """Persistent optimizer state in torch's allocator."""
    paged_bytes: float
    """Persistent state in CUDA managed memory (bitsandbytes paged optimizers): on the device, outside torch."""
    step_transient_bytes: float
    """Extra bytes alive only inside ``optimizer.step()``."""


def optimizer_memory(ctx: Context) -> OptimizerMemory:
    """Optimizer state after the first step, and the transient inside ``step()``."""
    info = ctx.optimizer
    if info.family is Family.SGD:
        return OptimizerMemory(0.0, 0.0, 0.0)  # momentum 0: no state
    if info.family is Family.ADAFACTOR:
        return _adafactor(ctx)
    if info.state_dtype is StateDtype.PARAM:
        # torch.optim.AdamW: exp_avg and exp_avg_sq = zeros_like(param); the fused step updates in place.
        state = info.state_tensors * trainable_params(ctx) * ctx.d.trainable
        transient = 0.0
        if info.library is Library.TORCH and ctx.stack.value("default_optimizer") == "adamw_torch_foreach":
            # transformers < 4.55 defaults to 'adamw_torch' (foreach on CUDA): torch/optim/adam.py
            # _multi_tensor_adam runs exp_avg_sq_sqrt = torch._foreach_sqrt(exp_avg_sqs), one state-sized copy.
            transient = trainable_params(ctx) * ctx.d.trainable
        return OptimizerMemory(state, 0.0, transient)
    return _bitsandbytes(ctx)


def _bitsandbytes(ctx: Context) -> OptimizerMemory:
    """bitsandbytes ``Optimizer2State``: 8-bit state with an fp32 absmax per block, or fp32; paged or not."""
    info = ctx.optimizer
    consts = runtime_constants()["bnb_8bit_optimizer"]
    block, min_8bit = float(consts["blocksize"]), consts["min_8bit_size"]
    # Optimizer8bit.get_state_buffer: only tensors of at least 1e5 elements get paged buffers.
    paged_min = consts["paged_min_numel"] if info.paged else None
    state = paged = 0.0
    for t in trainable_tensors(ctx):
        embedding_32bit = info.embedding_32bit_state and t.embedding
        if info.eight_bit and t.numel >= min_8bit and not embedding_32bit:
            per_param = info.state_tensors * (1.0 + FP32_BYTES / block)  # uint8 state + fp32 absmax per block
        else:
            per_param = info.state_tensors * FP32_BYTES
        if paged_min is not None and t.numel >= paged_min:
            paged += t.numel * t.count * per_param
        else:
            state += t.numel * t.count * per_param
    return OptimizerMemory(state, paged, 0.0)


def _adafactor(ctx: Context) -> OptimizerMemory:
    """transformers.optimization.Adafactor (beta1=None): factored fp32 second moment.

    Matrices keep a row and a column vector (``exp_avg_sq_row``/``_col``), vectors a full
    ``exp_avg_sq``; all fp32 because ``step()`` upcasts the gradient first. Inside ``step()`` each
    16-bit parameter gets fp32 copies of its gradient and data, ``grad**2 + eps`` and the update
    (4 x 4 bytes x numel) one tensor at a time, so the transient is set by the largest tensor.
    """
    state = 0.0
    largest = 0
    for t in trainable_tensors(ctx):
        largest = max(largest, t.numel)
        if len(t.shape) >= 2:  # Adafactor._get_options: factored when ndim >= 2
            rows = t.numel // t.shape[-1]  # exp_avg_sq_row: shape[:-1]
            cols = t.numel // t.shape[-2]  # exp_avg_sq_col: shape[:-2] + shape[-1:]
            state += t.count * (rows + cols) * FP32_BYTES
        else:
            state += t.count * t.numel * FP32_BYTES
    transient = 0.0
    if ctx.optimizer.step_transient is StepTransient.ADAFACTOR_FP32_COPIES:
        # fp32 grad, fp32 param (copies only for 16-bit params), grad**2 + eps and the update together.
        copies = 4.0 if ctx.d.trainable < FP32_BYTES else 2.0
        transient = copies * FP32_BYTES * largest
    return OptimizerMemory(state, 0.0, transient)
