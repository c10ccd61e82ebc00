"""Persistent model state and weight-shaped transients: base weights, adapters, gradients, weight casts.

Sources:
- [PEFT-cast]  peft v0.21.2 peft/tuners/tuners_utils.py ``_cast_adapter_dtype``: adapters upcast to fp32
               (the stack's ``adapter_dtype``).
- [KBIT]       peft/utils/other.py ``prepare_model_for_kbit_training``: every non-4-bit fp16/bf16 param -> fp32.
- [BNB-quant]  bitsandbytes v0.50.2 bitsandbytes/functional.py ``quantize_4bit`` (see ``context.nf4_bytes_per_param``).
- [BNB-int8]   bitsandbytes/nn/modules.py ``Int8Params``: int8 weight (CB) plus an fp32 scale per output row (SCB).
- [BNB-4bit]   bitsandbytes/autograd/_functions.py ``MatMul4Bit``: dequantizes the weight to a 16-bit temporary
               per matmul, forward and backward.
- [AUTOCAST]   CUDA autocast (torch.amp): casts of leaf params that require grad are cached for the region.
"""

from __future__ import annotations

from planner.memory.context import FP32_BYTES, Context
from planner.model.params import quantizable_weight_params, quantized_tensor_count


def weight_bytes(ctx: Context) -> float:
    """Base-model weights (adapters excluded): quantized linears at their storage size, the rest floating point."""
    config, train = ctx.config, ctx.train
    quantized = quantizable_weight_params(config) if ctx.arch.bnb_quantizable else (
        ctx.layers * sum(lin.weight_params for lin in ctx.arch.linears) if ctx.quantized_linears else 0)
    tensors = quantized_tensor_count(config) if ctx.arch.bnb_quantizable else (
        ctx.layers * len(ctx.arch.linears) if ctx.quantized_linears else 0)
    if ctx.experts_quantized:
        # transformers 4.x MixtralBlockSparseTop2MLP: w1, w2, w3 nn.Linear per expert, each quantized.
        quantized += ctx.layers * ctx.arch.expert_params
        tensors += ctx.layers * config.num_local_experts * sum(1 for p in ctx.arch.param_targets if p.experts > 1)
    if ctx.lm_head_quantized:
        # litgpt under lightning's BitsandbytesPrecision: the (untied) lm_head is a 4/8-bit Linear too.
        quantized += ctx.arch.lm_head_params
        tensors += 1
    if not ctx.qlora:
        quantized = quantizable_weight_params(config)
    other = ctx.total_params - quantized
    per_tensor = 0.0
    if ctx.qlora and train.quant_bits == 8:
        # [BNB-int8]: one fp32 scale (SCB) per output row of every int8 weight.
        per_tensor = ctx.layers * sum(lin.out_features for lin in ctx.arch.linears) * FP32_BYTES
    elif ctx.qlora and train.double_quant:
        # [BNB-quant]: each double-quantized tensor also keeps a 256-entry fp32 code and an fp32 offset.
        per_tensor = tensors * (256 + 1) * FP32_BYTES
    # Embeddings and an unquantized untied lm_head in their own dtype (TRL < 0.26 recasts them to bf16).
    head = ctx.arch.embed_params + (0 if ctx.lm_head_quantized else ctx.arch.lm_head_params)
    return quantized * ctx.d.linear_weight + head * ctx.d.embedding + (other - head) * ctx.d.other_param + per_tensor


def trainable_params(ctx: Context) -> int:
    return ctx.trainable_params


def adapter_bytes(ctx: Context) -> float:
    """LoRA/DoRA adapter weights in the stack's adapter dtype [PEFT-cast]. Zero for full fine-tuning."""
    if ctx.full:
        return 0.0
    return ctx.trainable_params * ctx.d.trainable


def gradient_bytes(ctx: Context) -> float:
    """One gradient per trainable parameter, in the parameter's dtype."""
    return trainable_params(ctx) * ctx.d.trainable


def largest_param_bytes(ctx: Context) -> float:
    """The largest single trainable parameter (full fine-tuning: embeddings, lm_head or a decoder matmul weight),
    in the trainable dtype."""
    arch = ctx.arch
    largest = max([arch.embed_params, arch.lm_head_params] + [lin.weight_params for lin in arch.linears])
    return largest * ctx.d.trainable


def lm_head_grad_bytes(ctx: Context) -> float:
    """Full fine-tuning: the first parameter gradient backward produces (lm_head / tied embedding)."""
    return ctx.config.vocab_size * ctx.config.hidden_size * ctx.d.trainable


def autocast_weight_copy_bytes(ctx: Context) -> float:
    """fp32 weights under 16-bit autocast (``--fp32-master``): every decoder matmul weight gets a 16-bit copy
    [AUTOCAST]. Trainable leaves (full fine-tuning) are cast once and cached for the forward region, with
    the lm_head; frozen ones (LoRA base) are cast per op. The frozen fp32 lm_head's copy is a loss term."""
    if ctx.qlora or not ctx.train.fp32_master or not ctx.d.autocast:
        return 0.0
    matmul_weights = ctx.layers * (sum(lin.weight_params for lin in ctx.arch.linears) + ctx.arch.expert_params)
    if ctx.full:
        matmul_weights += ctx.config.vocab_size * ctx.config.hidden_size
    return matmul_weights * ctx.d.compute


def qlora_dequant_transient_bytes(ctx: Context) -> float:
    """QLoRA: each 4-bit matmul dequantizes its weight to a temporary 16-bit tensor, forward and backward
    [BNB-4bit]; the largest one is the transient (:attr:`Context.dequant_bytes_per_param` bytes per weight).
    (LLM.int8 multiplies int8 directly.)"""
    if not ctx.qlora or ctx.train.quant_bits != 4:
        return 0.0
    largest = max(lin.weight_params for lin in ctx.arch.linears)
    if ctx.experts_quantized:  # transformers 4.x: each expert's w1/w2/w3 is a 4-bit Linear too
        largest = max([largest] + [one.weight_params for p in ctx.arch.param_targets for one in p.per_expert_linears()])
    return largest * ctx.dequant_bytes_per_param


def lm_head_dequant_transient_bytes(ctx: Context) -> float:
    """A 4-bit lm_head (litgpt) is dequantized to a 16-bit temporary at each of its matmuls [BNB-4bit] (with
    its cast copy where the quant state is fp16: :attr:`Context.dequant_bytes_per_param`): alive through the
    loss forward and backward."""
    if not ctx.lm_head_quantized or ctx.train.quant_bits != 4:
        return 0.0
    return ctx.arch.lm_head_params * ctx.dequant_bytes_per_param
