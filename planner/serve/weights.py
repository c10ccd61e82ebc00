"""Stored bytes of quantized linears and of a whole model's weights, per ``profiles/serve.json`` formats.

Per-linear shapes come from :mod:`planner.model.architecture`; NF4 reuses the estimator's
:func:`planner.memory.context.nf4_bytes_per_param` (bitsandbytes ``quantize_4bit``).
"""

from __future__ import annotations

import math

from planner.catalog import serve_constants
from planner.memory.context import nf4_bytes_per_param
from planner.model.architecture import Linear, architecture
from planner.model.params import total_params
from planner.serve.spec import Quant
from planner.specs import ModelConfig


def quantized_weight_bytes(in_features: int, out_features: int, quant: Quant, dtype_bytes: float) -> float:
    """Bytes of one ``out x in`` weight (no bias) stored as ``quant``.

    nf4: 4-bit values + float32 absmax per 64 (bitsandbytes); int8: int8 values + float32 scale per output row
    (LLM.int8 SCB); awq/gptq: packed 4-bit values, per (group of 128 inputs, output) an fp16 scale and a packed
    4-bit zero, gptq also an int32 ``g_idx`` per input row.
    """
    numel = float(in_features) * out_features
    if quant is Quant.NONE:
        return numel * dtype_bytes
    fmt = serve_constants()["quant_formats"][quant.value]
    if quant is Quant.NF4:
        return numel * nf4_bytes_per_param(fmt["double_quant"])
    values = numel * fmt["bits"] / 8
    if fmt["layout"] == "row":
        return values + out_features * fmt["scale_bytes"]
    groups = math.ceil(in_features / fmt["group_size"])
    per_group = fmt["scale_bytes"] + fmt["zero_bits"] / 8
    return values + groups * out_features * per_group + in_features * fmt["g_idx_bytes"]


def quantized_linears(config: ModelConfig, quant: Quant) -> tuple[tuple[Linear, int], ...]:
    """(linear, copies per layer) that ``quant`` stores quantized.

    bitsandbytes converts exactly the ``nn.Linear`` / ``Conv1D`` decoder modules (none for Falcon's
    ``FalconLinear``; Mixtral's transformers-5 expert tensors are parameters and stay 16-bit); AWQ and GPTQ
    checkpoints quantize every decoder linear, MoE experts included (one linear per expert).
    """
    arch = architecture(config)
    if quant is Quant.NONE:
        return ()
    if quant in (Quant.NF4, Quant.INT8):
        return tuple((lin, 1) for lin in arch.linears) if arch.bnb_quantizable else ()
    experts = tuple((p, p.experts) for p in arch.param_targets if p.experts > 1)
    return tuple((lin, 1) for lin in arch.linears) + experts


def model_weight_bytes(config: ModelConfig, quant: Quant, dtype_bytes: float) -> float:
    """All base weights: quantized linears at their storage size, everything else in the model dtype."""
    total = total_params(config) * dtype_bytes
    for lin, copies in quantized_linears(config, quant):
        dense = lin.weight_params * dtype_bytes
        stored = quantized_weight_bytes(lin.in_features, lin.out_features, quant, dtype_bytes)
        total += config.num_hidden_layers * copies * (stored - dense)
    return total


def widest_quantized_weight(config: ModelConfig, quant: Quant) -> int:
    """Elements of the largest quantized weight (what a dequantizing prefill matmul materializes)."""
    sizes = [lin.weight_params for lin, _ in quantized_linears(config, quant)]
    return max(sizes, default=0)
