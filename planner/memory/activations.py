"""Saved-for-backward activations of one step and the transients around them.

Per decoder layer this walks the forward of the transformers module under CUDA autocast and sums
what autograd keeps. Family differences are declarative fields of
:class:`planner.model.architecture.Architecture` (norm kind, MLP activation, shared norm, extra norms,
rotary tables, SDPA math fallback), not ``model_type`` branches. Bytes are for the whole micro-batch.

Sources:
- [PEFT-fwd]   peft v0.21.2 peft/tuners/lora/layer.py ``Linear.forward``: ``x = self._cast_input_dtype(x, lora_A.weight.dtype)``
               then ``lora_B(lora_A(dropout(x))) * scaling`` added to the base result.
- [DORA]       peft/tuners/lora/dora.py ``DoraLinearLayer.forward``: builds ``lora_B(lora_A(eye(in)))`` (fp32)
               and ``W + scaling * lora_weight`` every forward, and saves the base and LoRA results.
- [BNB-4bit]   bitsandbytes v0.50.2 bitsandbytes/nn/modules.py ``Linear4bit.forward`` casts x to the compute dtype and
               the output back to x's dtype; ``MatMul4Bit`` saves only the packed weight from v0.43.2, also its input
               before (stack ``matmul4bit_saves``; v0.43.1 ``autograd/_functions.py`` ``ctx.tensors = (A, B)``).
- [BNB-int8]   bitsandbytes/autograd/_functions.py ``MatMul8bitLt`` saves its 16-bit input when a gradient is needed.
- [AUTOGRAD]   torch autograd saves a matmul input only when the other operand needs a gradient (a frozen
               weight's input is not saved) - checked in tests/test_memory.py with saved_tensors_hooks.
- [AUTOCAST]   CUDA autocast op lists (torch.amp docs): linear/matmul/SDPA run in bf16; layer_norm, softmax,
               log_softmax, pow run in fp32.
- [SDPA]       torch flash / memory-efficient SDPA backward saves q, k, v, out and fp32 logsumexp (b, heads, s);
               transformers' sdpa_attention_forward uses ``enable_gqa`` without repeating k/v when there is no
               mask (stack ``sdpa_kv``; integrations/sdpa_attention.py ``use_gqa_in_sdpa``).
- [FA-bwd]     flash-attention backward allocates an fp32 ``dq_accum`` (b, s, heads, head_dim)
               (aten/src/ATen/native/transformers/cuda/flash_attn/flash_api.cpp ``mha_bwd``).
- [CKPT]       torch.utils.checkpoint non-reentrant (stack ``checkpointing``): a layer keeps only its input.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.memory.context import FP32_BYTES, INDEX_BYTES, MASK_BYTES, Context
from planner.model.architecture import Block, Linear, MlpActivation
from planner.specs import Attn
from planner.stack.stack import CheckpointKind, checkpoint_constants


@dataclass(frozen=True)
class Activations:
    """Saved-for-backward bytes and the transients around them, for the whole micro-batch."""

    per_layer_bytes: float
    """Saved tensors of one decoder layer (no checkpointing)."""
    checkpoint_bytes: float
    """With checkpointing: the saved input of one decoder layer."""
    outside_layers_bytes: float
    """Saved outside the decoder layers (final norm, token ids, rotary tables)."""
    layer_backward_transient_bytes: float
    """Gradients in flight while one layer runs backward."""
    forward_transient_bytes: float
    """Largest short-lived tensor of a layer's forward (eager attention scores, DoRA's weight)."""
    offloaded_layers: int = 0
    """Layers whose checkpointed input is in host memory, not on the GPU (Unsloth's checkpointer)."""

    def layers_saved(self, layers: int, grad_ckpt: bool) -> float:
        """Saved on the GPU by all decoder layers: their inputs with checkpointing (less the offloaded ones),
        everything without."""
        if grad_ckpt:
            return (layers - self.offloaded_layers) * self.checkpoint_bytes
        return layers * self.per_layer_bytes

    @property
    def host_checkpoint_bytes(self) -> float:
        """The offloaded checkpointed inputs, in (pinned) host memory."""
        return self.offloaded_layers * self.checkpoint_bytes


def activations(ctx: Context) -> Activations:
    """Saved activations and transients of one training step for ``ctx``."""
    tokens = ctx.tokens
    per_token = _attention_block_saved(ctx) + _mlp_block_saved(ctx)
    per_layer = tokens * per_token + _moe_adapted_saved_per_layer(ctx)
    checkpoint = checkpoint_input_bytes(ctx)
    return Activations(
        per_layer_bytes=per_layer,
        checkpoint_bytes=checkpoint,
        offloaded_layers=_offloaded_layers(ctx, checkpoint),
        outside_layers_bytes=_outside_layers_saved(ctx),
        layer_backward_transient_bytes=_layer_backward_transient(ctx),
        forward_transient_bytes=_forward_transient(ctx),
    )


# --------------------------------------------------------------------------- pieces of a layer


def _norm_saved(ctx: Context) -> tuple[float, float]:
    """(saved bytes/token, output bytes/element) of one norm."""
    h, d = float(ctx.config.hidden_size), ctx.d
    if ctx.arch.norm_has_bias:
        # F.layer_norm runs in fp32 under CUDA autocast [AUTOCAST]: saves the fp32 input plus mean/rstd.
        saved = h * FP32_BYTES + 2 * FP32_BYTES
        out = FP32_BYTES if d.autocast else d.stream
    else:
        # LlamaRMSNorm: hidden.to(fp32) is saved by pow(2) and the mul by rsqrt (one tensor), plus the fp32
        # rsqrt per token; weight * x.to(input_dtype) saves nothing for a frozen weight.
        saved = h * FP32_BYTES + FP32_BYTES
        out = d.stream
    if ctx.full:
        saved += h * out  # trainable norm weight: the mul also saves the normalized input
    return saved, out


def _lora_saved_per_token(ctx: Context, lin: Linear) -> float:
    """Bytes per token a LoRA-wrapped module saves beyond its frozen base [PEFT-fwd].

    ``x.to(fp32)`` then ``dropout`` (saves a bool mask when p > 0) then ``lora_A`` under autocast,
    which saves its 16-bit-cast input; ``lora_B`` saves ``lora_A``'s output.
    """
    d = ctx.d
    in_b = d.compute if d.autocast else FP32_BYTES
    mask = MASK_BYTES if ctx.dropout > 0 else 0.0
    saved = lin.in_features * (in_b + mask) + ctx.train.rank * in_b
    if ctx.train.dora:
        # [DORA]: (m / ||W + dW|| - 1) * base_result + (m / ||.||) * lora_result saves both results.
        saved += 2 * lin.out_features * d.compute
    return saved


def _linear_out_bytes(ctx: Context, in_bytes: float) -> float:
    """Element size of a linear layer's output."""
    if ctx.quantized_linears:
        return in_bytes  # [BNB-4bit] output cast back to the input dtype
    return ctx.d.compute if ctx.d.autocast else ctx.d.other_param


def _linears_saved(ctx: Context, group: list[Linear], in_bytes: float) -> float:
    """Saved bytes/token for linears that read the same input tensor."""
    d = ctx.d
    saved = sum(_lora_saved_per_token(ctx, lin) for lin in group if ctx.adapted(lin))
    if ctx.qlora and ctx.arch.bnb_quantizable and ctx.train.quant_bits == 8:
        saved += group[0].in_features * d.compute  # [BNB-int8] MatMul8bitLt keeps its (shared) 16-bit input
    if ctx.matmul4bit_saves_input:
        # [BNB-4bit] bitsandbytes < 0.43.2: MatMul4Bit keeps its input A, which Linear4bit.forward casts to the
        # compute dtype: the shared 16-bit tensor itself, or one fresh cast per linear when the stream is fp32.
        copies = 1 if in_bytes == d.compute else len(group)
        saved += copies * group[0].in_features * d.compute
    if ctx.full:
        lin_in = d.compute if d.autocast else in_bytes
        # [AUTOGRAD] a trainable weight needs its input: one shared tensor when no cast is needed, else one
        # autocast copy per linear (casts of non-leaf tensors are not cached).
        copies = 1 if lin_in == in_bytes else len(group)
        saved += copies * group[0].in_features * lin_in
    return saved


def _attention_block_saved(ctx: Context) -> float:
    """Saved bytes/token of the attention block: its norm, q/k/v projections, attention, output projection."""
    config, d = ctx.config, ctx.d
    c, s = d.compute, float(ctx.train.seq_len)
    heads = float(config.num_attention_heads)
    q_dim = heads * config.head_dim
    kv_dim = float(config.num_key_value_heads * config.head_dim)
    attn_lins = [lin for lin in ctx.arch.linears if lin.block is Block.ATTN]
    qkv, out_proj = attn_lins[:-1], attn_lins[-1]
    n1_saved, n1_out = _norm_saved(ctx)
    per_token = n1_saved + _linears_saved(ctx, qkv, n1_out)
    qkv_b = c if d.autocast else _linear_out_bytes(ctx, n1_out)  # SDPA inputs are cast to the compute dtype
    if ctx.train.attn is Attn.EAGER:
        # eager_attention_forward: repeat_kv copies k/v to every head; matmul saves q and k; softmax (fp32)
        # saves its output; the bf16 copy of the probabilities and v are saved by the second matmul.
        per_token += qkv_b * (q_dim + 2 * q_dim) + heads * s * (FP32_BYTES + c)
        if ctx.config.attn_logit_softcapping:
            per_token += heads * s * c  # Gemma 2: cap * tanh(scores / cap), tanh saves its output
    elif ctx.sdpa_math:
        # SDPA's math kernel (aten _scaled_dot_product_attention_math) upcasts 16-bit q, k, v to fp32 and
        # saves the fp32 scaled q, k, v and softmax probabilities (b, heads, s, s); no logsumexp.
        per_token += FP32_BYTES * (q_dim + 2 * kv_dim) + heads * s * FP32_BYTES
    else:
        # transformers < 4.54 (sdpa_kv = repeat_kv) repeats k/v to every head before SDPA, which saves the copies.
        kv_saved = q_dim if ctx.sdpa_repeats_kv else kv_dim
        per_token += qkv_b * (q_dim + 2 * kv_saved)  # q, k, v [SDPA]
        per_token += c * q_dim + heads * FP32_BYTES  # out + logsumexp [SDPA]
    return per_token + _linears_saved(ctx, [out_proj], c)


def _mlp_block_saved(ctx: Context) -> float:
    """Saved bytes/token of the MLP block (dense or MoE), its norm(s) included."""
    arch = ctx.arch
    if arch.mlp_shares_attn_norm:
        n2_out = _norm_saved(ctx)[1]
        per_token = 0.0
    else:
        n2_saved, n2_out = _norm_saved(ctx)
        per_token = n2_saved
    if arch.expert_params:
        return per_token + _moe_saved_per_token(ctx, n2_out) + _moe_adapted_saved_per_token(ctx)
    act_b = _linear_out_bytes(ctx, n2_out)  # MLP intermediates (up/gate outputs)
    mlp_lins = [lin for lin in arch.linears if lin.block is Block.MLP]
    up_group, down = mlp_lins[:-1], mlp_lins[-1]
    per_token += _linears_saved(ctx, up_group, n2_out)
    inter = float(ctx.config.intermediate_size)
    if arch.mlp_activation is MlpActivation.SWIGLU:
        per_token += 3 * inter * act_b  # act_fn(gate) saves gate; act * up saves act(gate) and up
    elif arch.mlp_activation is MlpActivation.GELU_TANH_PYTHON:
        # NewGELUActivation: pow saves x, tanh saves its output, the product saves 0.5*x and (1 + tanh). Under
        # CUDA autocast pow runs in fp32 [AUTOCAST], so x's saved copy, tanh's output and (1 + tanh) are fp32.
        per_token += inter * (3 * FP32_BYTES + act_b) if ctx.d.autocast else 4 * inter * act_b
    else:
        per_token += inter * act_b  # F.gelu saves its input
    per_token += _linears_saved(ctx, [down], act_b)
    h = float(ctx.config.hidden_size)
    return per_token + arch.extra_rmsnorms_per_layer * (h * FP32_BYTES + FP32_BYTES)


# --------------------------------------------------------------------------- MoE


def _moe_compute_bytes(ctx: Context) -> float:
    return ctx.d.compute if ctx.d.autocast else ctx.d.other_param


def _moe_saved_per_token(ctx: Context, in_bytes: float) -> float:
    """Mixtral sparse MoE block (modeling_mixtral.py, transformers 5), per token.

    Router: F.linear -> softmax(float) saves the fp32 probs; topk indices. Experts loop: for each routed
    (token, expert) pair, gate_up output (2i, kept whole because both chunks are saved), the activation
    output (i), the down output (h) saved by the routing-weight multiply, the weighted output (h) saved by
    ``index_add_``; indices. Traced (transformers 5.24 and, per-expert layout, 4.44.2).
    """
    config = ctx.config
    k, e = float(config.num_experts_per_tok), float(config.num_local_experts)
    i, h = float(config.intermediate_size), float(config.hidden_size)
    c = _moe_compute_bytes(ctx)
    router = e * (FP32_BYTES + c) + k * (INDEX_BYTES + FP32_BYTES)
    # 4-bit per-expert linears (transformers 4.x) return their input's dtype [BNB-4bit] (fp32 after kbit-prepare's
    # fp32 norms), so the expert intermediates and outputs are in that dtype, not the compute dtype.
    out_b = in_bytes if ctx.experts_quantized else c
    # index_add_(0, token_idx, weighted) saves its source too (torch tools/autograd/derivatives.yaml index_add:
    # ``source.dim() > 0 ? grad.index_select(dim, index).expand_as(source) : ...``): one more h per pair.
    experts = k * (out_b * (2 * i + i + h + h) + 3 * INDEX_BYTES)
    return router + experts


def _moe_adapted(ctx: Context) -> tuple[float, float]:
    """(bytes per layer, bytes per token) that MoE expert weights add to the saved tensors.

    - LoRA on an expert tensor (PEFT ``ParamWrapper`` with ``_LoraFactorsProxy``, peft/tuners/lora/layer.py):
      each forward materializes ``baddbmm(W, B, A)``, the full merged (E, out, in) tensor in W's dtype, cached by
      ``parametrize.cached()``; autograd keeps it and, since the weight now needs a gradient, the expert inputs.
    - A frozen expert tensor that is not in the compute dtype (QLoRA: fp32 after kbit-prepare; experts are not
      quantized in the stack's ``moe_experts`` layout) is cast per expert by autocast, and the cast is saved.
    """
    config, d = ctx.config, ctx.d
    e, k = float(config.num_local_experts), float(config.num_experts_per_tok)
    c = _moe_compute_bytes(ctx)
    # Quantized per-expert linears (transformers 4.x) are dequantized to the compute dtype: no autocast copy.
    cast = d.autocast and d.other_param != d.compute and not ctx.experts_quantized
    per_layer = per_token = 0.0
    for p in ctx.arch.param_targets:
        if p.experts == 1:
            continue
        numel = e * p.in_features * p.out_features
        if ctx.stack.per_expert_linears:
            # transformers 4.x: a plain PEFT LoRA Linear on each expert's w1/w3/w2 saves what a dense LoRA
            # module saves, for each of the k (token, expert) pairs of a token; nothing is merged. A frozen
            # 16-bit-cast expert weight (fp32 base under autocast) is saved by its matmul, as above.
            if ctx.adapted(p):
                per_token += k * sum(_lora_saved_per_token(ctx, one) for one in p.per_expert_linears())
            if cast:
                per_layer += numel * c
            continue
        if ctx.adapted(p):
            per_layer += numel * d.other_param + (numel * c if cast else 0.0)
            per_token += k * p.in_features * c
        elif cast:
            per_layer += numel * c
    return per_layer, per_token


def _moe_adapted_saved_per_layer(ctx: Context) -> float:
    return _moe_adapted(ctx)[0] if ctx.arch.expert_params else 0.0


def _moe_adapted_saved_per_token(ctx: Context) -> float:
    return _moe_adapted(ctx)[1]


# --------------------------------------------------------------------------- outside the layers, transients


def _outside_layers_saved(ctx: Context) -> float:
    """Final norm; token ids and labels (+ the shifted label copy in ForCausalLMLoss); rotary cos/sin shared by
    every layer (b=1 x s x head_dim each, stream dtype); full fine-tuning: the lm_head input for its gradient."""
    config, d, tokens = ctx.config, ctx.d, ctx.tokens
    final_saved, final_out = _norm_saved(ctx)
    outside = tokens * final_saved + 3 * tokens * INDEX_BYTES
    if ctx.arch.rotary_tables:
        outside += 2 * float(ctx.train.seq_len) * config.head_dim * d.stream
    if ctx.full:
        outside += tokens * config.hidden_size * (d.compute if d.autocast else final_out)
    return outside


def _layer_backward_transient(ctx: Context) -> float:
    """Backward of one layer: the incoming residual gradient and the branch gradient (stream dtype), plus the
    larger of the MLP's three intermediate gradients and attention's dq/dk/dv with the fp32 dq accumulator
    [FA-bwd]."""
    config, d = ctx.config, ctx.d
    h = float(config.hidden_size)
    q_dim = float(config.num_attention_heads * config.head_dim)
    kv_dim = float(config.num_key_value_heads * config.head_dim)
    ffn = float(config.intermediate_size)
    if ctx.arch.expert_params:
        ffn *= config.num_experts_per_tok
    act_b = _linear_out_bytes(ctx, _norm_saved(ctx)[1])
    mlp_bwd = 3 * ffn * act_b
    attn_bwd = d.compute * (q_dim + 2 * (q_dim if ctx.sdpa_repeats_kv else kv_dim)) + FP32_BYTES * q_dim
    return ctx.tokens * (2 * h * d.stream + max(mlp_bwd, attn_bwd))


def checkpoint_input_bytes(ctx: Context) -> float:
    """One decoder layer's checkpointed input, the whole micro-batch's hidden states [CKPT]."""
    return ctx.tokens * ctx.config.hidden_size * ctx.d.stream


def host_checkpoint_bytes(ctx: Context) -> float:
    """The checkpointed inputs Unsloth's checkpointer offloads to pinned host memory (0 elsewhere), without
    computing the rest of :func:`activations` (the estimate's warnings ask it on every estimate)."""
    one = checkpoint_input_bytes(ctx)
    return _offloaded_layers(ctx, one) * one


def _offloaded_layers(ctx: Context, checkpoint_bytes: float) -> int:
    """Layers whose checkpointed input Unsloth's checkpointer keeps in pinned host memory (stack
    ``checkpointing`` offloaded): all but the one persistent GPU buffer the input is reloaded into for the
    layer's backward; inputs of at most ``unsloth_offload_min_bytes`` are not offloaded."""
    if not ctx.train.grad_ckpt or ctx.stack.checkpointing is not CheckpointKind.OFFLOADED:
        return 0
    if checkpoint_bytes <= checkpoint_constants()["unsloth_offload_min_bytes"]:
        return 0
    return ctx.layers - 1


def mlp_down_saved_bytes(ctx: Context) -> float:
    """Saved bytes of a dense MLP's down projection (its LoRA inputs, bitsandbytes < 0.43.2's kept input), at
    most two MLP intermediate gradients' worth (whole micro-batch).

    Backward frees them in the down projection's backward, before the gate/up projections run theirs: the
    moment the three MLP intermediate gradients are in flight and a 4-bit gate/up weight is dequantized
    (traced: tests/test_trace_trl.py, QLoRA with checkpointing)."""
    if ctx.arch.expert_params:
        return 0.0
    mlp_lins = [lin for lin in ctx.arch.linears if lin.block is Block.MLP]
    act_b = _linear_out_bytes(ctx, _norm_saved(ctx)[1])
    down_saved = _linears_saved(ctx, [mlp_lins[-1]], act_b)
    return ctx.tokens * min(down_saved, 2 * float(ctx.config.intermediate_size) * act_b)


def _forward_transient(ctx: Context) -> float:
    """The largest short-lived tensor(s) of one layer's forward."""
    c = ctx.d.compute
    fwd = 0.0
    if ctx.train.dora and ctx.targets:
        # [DORA]: eye(in) and lora_B(lora_A(eye)) in fp32, then W + scaling * dW in the compute dtype.
        fwd = max(
            lin.in_features * lin.in_features * FP32_BYTES + lin.in_features * lin.out_features * (FP32_BYTES + 2 * c)
            for lin in ctx.targets
        )
    if ctx.train.attn is Attn.EAGER:
        # scores = q @ k^T, then * scaling and + mask: two more (b, heads, s, s) compute-dtype tensors alive before
        # softmax; plus the 4-D float mask built once per forward.
        b, s = float(ctx.train.micro_batch), float(ctx.train.seq_len)
        heads = float(ctx.config.num_attention_heads)
        fwd = max(fwd, b * heads * s * s * 2 * c + b * s * s * c)
    return fwd
