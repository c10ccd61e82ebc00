"""Memory-bound work of one micro-batch and one optimizer step, in DRAM bytes (coefficients in throughput.json).

Everything here is counted, not fitted: the bytes each eager op reads and writes (``Traffic``), times the
tensors' sizes from the memory model's context (:func:`planner.memory.context.build_context`), at the GPU's
effective bandwidth. Forward traffic is paid once, backward ``backward_factor`` times, and once more for the
recomputed forward under gradient checkpointing.
"""

from __future__ import annotations

from planner.memory.context import FP32_BYTES, Context, nf4_bytes_per_param
from planner.model.architecture import Linear
from planner.time.constants import Traffic
from planner.stack.optimizers import Family, Library, StateDtype
from planner.time.schemas import StepImpl


def _recompute(ctx: Context) -> float:
    return 1.0 if ctx.train.grad_ckpt else 0.0


def fused_kernels(ctx: Context, tr: Traffic) -> bool:
    """Whether the stack runs fused RMSNorm/RoPE/SwiGLU kernels (Liger, Unsloth: ``fused_kernel_stacks``)."""
    stack = ctx.stack
    return stack.framework in tr.fused_frameworks or any(lib in stack.versions for lib in tr.fused_libraries)


def _layer_forward_bytes_per_token(ctx: Context, tr: Traffic) -> float:
    """Norms, residual adds (scaled by the residual stream's element size), rotary, MLP activation; one layer.

    Eager ops by default; the fused kernels' counted bytes (``traffic.fused_kernels``) for Liger / Unsloth stacks.
    """
    cfg = ctx.config
    fused = tr.fused_kernels if fused_kernels(ctx, tr) else {}
    hidden = fused.get("layer_hidden_bytes", tr.layer_hidden_bytes)
    qkv = fused.get("layer_qkv_bytes", tr.layer_qkv_bytes)
    inter_bytes = fused.get("layer_intermediate_bytes", tr.layer_intermediate_bytes)
    kv = cfg.num_key_value_heads * cfg.head_dim
    q = cfg.num_attention_heads * cfg.head_dim
    inter = cfg.intermediate_size * (cfg.num_experts_per_tok if ctx.arch.expert_params else 1)
    act = inter_bytes if ctx.arch.gated_mlp else inter_bytes * 0.4
    stream = ctx.d.stream / 2.0
    return hidden * cfg.hidden_size * stream + qkv * (q + kv) + act * inter


def _lora_bytes_per_token(lin: Linear, ctx: Context, tr: Traffic, impl: StepImpl) -> tuple[float, float]:
    """(forward, backward) bytes per token of one adapted module's LoRA path (A, B, scaling, add, dropout, casts)."""
    fwd_in = tr.lora_in + (tr.dropout_in if ctx.dropout > 0 else 0.0)
    bwd_in = tr.lora_backward_in + (tr.dropout_in if ctx.dropout > 0 else 0.0)
    if not impl.autocast and ctx.d.trainable == FP32_BYTES:
        fwd_in += tr.fp32_cast_in
        bwd_in += tr.fp32_cast_in
    fwd = fwd_in * lin.in_features + tr.lora_out * lin.out_features
    bwd = bwd_in * lin.in_features + tr.lora_backward_out * lin.out_features
    if ctx.train.dora:
        fwd += tr.dora_out * lin.out_features
        bwd += tr.dora_out * lin.out_features * tr.backward_factor
    return fwd, bwd


def _adapter_bytes(ctx: Context, tr: Traffic, impl: StepImpl) -> float:
    """LoRA path, DoRA weight norms and MoE ParamWrapper merges of all layers, one micro-batch."""
    per_token = 0.0
    per_microbatch = 0.0
    forwards = 1.0 + _recompute(ctx)
    for lin in ctx.targets:
        if lin.experts > 1:
            # PEFT ParamWrapper: W + B@A over the whole expert stack every forward (read W, write the merged
            # copy, which the expert matmuls then read: counted there), and the merged gradient folded into A, B.
            per_microbatch += lin.experts * lin.weight_params * ctx.d.compute * (2.0 * forwards + 2.0)
            continue
        fwd, bwd = _lora_bytes_per_token(lin, ctx, tr, impl)
        per_token += fwd * forwards + bwd
        if ctx.train.dora:
            per_microbatch += tr.dora_weight_bytes * lin.weight_params * forwards
    return ctx.layers * (per_token * ctx.tokens + per_microbatch)


def memory_bytes(ctx: Context, tr: Traffic, impl: StepImpl) -> float:
    """Memory-bound bytes of one micro-batch (everything but GEMMs, dequantization and the optimizer step)."""
    passes = 1.0 + tr.backward_factor + _recompute(ctx)
    layers = ctx.layers * ctx.tokens * _layer_forward_bytes_per_token(ctx, tr) * passes
    loss = ctx.tokens * ctx.config.vocab_size * tr.loss_bytes_per_vocab[ctx.stack.loss.value]
    embedding = 0.0
    if ctx.full:  # dense embedding gradient: zero-filled, then index_add_ (read + write)
        embedding = 2.0 * ctx.arch.embed_params * ctx.d.trainable
    return layers + loss + embedding + _adapter_bytes(ctx, tr, impl)


def dequant_bytes(ctx: Context) -> float:
    """QLoRA: bitsandbytes dequantizes every NF4 weight to 16 bits before each matmul call.

    ``MatMul4Bit`` dequantizes in the forward, again in the backward (input gradient) and in the recomputed
    forward: per call it reads the packed weight and its absmax and writes the 16-bit copy (which the GEMM
    then reads, counted there). bitsandbytes v0.50.2 ``autograd/_functions.py`` ``MatMul4Bit``.
    """
    if not ctx.quantized_linears or ctx.train.quant_bits != 4:
        return 0.0
    weights = ctx.layers * sum(lin.weight_params for lin in ctx.arch.linears)
    calls = 2.0 + _recompute(ctx)
    return calls * weights * (nf4_bytes_per_param(ctx.train.double_quant) + ctx.d.compute)


def optimizer_bytes(ctx: Context, tr: Traffic, impl: StepImpl) -> float:
    """One optimizer step and ``clip_grad_norm_`` over the trainable parameters.

    Fused kernels: param read + write and gradient read (3x the trainable element size) plus the state traffic
    (``profiles/optimizers.json``; states in the parameter dtype move 2 x state tensors x that size).
    ``torch.optim.AdamW``'s default multi-tensor path adds its temporaries (``optimizer_extra_accesses``).
    """
    opt = ctx.optimizer
    tb = ctx.d.trainable
    in_param_dtype = opt.state_dtype is StateDtype.PARAM
    state_elem = tb if in_param_dtype else opt.state_bits / 8.0
    state = opt.state_tensors * 2.0 * state_elem if in_param_dtype else opt.state_bytes_moved_per_param
    extra = 0.0
    if opt.family is Family.ADAM and opt.library is Library.TORCH:
        extra = tr.optimizer_extra_accesses[impl.optimizer_impl.value] * state_elem
    per_param = 3.0 * tb + state + extra + tr.clip_accesses * tb
    return ctx.trainable_params * per_param
