"""Exact parameter counts from a config: total (tied embeddings once) and trainable (LoRA / DoRA / full).

Checked in ``tests/test_params.py`` against transformers' meta-device instantiation and PEFT's
``get_peft_model`` for every shipped profile.
"""

from __future__ import annotations

from planner.model.architecture import Linear, architecture
from planner.model.targets import resolve_targets
from planner.results import ParamCounts
from planner.specs import Method, ModelConfig, TrainSpec


def total_params(config: ModelConfig) -> int:
    """All base-model parameters; tied input/output embeddings are one tensor and count once."""
    arch = architecture(config)
    return (
        config.num_hidden_layers * arch.layer_params + arch.embed_params + arch.final_norm_params + arch.lm_head_params
    )


def lora_params(linear: Linear, rank: int, dora: bool) -> int:
    """Adapter parameters on one module: ``lora_A`` (r x in) + ``lora_B`` (out x r), plus DoRA's
    magnitude vector (``lora_magnitude_vector``, one per output feature; peft/tuners/lora/dora.py).

    MoE expert tensors (PEFT ``ParamWrapper``) stack one rank block per expert: ``lora_A`` is
    (r * E, in), ``lora_B`` (out, r * E), with r doubled for fused gate_up.
    """
    r = stacked_rank(linear, rank)
    return r * (linear.in_features + linear.out_features) + (linear.out_features if dora else 0)


def stacked_rank(linear: Linear, rank: int) -> int:
    """Rows of ``lora_A`` / columns of ``lora_B`` on ``linear`` (rank x experts x PEFT's fused multiplier)."""
    return rank * linear.rank_multiplier * linear.experts


def adapter_params(config: ModelConfig, train: TrainSpec, per_expert_linears: bool = False) -> int:
    """Trainable adapter parameters of the whole model for LoRA/QLoRA.

    ``per_expert_linears``: MoE experts are ``nn.Linear`` per expert (transformers 4.x), so PEFT puts one plain
    rank-r LoRA on each expert's ``w1``, ``w3`` and ``w2`` instead of the stacked ``ParamWrapper`` factors.
    """
    per_layer = 0
    for lin in resolve_targets(config, train.targets):
        if per_expert_linears and lin.experts > 1:
            per_layer += lin.experts * sum(lora_params(one, train.rank, train.dora) for one in lin.per_expert_linears())
        else:
            per_layer += lora_params(lin, train.rank, train.dora)
    return config.num_hidden_layers * per_layer


def param_counts(config: ModelConfig, train: TrainSpec) -> ParamCounts:
    """Total base parameters and the trainable ones for ``train.method``."""
    total = total_params(config)
    trainable = total if train.method is Method.FULL else adapter_params(config, train)
    return ParamCounts(total=total, trainable=trainable)


def quantizable_weight_params(config: ModelConfig) -> int:
    """Weights that bitsandbytes replaces with 4/8-bit storage: every decoder-layer ``nn.Linear``
    weight. Biases, norms, embeddings, the lm_head (kept by ``get_keys_to_not_convert``) and
    Mixtral's 3-D expert tensors (``nn.Parameter``, not ``nn.Linear``) stay in floating point."""
    arch = architecture(config)
    if not arch.bnb_quantizable:
        return 0
    return config.num_hidden_layers * sum(lin.weight_params for lin in arch.linears)


def quantized_tensor_count(config: ModelConfig) -> int:
    """Number of quantized weight tensors (each carries its own quantization state)."""
    arch = architecture(config)
    return config.num_hidden_layers * len(arch.linears) if arch.bnb_quantizable else 0
