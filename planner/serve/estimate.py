"""``serve_estimate``: weights, adapters, KV cache, prefill activations, and for vLLM the paged KV pool.

Constants and their sources are in ``profiles/serve.json`` (``hf``, ``vllm``, ``quant_formats``);
CUDA context, cuBLAS workspace and the driver's reserve in ``profiles/runtime.json``.
"""

from __future__ import annotations

import math

from planner.catalog import load_gpu, load_model, raw_config, serve_constants
from planner.errors import PlannerError
from planner.estimator.fits import budget_gib, usable_gib
from planner.estimator.overhead import cublas_workspace_bytes, cuda_context_bytes
from planner.model.architecture import architecture
from planner.model.params import lora_params
from planner.model.targets import resolve_targets
from planner.serve.layout import layer_windows
from planner.serve.result import ServeEstimate, VllmPool
from planner.serve.spec import Engine, KvDtype, Quant, ServeSpec
from planner.serve.weights import model_weight_bytes, widest_quantized_weight
from planner.specs import GIB, GpuProfile, ModelConfig

SOURCES = ["profiles/serve.json", "profiles/runtime.json"]


def kv_layer_bytes_per_token(config: ModelConfig, spec: ServeSpec) -> float:
    """K and V of one token in one layer: 2 x KV heads x head_dim x element size (GQA: KV heads, not heads)."""
    element = float(serve_constants()["vllm"]["fp8_kv_bytes"]) if spec.kv_dtype is KvDtype.FP8 \
        else spec.dtype.bytes_per_element
    return 2.0 * config.num_key_value_heads * config.head_dim * element


def kv_tokens_per_layer(windows: tuple[int | None, ...], context: int) -> list[int]:
    """Tokens each layer keeps for one sequence: ``context``, or min(context, window) on a sliding layer."""
    return [context if w is None else min(context, w) for w in windows]


def adapter_params_each(config: ModelConfig, rank: int, targets: tuple[str, ...]) -> int:
    """Parameters of one LoRA adapter (``lora_A`` + ``lora_B`` on every targeted module of every layer)."""
    per_layer = sum(lora_params(lin, rank, False) for lin in resolve_targets(config, targets))
    return config.num_hidden_layers * per_layer


def _widest_out(config: ModelConfig, targets: tuple[str, ...]) -> int:
    return max(lin.out_features for lin in resolve_targets(config, targets))


def _mlp_width(config: ModelConfig) -> int:
    """Intermediate width a token's MLP materializes (MoE: x experts per token)."""
    return config.intermediate_size * max(1, config.num_experts_per_tok)


def _activation_bytes(config: ModelConfig, tokens: int, hidden_n: int, inter_n: int, dtype_bytes: float) -> float:
    """One decoder layer's MLP peak for ``tokens`` tokens (no autograd): hidden-size and intermediate tensors."""
    if not architecture(config).gated_mlp:
        inter_n = min(inter_n, 2)  # fc output and the activation's output
    return float(tokens) * (hidden_n * config.hidden_size + inter_n * _mlp_width(config)) * dtype_bytes


def _vllm_slot_rank(rank: int, v: dict) -> int:
    """The ``max_lora_rank`` a vLLM slot is allocated at: the smallest allowed value >= max(rank, default 16)."""
    wanted = max(rank, int(v["max_lora_rank"]))
    allowed = [r for r in v["max_lora_ranks"] if r >= wanted]
    if not allowed:
        raise PlannerError(f"--rank {rank}: vLLM serves LoRA ranks up to {max(v['max_lora_ranks'])}")
    return int(allowed[0])


def _hf_prefill_bytes(config: ModelConfig, tokens: int, d: float) -> float:
    """Peak of one sequence's prefill in transformers (no grad): the largest of a decoder layer's MLP, its
    attention's rotary step and an RMSNorm's float32 upcast, plus the rotary cos/sin tables
    (``profiles/serve.json`` ``hf``; measured by ``probes.serve_trace.trace_prefill_peak``)."""
    h = serve_constants()["hf"]
    arch = architecture(config)
    hidden = config.hidden_size
    q = config.num_attention_heads * config.head_dim
    kv = config.num_key_value_heads * config.head_dim
    mlp = _activation_bytes(config, tokens, h["activation_hidden_tensors"], h["activation_intermediate_tensors"], d)
    q_tensors = h["attention_q_tensors"] if arch.rotary_tables else 1
    attn = float(tokens) * (h["attention_hidden_tensors"] * hidden + q_tensors * q + h["attention_kv_tensors"] * kv) * d
    norm = 0.0
    if not arch.norm_has_bias:  # RMSNorm upcasts to float32 (LayerNorm models normalize in the kernel)
        norm = float(tokens) * hidden * (h["norm_hidden_tensors"] * d + h["norm_fp32_hidden_tensors"] * 4.0)
    rotary = h["rotary_tensors"] * float(tokens) * config.head_dim * d if arch.rotary_tables else 0.0
    return max(mlp, attn, norm) + rotary


