"""FLOPs per token of one training step, and the GPU's dense peak.

FLOPs per token (multiply-add = 2 FLOPs), for a decoder with N matmul parameters:

- forward: ``2N`` plus attention ``2 * layers * seq * (heads * head_dim)`` (QK^T and softmax(QK^T)V with a
  causal mask, which flash / memory-efficient SDPA kernels skip: Kaplan et al. 2020, "Scaling Laws for
  Neural Language Models", Table 1, ``C_forward = 2N + 2 n_layer n_ctx d_attn``). Eager attention computes
  the full square: twice that. PaLM's MFU definition (Chowdhery et al. 2022, Appendix B) counts
  ``6N + 12 L H Q T`` per token, i.e. the non-causal square; we count the work the kernels do.
- backward: activation gradients ``2N``; weight gradients another ``2N`` for trainable weights only
  (full fine-tuning: ``4N``; LoRA/QLoRA with a frozen base: ``2N`` plus the adapters' own ``4 * N_lora``);
  attention backward is twice its forward.
- gradient checkpointing: one more forward of the decoder layers (not of the lm_head).
- DoRA: PEFT recomputes the column norm of ``W + s*BA`` every pass (``2 r in out`` per adapted module).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from planner.model.architecture import architecture
from planner.model.targets import resolve_targets
from planner.specs import Attn, DType, GpuProfile, Method, ModelConfig, TrainSpec


@dataclass(frozen=True)
class Flops:
    """FLOPs of one micro-batch, split by where they go."""

    per_token: float
    """Forward + backward + recompute FLOPs per token."""
    per_microbatch: float
    """FLOPs that do not scale with tokens (DoRA weight norms)."""
    forward_per_token: float


def matmul_params(config: ModelConfig) -> tuple[float, float]:
    """(decoder-layer matmul params active per token, lm_head params)."""
    arch = architecture(config)
    per_layer = float(sum(lin.weight_params for lin in arch.linears))
    if arch.expert_params:
        k, e = config.num_experts_per_tok, config.num_local_experts
        per_layer += arch.expert_params * k / e + arch.router_params
    return config.num_hidden_layers * per_layer, float(config.vocab_size * config.hidden_size)


@cache
def _target_sums(config: ModelConfig, targets: tuple[str, ...]) -> tuple[float, float]:
    """(sum of in+out features, sum of in*out) over the adapted modules of one layer."""
    lins = resolve_targets(config, targets)
    return float(sum(t.in_features + t.out_features for t in lins)), float(sum(t.in_features * t.out_features for t in lins))


def flops(config: ModelConfig, train: TrainSpec) -> Flops:
    """FLOPs per token of one training step (see module docstring)."""
    layers_mm, head_mm = matmul_params(config)
    q_dim = config.num_attention_heads * config.head_dim
    attn = 2.0 * config.num_hidden_layers * train.seq_len * q_dim
    if train.attn is Attn.EAGER:
        attn *= 2.0  # the full square, masked afterwards
    adapters = 0.0
    dora = 0.0
    if train.method is not Method.FULL:
        io_sum, io_prod = _target_sums(config, train.targets)
        adapters = config.num_hidden_layers * train.rank * io_sum
        if train.dora:
            dora = config.num_hidden_layers * 2.0 * train.rank * io_prod
    fwd = 2.0 * (layers_mm + head_mm + adapters) + attn
    if train.method is Method.FULL:
        bwd = 4.0 * (layers_mm + head_mm) + 2.0 * attn
    else:
        bwd = 2.0 * (layers_mm + head_mm) + 4.0 * adapters + 2.0 * attn
    recompute = 2.0 * (layers_mm + adapters) + attn if train.grad_ckpt else 0.0
    passes = 3.0 if train.grad_ckpt else 2.0
    return Flops(per_token=fwd + bwd + recompute, per_microbatch=dora * passes, forward_per_token=fwd)


def peak_tflops(gpu: GpuProfile, dtype: DType) -> float:
    """Dense tensor-core peak for the compute dtype (gpus.json), TFLOP/s."""
    if dtype is DType.BF16 and gpu.bf16_tflops:
        return gpu.bf16_tflops
    if dtype is DType.FP32:
        # No fp32 tensor-core figure is stored; TF32 runs at about half the 16-bit rate on Ampere+.
        return gpu.fp16_tflops / 2.0
    return gpu.fp16_tflops
