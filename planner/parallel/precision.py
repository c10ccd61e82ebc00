"""FSDP mixed precision as accelerate runs it: what the shards are stored in vs what the step computes in.

``accelerate launch`` with ``mixed_precision: bf16`` (what the Trainer's ``bf16=True`` and loraplan's own
``accelerate.yaml`` set) gives FSDP a ``MixedPrecision(param_dtype=bf16, reduce_dtype=bf16)`` policy
(accelerate v1.16.0 ``state.py`` -> ``FullyShardedDataParallelPlugin.set_mixed_precision``): each unit is
all-gathered and computed in bf16, so activations, logits and the gathered units are those of a pure bf16
step, while the shards keep their storage dtype:

- trainable parameters: fp32 where the stack upcasts them (behaviour ``fsdp_trainable_dtype``: accelerate >=
  0.30 ``Accelerator.prepare_model`` / ``fsdp2_prepare_model``), so their shards, their sharded gradients
  (FSDP casts the reduced gradient back to the parameter's dtype) and the optimizer state are fp32;
- frozen parameters: the loaded dtype (fp32 with ``--fp32-master``: a model loaded without ``dtype=``).

So a mixed-precision FSDP step is two contexts: the compute one (``fp32_master`` off: no autocast weight
copies, bf16 residual stream) for everything the step allocates, and the storage one for the sharded
state. QLoRA keeps its own dtypes (the Trainer sets ``param_dtype`` to ``bnb_4bit_quant_storage``).
"""

from __future__ import annotations

from dataclasses import replace

from planner.memory.context import FP32_BYTES, Context, build_context
from planner.parallel.spec import ParallelSpec
from planner.specs import DType, Method, ModelConfig, TrainSpec
from planner.stack.stack import FsdpTrainableDtype


def uses_fsdp_mixed_precision(train: TrainSpec) -> bool:
    """Whether ``accelerate launch`` gives FSDP its ``MixedPrecision`` policy for ``train``: bf16/fp16 training;
    QLoRA instead gets the policy the Trainer sets from ``bnb_4bit_quant_storage``."""
    return train.dtype is not DType.FP32 and train.method is not Method.QLORA


def mixed_precision_contexts(config: ModelConfig, ctx: Context,
                             parallel: ParallelSpec) -> tuple[Context, Context | None]:
    """``(compute, storage)`` contexts of ``ctx``'s step under ``parallel``; ``storage`` is None when the shards
    hold what the step computes with (no FSDP, no mixed precision, QLoRA, or nothing in fp32)."""
    train = ctx.train
    if not parallel.strategy.is_fsdp or not uses_fsdp_mixed_precision(train):
        return ctx, None
    upcast = ctx.stack.fsdp_trainable_dtype is FsdpTrainableDtype.FP32
    if not train.fp32_master and not (upcast and ctx.d.trainable < FP32_BYTES):
        return ctx, None
    compute = build_context(config, train.model_copy(update={"fp32_master": False}), ctx.stack) \
        if train.fp32_master else ctx
    if ctx.full:
        # Every parameter is trainable: all fp32 if upcast, else as loaded (fp32 only with --fp32-master).
        storage = ctx if train.fp32_master else build_context(
            config, train.model_copy(update={"fp32_master": True}), ctx.stack)
    else:
        storage = replace(ctx, d=replace(ctx.d, trainable=FP32_BYTES)) if upcast else ctx
    return compute, storage


def upcast_note(compute: Context, storage: Context) -> str | None:
    """The warning naming accelerate's fp32 upcast when it is what makes the trainable shards fp32."""
    upcast = compute.stack.fsdp_trainable_dtype is FsdpTrainableDtype.FP32
    if not upcast or compute.d.trainable >= FP32_BYTES or storage.d.trainable < FP32_BYTES:
        return None
    return ("FSDP mixed precision via accelerate (>= 0.30) keeps the trainable parameters in fp32: their shards, "
            "gradients and optimizer state are fp32 while the step computes in bf16 (mixed_precision: 'no' with "
            "a bf16-loaded model trains in pure bf16)")
