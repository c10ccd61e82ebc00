"""Where the time model's inputs live, read once into typed constants.

``profiles/throughput.json``: counted traffic coefficients (each with its source), the GPU generations, and the
constants :mod:`planner.time.fit` fitted on the published runs (with the fit's provenance and the held-out error
band). ``profiles/throughput_runs.json``: the published runs. ``profiles/measurements/``: probe results.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from planner.catalog import _read_json, profiles_dir

TFLOP = 1e12
"""FLOP/s in one TFLOP/s."""
GB = 1e9
"""Bytes in one GB (decimal, as memory bandwidths are quoted)."""


@cache
def throughput_profile() -> dict[str, Any]:
    """``profiles/throughput.json``."""
    return _read_json(profiles_dir() / "throughput.json")


@cache
def throughput_runs() -> dict[str, Any]:
    """``profiles/throughput_runs.json``: published runs with their conditions and the held-out split."""
    return _read_json(profiles_dir() / "throughput_runs.json")


def measurements_dir() -> Path:
    """``profiles/measurements/``: ``loraplan probe --save`` results whose tokens/s take precedence."""
    return profiles_dir() / "measurements"


def _value(raw: dict[str, Any], key: str) -> float:
    return float(raw[key]["value"])


@dataclass(frozen=True)
class Traffic:
    """Counted DRAM bytes of the memory-bound work (``throughput.json`` ``traffic``), per token unless noted."""

    layer_hidden_bytes: float
    """Forward bytes per hidden element per layer (2 RMSNorms with fp32 upcast, 2 residual adds) in 16-bit units."""
    layer_qkv_bytes: float
    """Forward bytes per q/k/v feature per layer (rotary embedding of q and k, SDPA layout copies)."""
    layer_intermediate_bytes: float
    """Forward bytes per MLP intermediate feature per layer (SwiGLU act and product)."""
    backward_factor: float
    """Backward elementwise traffic as a multiple of the forward's."""
    lora_in: float
    lora_out: float
    """LoRA path forward bytes per in / out feature per adapted module (A reads x; B output, scale, add)."""
    lora_backward_in: float
    lora_backward_out: float
    dropout_in: float
    """Extra forward (and again backward) bytes per in feature when LoRA dropout p > 0."""
    fp32_cast_in: float
    """Extra bytes per in feature when fp32 adapters run without autocast (x cast to fp32 and back)."""
    dora_weight_bytes: float
    """DoRA: bytes per adapted weight element per forward (B@A in fp32, W + s*BA, column norm)."""
    dora_out: float
    """DoRA: forward+backward bytes per out feature per adapted module (magnitude scaling)."""
    loss_bytes_per_vocab: dict[str, float]
    """Cross-entropy bytes per token per vocabulary entry, by the stack's loss kind."""
    optimizer_extra_accesses: dict[str, float]
    """Extra element accesses per trainable parameter by :class:`~planner.time.schemas.OptimizerImpl` (Adam family)."""
    clip_accesses: float
    """``clip_grad_norm_``: element accesses per gradient (norm read, scale read + write)."""
    expert_modules: float
    """Dispatch units per routed expert call (transformers' expert loop), in units of an adapted module."""
    fused_kernels: dict[str, float]
    """``layer_*_bytes`` of stacks running fused RMSNorm/RoPE/SwiGLU kernels (Liger, Unsloth), counted."""
    fused_libraries: tuple[str, ...]
    fused_frameworks: tuple[str, ...]
    """Stacks with those kernels: a library in the stack's versions, or the framework."""


@dataclass(frozen=True)
class Fitted:
    """Constants fitted on the published runs (``throughput.json`` ``fitted``); see :mod:`planner.time.fit`."""

    mfu_by_generation: dict[str, float]
    fitted_gpu: dict[str, str]
    """Generation -> the GPU its runs used."""
    gemm_half_tokens: float
    gemm_half_dim: float
    overhead_s_per_layer: float
    overhead_s_per_module: float
    band_low: float
    band_high: float
    """tokens/s multipliers of the error band (held-out p10 / p90 of measured / predicted, widened to include 1)."""
    inferred_band_low: float
    inferred_band_high: float
    """The band for GPUs whose utilization is inferred from another generation (cross-generation check)."""


@dataclass(frozen=True)
class TimeConstants:
    bandwidth_efficiency: float
    traffic: Traffic
    fitted: Fitted
    generations: dict[str, str]
    """Compute capability -> generation."""
    infer_from: dict[str, str]
    """Generation without runs -> the fitted generation it borrows from."""


def _traffic(raw: dict[str, Any]) -> Traffic:
    return Traffic(
        layer_hidden_bytes=_value(raw, "layer_hidden_bytes"), layer_qkv_bytes=_value(raw, "layer_qkv_bytes"),
        layer_intermediate_bytes=_value(raw, "layer_intermediate_bytes"),
        backward_factor=_value(raw, "backward_factor"), lora_in=_value(raw, "lora_in"),
        lora_out=_value(raw, "lora_out"), lora_backward_in=_value(raw, "lora_backward_in"),
        lora_backward_out=_value(raw, "lora_backward_out"), dropout_in=_value(raw, "dropout_in"),
        fp32_cast_in=_value(raw, "fp32_cast_in"), dora_weight_bytes=_value(raw, "dora_weight_bytes"),
        dora_out=_value(raw, "dora_out"),
        loss_bytes_per_vocab={k: float(v) for k, v in raw["loss_bytes_per_vocab"]["value"].items()},
        optimizer_extra_accesses={k: float(v) for k, v in raw["optimizer_extra_accesses"]["value"].items()},
        clip_accesses=_value(raw, "clip_accesses"), expert_modules=_value(raw, "expert_modules"),
        fused_kernels={k: float(v) for k, v in raw["fused_kernels"]["value"].items()},
        fused_libraries=tuple(raw["fused_kernel_stacks"]["value"]["libraries"]),
        fused_frameworks=tuple(raw["fused_kernel_stacks"]["value"]["frameworks"]),
    )


def _fitted(raw: dict[str, Any]) -> Fitted:
    return Fitted(
        mfu_by_generation={k: float(v["mfu"]) for k, v in raw["generations"].items()},
        fitted_gpu={k: v["gpu"] for k, v in raw["generations"].items()},
        gemm_half_tokens=float(raw["gemm_half_tokens"]), gemm_half_dim=float(raw["gemm_half_dim"]),
        overhead_s_per_layer=float(raw["overhead_s_per_layer"]),
        overhead_s_per_module=float(raw["overhead_s_per_module"]),
        band_low=float(raw["error_band"]["low"]), band_high=float(raw["error_band"]["high"]),
        inferred_band_low=float(raw.get("error_band_inferred", raw["error_band"])["low"]),
        inferred_band_high=float(raw.get("error_band_inferred", raw["error_band"])["high"]),
    )


@cache
def time_constants() -> TimeConstants:
    """Every constant of the time model, typed (read once)."""
    raw = throughput_profile()
    return TimeConstants(
        bandwidth_efficiency=_value(raw, "memory_bandwidth_efficiency"),
        traffic=_traffic(raw["traffic"]),
        fitted=_fitted(raw["fitted"]),
        generations=dict(raw["generations"]["value"]),
        infer_from=dict(raw["infer_from"]["value"]),
    )
