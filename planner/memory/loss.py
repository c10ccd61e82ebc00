"""The lm_head output and the loss over it: one small strategy per loss path, chosen by the stack.

- ``full_logits_fp32`` (transformers >= 4.46 ``loss/loss_utils.py`` ``ForCausalLMLoss``): the model returns
  compute-dtype logits for every position; ``logits = logits.float()`` then ``cross_entropy`` =
  log_softmax (saves its fp32 output) + nll_loss. Backward holds the saved log_softmax output, its gradient
  and the input gradient, all fp32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from planner.memory.context import FP32_BYTES, Context
from planner.stack.stack import LossKind


@dataclass(frozen=True)
class LogitsMemory:
    forward_bytes: float
    """Alive at the end of the loss forward: compute-dtype logits, the fp32 copy, log_softmax output."""
    backward_bytes: float
    """Alive inside cross-entropy backward: saved log_softmax output, its gradient, the input gradient."""
    saved_weight_bytes: float
    """An autocast copy of a frozen fp32 lm_head saved for backward (QLoRA after kbit-prepare, LoRA with
    ``--fp32-master``)."""
    cached_block_bytes: float
    """Freed logits block that the caching allocator keeps but cannot reuse at the cross-entropy backward
    peak (it is smaller than the fp32 requests made there)."""


def _full_logits_fp32(ctx: Context) -> LogitsMemory:
    d, config = ctx.d, ctx.config
    n = ctx.tokens * config.vocab_size
    logits_b = d.compute if d.autocast else d.other_param
    upcast = FP32_BYTES if logits_b < FP32_BYTES else 0.0  # ``logits.float()`` copies only 16-bit logits
    forward = n * (logits_b + upcast + FP32_BYTES)
    if config.final_logit_softcapping:
        # Gemma 2: logits / cap -> tanh (saves its output) -> * cap: two more compute-dtype tensors.
        forward += 2 * n * logits_b
    saved_weight = 0.0
    if d.autocast and d.other_param > d.compute and not ctx.full:
        # The frozen fp32 lm_head is cast to bf16 by autocast; the cast is saved to compute the hidden-state
        # gradient (frozen params' casts are not cached).
        saved_weight = config.vocab_size * config.hidden_size * d.compute
    # c10/cuda/CUDACachingAllocator.cpp never returns freed blocks during a step, and a freed block serves only
    # requests that fit in it: the compute-dtype logits block (freed after the loss forward) is smaller than the
    # fp32 gradients allocated in cross-entropy backward, so it stays cached and unused.
    cached = n * d.compute if d.autocast else 0.0
    return LogitsMemory(forward, 3 * n * FP32_BYTES, saved_weight, cached)


LOSS_STRATEGIES: dict[LossKind, Callable[[Context], LogitsMemory]] = {
    LossKind.FULL_LOGITS_FP32: _full_logits_fp32,
}


def logits_memory(ctx: Context) -> LogitsMemory:
    """The loss path's memory for the stack's loss kind."""
    return LOSS_STRATEGIES[ctx.stack.loss](ctx)
