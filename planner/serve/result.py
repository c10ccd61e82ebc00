"""What ``serve_estimate`` returns (``loraplan serve --json``)."""

from __future__ import annotations

from planner.serve.spec import ServeSpec
from planner.specs import Frozen


class VllmPool(Frozen):
    """vLLM's pre-allocated paged KV pool (``Worker.determine_num_available_blocks``, vLLM 0.6.4)."""

    gpu_memory_utilization: float
    total_gpu_memory_gib: float
    """What ``torch.cuda.mem_get_info`` reports as total (nvidia-smi's total less the driver's reserve)."""
    requested_gib: float
    """total x gpu_memory_utilization: weights, activation peak, non-torch memory and the pool share it."""
    max_num_batched_tokens: int
    """Tokens of the profiling forward (the activation peak)."""
    non_torch_gib: float
    kv_pool_gib: float
    block_size: int
    block_bytes: float
    """One block over every layer: block_size x KV bytes per token."""
    num_blocks: int
    max_concurrency: float
    """vLLM's 'maximum concurrency' log figure: pool tokens / context."""


class ServeEstimate(Frozen):
    """Memory of serving one model on one GPU, and how many sequences and adapters fit."""

    model: str
    gpu: str | None
    spec: ServeSpec
    weights_gib: float
    """Base weights at their storage size (quantized linears with their scales, zeros and indices)."""
    adapter_each_gib: float
    """One LoRA adapter (HF: PEFT's float32 copy; vLLM: one max_loras slot at max(rank, max_lora_rank))."""
    adapters_gib: float
    lora_transient_gib: float
    """Unmerged LoRA compute during prefill: x @ A (tokens x r) and B's output (tokens x widest out)."""
    dequant_transient_gib: float
    """16-bit copy of the widest quantized weight during prefill (nf4 / awq / gptq)."""
    kv_bytes_per_token: float
    """KV cache bytes of one token over all layers ignoring sliding windows (layers x 2 x KV heads x head_dim x
    element size)."""
    kv_tokens_per_layer: list[int]
    """Tokens one sequence keeps per layer: min(context, window) on sliding layers."""
    kv_sequence_gib: float
    kv_cache_gib: float
    """KV cache of ``batch`` sequences of ``context`` tokens."""
    prefill_activations_gib: float
    """Peak activation of one forward, no grad (HF: batch x prefill tokens; vLLM: the profiling run)."""
    logits_gib: float
    overhead_gib: float
    """HF: CUDA context + cuBLAS workspace; vLLM: its non-torch memory."""
    total_gib: float
    """HF: sum of the above; vLLM: what the engine holds (requested_gib)."""
    budget_gib: float | None
    """HF: usable memory less the 10% headroom; vLLM: gpu_memory_utilization x total."""
    fits: bool | None
    max_concurrent_sequences: int | None
    """Sequences of ``context`` tokens that fit at once (HF: the largest static-cache batch)."""
    max_adapters: int | None
    """Adapters (of this rank and targets) that fit while ``batch`` sequences of ``context`` still fit."""
    vllm: VllmPool | None = None
    warnings: list[str] = []
    sources: list[str] = []