def _check(config: ModelConfig, spec: ServeSpec, gpu: GpuProfile | None, name: str) -> list[str]:
    warnings = []
    if spec.context > config.max_position_embeddings:
        raise PlannerError(f"--context {spec.context} exceeds {name}'s max_position_embeddings "
                           f"{config.max_position_embeddings}")
    if spec.prefill_chunk is not None and spec.engine is Engine.HF and spec.prefill_chunk > spec.context:
        raise PlannerError(f"--prefill-chunk {spec.prefill_chunk} is longer than --context {spec.context}")
    if spec.engine is Engine.VLLM and gpu is None:
        raise PlannerError("--engine vllm sizes its KV pool from the GPU's memory: pass --gpu")
    if gpu is not None and not gpu.bf16 and spec.dtype.value == "bf16":
        warnings.append(f"{gpu.name} has no bf16: serve with --dtype fp16")
    if spec.quant in (Quant.AWQ, Quant.GPTQ) and spec.dtype.value == "bf16":
        warnings.append(f"{spec.quant.value} kernels compute in fp16 (vLLM casts the model to float16)")
    return warnings


def serve_estimate(spec: ServeSpec, config: ModelConfig, gpu: GpuProfile | None,
                   windows: tuple[int | None, ...] | None = None, name: str = "model") -> ServeEstimate:
    """Memory of serving ``config`` as ``spec`` says, on ``gpu`` (None: the memory needs only).

    Args:
        spec: the serving configuration.
        config: the normalized model config.
        gpu: the GPU (required for ``--engine vllm``).
        windows: per layer its sliding window (None entries: full attention); default all full.
        name: the model's name for messages.

    Returns:
        The terms in GiB, the KV bytes per token, and (with a GPU) whether ``batch`` sequences fit, the most
        concurrent sequences of ``context`` tokens and the most adapters.

    Raises:
        PlannerError: context beyond the model's positions, vLLM without a GPU, unknown targets.
    """
    consts = serve_constants()
    warnings = _check(config, spec, gpu, name)
    windows = windows if windows is not None else (None,) * config.num_hidden_layers
    if any(windows) and spec.engine is Engine.VLLM:
        warnings.append("vLLM pages sliding-window layers as min(context, window) tokens each (approximation)")
    d = spec.dtype.bytes_per_element
    weights = model_weight_bytes(config, spec.quant, d)
    per_layer_token = kv_layer_bytes_per_token(config, spec)
    tokens = kv_tokens_per_layer(windows, spec.context)
    kv_seq = per_layer_token * sum(tokens)
    lora_n = spec.adapter_count
    if spec.engine is Engine.HF:
        return _hf(spec, config, gpu, name, weights, per_layer_token, tokens, kv_seq, warnings)
    assert gpu is not None
    v = consts["vllm"]
    rank = _vllm_slot_rank(spec.rank, v)
    if spec.targets != ("all-linear",) and spec.adapter_count:
        warnings.append("vLLM allocates LoRA slots on every linear layer; --targets changes only the hf estimate")
    slot = adapter_params_each(config, rank, ("all-linear",)) * d
    if spec.prefill_chunk is not None:
        batched = spec.prefill_chunk
    elif spec.context > v["chunked_prefill_above_tokens"] and not lora_n and not any(windows):
        batched = int(v["chunked_prefill_max_num_batched_tokens"])
    else:
        batched = max(spec.context, int(v["min_max_num_batched_tokens"]))
    act = _activation_bytes(config, batched, v["activation_hidden_tensors"], v["activation_intermediate_tensors"], d)
    lora_t = batched * (rank + _widest_out(config, ("all-linear",))) * d if lora_n else 0.0
    logits = min(int(v["max_num_seqs"]), batched) * config.vocab_size * float(v["sampler_logits_bytes"])
    non_torch = float(v["non_torch_gib"]) * GIB
    total = usable_gib(gpu) * GIB
    requested = total * spec.gpu_memory_utilization
    fixed = weights + act + lora_t + logits + non_torch
    pool = max(0.0, requested - fixed - lora_n * slot)
    block = int(v["block_size"])
    block_bytes = block * per_layer_token * config.num_hidden_layers
    blocks = int(pool // block_bytes)
    seq_bytes = per_layer_token * sum(math.ceil(t / block) * block for t in tokens)
    concurrent = int(blocks * block_bytes // seq_bytes)
    need = spec.batch * seq_bytes
    free_for_slots = requested - fixed - need
    if not lora_n and not spec.merged:  # the LoRA transient comes with the first adapter
        free_for_slots -= batched * (rank + _widest_out(config, ("all-linear",))) * d
    max_adapters = max(0, int(free_for_slots // slot)) if not spec.merged else int(concurrent >= spec.batch)
    fits = blocks * block >= spec.context and concurrent >= spec.batch
    if not fits:
        warnings.append(f"does not fit: the KV pool holds {blocks} blocks ({blocks * block} tokens), "
                        f"{spec.batch} x {spec.context} tokens needed")
    pool_info = VllmPool(
        gpu_memory_utilization=spec.gpu_memory_utilization, total_gpu_memory_gib=total / GIB,
        requested_gib=requested / GIB, max_num_batched_tokens=batched, non_torch_gib=non_torch / GIB,
        kv_pool_gib=pool / GIB, block_size=block, block_bytes=block_bytes, num_blocks=blocks,
        max_concurrency=blocks * block / spec.context,
    )
    return ServeEstimate(
        model=name, gpu=gpu.name, spec=spec, weights_gib=weights / GIB, adapter_each_gib=slot / GIB,
        adapters_gib=lora_n * slot / GIB, lora_transient_gib=lora_t / GIB, dequant_transient_gib=0.0,
        kv_bytes_per_token=per_layer_token * config.num_hidden_layers, kv_tokens_per_layer=tokens,
        kv_sequence_gib=kv_seq / GIB, kv_cache_gib=spec.batch * kv_seq / GIB, prefill_activations_gib=act / GIB,
        logits_gib=logits / GIB, overhead_gib=non_torch / GIB, total_gib=requested / GIB,
        budget_gib=requested / GIB, fits=fits, max_concurrent_sequences=concurrent, max_adapters=max_adapters,
        vllm=pool_info, warnings=warnings, sources=SOURCES,
    )


def _hf(spec: ServeSpec, config: ModelConfig, gpu: GpuProfile | None, name: str, weights: float,
        per_layer_token: float, tokens: list[int], kv_seq: float, warnings: list[str]) -> ServeEstimate:
    """transformers ``generate`` with a static cache: everything is allocated per the batch."""
    h = serve_constants()["hf"]
    d = spec.dtype.bytes_per_element
    lora_n = spec.adapter_count
    each = adapter_params_each(config, spec.rank, spec.targets) * float(h["adapter_bytes"])
    prompt = spec.prefill_chunk or spec.context
    act_seq = _hf_prefill_bytes(config, prompt, d)
    logits_seq = h["logits_rows_per_sequence"] * config.vocab_size * (d + float(h["logits_bytes"]))
    lora_seq = prompt * (spec.rank + _widest_out(config, spec.targets)) * d
    lora_t = spec.batch * lora_seq if lora_n else 0.0
    fmt = serve_constants()["quant_formats"].get(spec.quant.value, {})
    dequant = widest_quantized_weight(config, spec.quant) * d if fmt.get("prefill_dequant") else 0.0
    overhead = cublas_workspace_bytes(gpu) + cuda_context_bytes(gpu, None)
    per_seq = kv_seq + act_seq + logits_seq
    fixed = weights + dequant + overhead
    total = fixed + lora_n * each + lora_t + spec.batch * per_seq
    budget = fits = concurrent = max_adapters = None
    if gpu is not None:
        budget = budget_gib(gpu) * GIB
        fits = total <= budget
        room = budget - fixed - lora_n * each
        concurrent = max(0, int(room // (per_seq + (lora_seq if lora_n else 0.0))))
        if spec.merged:
            max_adapters = int(fits)
        else:
            spare = budget - fixed - spec.batch * (per_seq + lora_seq)
            max_adapters = max(0, int(spare // each))
        if not fits:
            warnings.append(f"does not fit: {total / GIB:.2f} GiB needed, {budget / GIB:.2f} GiB budget on {gpu.name}")
    return ServeEstimate(
        model=name, gpu=gpu.name if gpu else None, spec=spec, weights_gib=weights / GIB, adapter_each_gib=each / GIB,
        adapters_gib=lora_n * each / GIB, lora_transient_gib=lora_t / GIB, dequant_transient_gib=dequant / GIB,
        kv_bytes_per_token=per_layer_token * config.num_hidden_layers, kv_tokens_per_layer=tokens,
        kv_sequence_gib=kv_seq / GIB, kv_cache_gib=spec.batch * kv_seq / GIB,
        prefill_activations_gib=spec.batch * act_seq / GIB, logits_gib=spec.batch * logits_seq / GIB,
        overhead_gib=overhead / GIB, total_gib=total / GIB, budget_gib=None if budget is None else budget / GIB,
        fits=fits, max_concurrent_sequences=concurrent, max_adapters=max_adapters, warnings=warnings,
        sources=SOURCES,
    )


def serve(model: str, spec: ServeSpec, gpu: str | None = None) -> ServeEstimate:
    """:func:`serve_estimate` for a model name (or config.json) and a GPU name: loads both, reads the windows."""
    profile = load_model(model)
    gpu_profile = load_gpu(gpu) if gpu is not None else None
    windows = layer_windows(profile.config, raw_config(model))
    est = serve_estimate(spec, profile.config, gpu_profile, windows, name=profile.name)
    if profile.warnings:
        est = est.model_copy(update={"warnings": [*profile.warnings, *est.warnings]})
    return est
