"""The lm_head output and the loss over it: one small strategy per loss path, chosen by the stack.

- ``full_logits_fp32`` (transformers >= 4.46 ``loss/loss_utils.py`` ``ForCausalLMLoss``): the model returns
  compute-dtype logits for every position; ``logits = logits.float()`` then ``cross_entropy`` =
  log_softmax (saves its fp32 output) + nll_loss. Backward holds the saved log_softmax output, its gradient
  and the input gradient, all fp32.
- ``full_logits_upcast_contiguous`` (transformers < 4.46 ``LlamaForCausalLM.forward``: ``logits =
  logits.float()`` in the model, then ``logits[..., :-1, :].contiguous()``): the 16-bit logits are freed by the
  upcast, so fp32 logits, the fp32 shifted copy and the log_softmax output are alive at the forward peak.
- ``full_logits_contiguous`` (transformers 4.46-4.48 ``loss/loss_utils.py ForCausalLMLoss``; TRL 0.15-1.7's
  token-accuracy metric): the full path plus ``logits[..., :-1, :].contiguous()``, a second fp32 copy, while
  the model still holds its 16-bit logits.
- ``chunked_256`` (TRL 1.8-1.12 ``sft_trainer.py`` ``_chunked_cross_entropy_loss``): 256 tokens at a time,
  ``h.float() @ w.float().t()`` then log_softmax under checkpoint: one chunk's fp32 logits and log-probs, plus
  the fp32 copy of the lm_head weight, alive per chunk; backward recomputes a chunk and holds its gradients.
- ``chunked_8`` (torchtune ``CEWithChunkedOutputLoss``): the compute-dtype logits exist in full (8 chunks of
  the output), each chunk upcast and cross-entropied; only one chunk's fp32 tensors are alive at a time.
- ``chunked_head_128`` (litgpt ``finetune``: ``model(input_ids, lm_head_chunk_size=128)`` then
  ``utils.chunked_cross_entropy``): the lm_head runs on 128-token slices in the compute dtype and every
  chunk's logits stay referenced by the training loop until the step ends; each chunk's ``cross_entropy``
  runs in that dtype (no ``.float()``) and saves its log_softmax output. Backward turns the saved
  log-probs into logit gradients chunk by chunk (autograd runs every chunk's loss backward before the
  lm_head matmuls, which were recorded first).
- ``fused_head`` (TRL >= 1.13 ``kernels/chunked_logprob.py``; Liger fused linear CE; CCE; Unsloth): fp32
  tiles of at most 4096 tokens x 32768 vocabulary entries; the full logits never exist.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from planner.memory.context import FP32_BYTES, Context
from planner.stack.stack import LossKind, loss_constants


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
    if d.autocast and d.embedding > d.compute and not ctx.full:
        # The frozen fp32 lm_head is cast to bf16 by autocast; the cast is saved to compute the hidden-state
        # gradient (frozen params' casts are not cached).
        saved_weight = config.vocab_size * config.hidden_size * d.compute
    # c10/cuda/CUDACachingAllocator.cpp never returns freed blocks during a step, and a freed block serves only
    # requests that fit in it: the compute-dtype logits block (freed after the loss forward) is smaller than the
    # fp32 gradients allocated in cross-entropy backward, so it stays cached and unused.
    cached = n * d.compute if d.autocast else 0.0
    return LogitsMemory(forward, 3 * n * FP32_BYTES, saved_weight, cached)


def _full_logits_contiguous(ctx: Context) -> LogitsMemory:
    full = _full_logits_fp32(ctx)
    n = ctx.tokens * ctx.config.vocab_size
    # shift_logits = logits[..., :-1, :].contiguous(): one more fp32 (b, s-1, vocab) tensor in the forward.
    return LogitsMemory(full.forward_bytes + n * FP32_BYTES, full.backward_bytes, full.saved_weight_bytes,
                        full.cached_block_bytes)


def _full_logits_upcast_contiguous(ctx: Context) -> LogitsMemory:
    full = _full_logits_fp32(ctx)
    n = ctx.tokens * ctx.config.vocab_size
    # The model's own logits.float() rebinds ``logits``: the 16-bit lm_head output dies at once, the fp32
    # logits, their shifted .contiguous() copy and the log_softmax output are alive (4 + 4 + 4 bytes).
    forward = n * 3 * FP32_BYTES
    if ctx.config.final_logit_softcapping:
        forward += 2 * n * (ctx.d.compute if ctx.d.autocast else ctx.d.other_param)
    return LogitsMemory(forward, full.backward_bytes, full.saved_weight_bytes, full.cached_block_bytes)


def _chunk_tokens(ctx: Context, chunk: float) -> float:
    return min(ctx.tokens, chunk)


def _chunked_256(ctx: Context) -> LogitsMemory:
    config = ctx.config
    n = _chunk_tokens(ctx, float(loss_constants()["trl_chunk_tokens"])) * config.vocab_size
    weight_fp32 = config.vocab_size * config.hidden_size * FP32_BYTES  # w.float() inside each chunk
    # Forward (no grad inside the checkpoint): one chunk's fp32 logits + log-probs and the fp32 weight copy.
    forward = weight_fp32 + 2 * n * FP32_BYTES
    # Backward: the recomputed chunk (logits, log-probs), their gradients and the weight copy.
    backward = weight_fp32 + 4 * n * FP32_BYTES
    return LogitsMemory(forward, backward, 0.0, 0.0)


def _chunked_8(ctx: Context) -> LogitsMemory:
    d, config = ctx.d, ctx.config
    n = ctx.tokens * config.vocab_size
    logits_b = d.compute if d.autocast else d.other_param
    chunk = n / float(loss_constants()["torchtune_output_chunks"])
    # The compute-dtype logits stay (their chunks are views); each chunk's .float() and log_softmax output.
    forward = n * logits_b + chunk * 2 * FP32_BYTES
    return LogitsMemory(forward, n * logits_b + 3 * chunk * FP32_BYTES, 0.0, 0.0)


def _chunked_head_128(ctx: Context) -> LogitsMemory:
    d, config = ctx.d, ctx.config
    n = ctx.tokens * config.vocab_size
    logits_b = d.compute if d.autocast else d.other_param
    chunk = _chunk_tokens(ctx, float(loss_constants()["litgpt_lm_head_chunk_tokens"])) * config.vocab_size
    # Forward: every chunk's logits and its saved log-probs, both compute dtype.
    forward = 2 * n * logits_b
    # Backward: the logits, the log-probs / logit gradients (one replaces the other per chunk), and one
    # chunk's nll_loss gradient and log_softmax input gradient in flight.
    backward = 2 * n * logits_b + 2 * chunk * logits_b
    return LogitsMemory(forward, backward, 0.0, 0.0)


def _fused_head(ctx: Context) -> LogitsMemory:
    k = loss_constants()
    tile = (_chunk_tokens(ctx, float(k["fused_tile_tokens"])) * min(ctx.config.vocab_size, float(k["fused_tile_vocab"])))
    # Forward: one fp32 projection tile; backward: the recomputed tile and its gradient.
    return LogitsMemory(tile * FP32_BYTES, 2 * tile * FP32_BYTES, 0.0, 0.0)


LOSS_STRATEGIES: dict[LossKind, Callable[[Context], LogitsMemory]] = {
    LossKind.FULL_LOGITS_FP32: _full_logits_fp32,
    LossKind.FULL_LOGITS_CONTIGUOUS: _full_logits_contiguous,
    LossKind.FULL_LOGITS_UPCAST_CONTIGUOUS: _full_logits_upcast_contiguous,
    LossKind.CHUNKED_256: _chunked_256,
    LossKind.CHUNKED_8: _chunked_8,
    LossKind.CHUNKED_HEAD_128: _chunked_head_128,
    LossKind.FUSED_HEAD: _fused_head,
}


def logits_memory(ctx: Context) -> LogitsMemory:
    """The loss path's memory for the stack's loss kind."""
    return LOSS_STRATEGIES[ctx.stack.loss](ctx)
