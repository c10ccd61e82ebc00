"""Warnings an estimate carries: where the modeled stack does something the user may not expect."""

from __future__ import annotations

from planner.memory.activations import host_checkpoint_bytes
from planner.memory.context import Context
from planner.specs import GIB, Attn, DType, GpuProfile
from planner.stack.stack import MoeExperts


def attention_fallback(requested: Attn, ctx: Context) -> tuple[str, ...]:
    """The line saying the stack runs other attention than ``requested`` (Gemma 2's softcapping and SDPA)."""
    if ctx.train.attn is requested:
        return ()
    return (f"{ctx.config.model_type}'s softcapped attention cannot run on SDPA on this stack (transformers >= 5.21: "
            "_supports_sdpa = False; litgpt computes it by hand): modelled as eager attention, which saves the "
            "s x s scores; pass --attn flash for FlashAttention-2 >= 2.6, which supports softcapping",)


def estimate_warnings(ctx: Context, paged_bytes: float, gpu: GpuProfile | None = None) -> tuple[str, ...]:
    """One line per surprising behaviour of ``ctx``'s stack for this model, spec and GPU."""
    out: list[str] = []
    train, config, arch = ctx.train, ctx.config, ctx.arch
    if gpu is not None and not gpu.bf16 and train.dtype is DType.BF16:
        out.append(
            f"{gpu.name} has no bf16 support (compute capability {gpu.compute_capability}): use --dtype fp16 "
            "(full fine-tuning: --dtype fp16 --fp32-master); bf16 would be emulated or refused"
        )
    if ctx.qlora and arch.expert_params and ctx.stack.moe_experts is MoeExperts.FUSED_3D_UNQUANTIZED:
        out.append(
            "transformers 5 stores MoE experts as 3-D parameters, which bitsandbytes does not quantize: only the "
            "attention layers are 4-bit, the experts stay floating point"
            + (" (fp32 after prepare_model_for_kbit_training)" if train.kbit_prepare else "")
        )
    if arch.expert_params and ctx.stack.per_expert_linears:
        out.append(
            "transformers 4.x keeps MoE experts as per-expert nn.Linear: their weights are modelled"
            + (" 4-bit" if ctx.experts_quantized else "")
            + ", with a plain LoRA on each expert's w1/w3/w2 (traced on transformers 4.44.2 + PEFT 0.12.0)"
        )
    if ctx.qlora and not arch.bnb_quantizable and not ctx.quantized_linears:
        out.append(
            f"transformers quantizes only exact nn.Linear modules; {config.model_type}'s linear layers are a subclass "
            "and stay unquantized, so QLoRA saves no weight memory here (prepare_model_for_kbit_training then "
            "upcasts them to fp32): use --method lora"
        )
    if train.seq_len > config.max_position_embeddings:
        out.append(f"seq_len {train.seq_len} exceeds the model's max_position_embeddings {config.max_position_embeddings}")
    if paged_bytes:
        out.append(
            f"paged optimizer state ({paged_bytes / GIB:.2f} GiB) is CUDA managed memory: counted on the "
            "device, outside torch's counters, and can spill to host RAM under pressure (slower)"
        )
    host = host_checkpoint_bytes(ctx)
    if host:
        out.append(
            f"Unsloth's checkpointing offloads {ctx.layers - 1} layers' checkpointed inputs ({host / GIB:.2f} GiB) "
            "to pinned host RAM (not counted on the GPU); only the layer being recomputed is reloaded"
        )
    return tuple(out)
