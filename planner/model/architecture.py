"""Module tables: the parameter tensors of one decoder layer, per transformers model family.

Shapes follow the ``modeling_*.py`` files of transformers 5.x:
https://github.com/huggingface/transformers/tree/main/src/transformers/models

Only ``nn.Linear`` / GPT-2 ``Conv1D`` modules appear in :attr:`Architecture.linears`: those are what
bitsandbytes quantizes (``replace_with_bnb_linear``) and what PEFT's ``all-linear`` targets
(``peft.tuners.tuners_utils._maybe_include_all_linear_layers``: ``linear_classes = (nn.Linear, Conv1D)``,
minus the output embedding). Everything else (norms, embeddings, Mixtral's 3-D expert tensors and its
router, which transformers 5 stores as ``nn.Parameter``) is in the ``*_params`` counts.
"""

from __future__ import annotations

from enum import Enum
from functools import cache

from planner.errors import PlannerError
from planner.specs import Frozen, ModelConfig


class Block(str, Enum):
    ATTN = "attn"
    MLP = "mlp"


class Linear(Frozen):
    """One linear module in every decoder layer."""

    path: str
    """Path inside the layer, e.g. ``self_attn.q_proj`` (PEFT matches targets as a suffix of the full name)."""
    in_features: int
    out_features: int
    bias: bool
    block: Block
    experts: int = 1
    """>1: a 3-D MoE expert tensor (E, out, in) targeted through PEFT's ``ParamWrapper``."""
    rank_multiplier: int = 1
    """PEFT doubles rank and alpha of fused gate_up experts (``_convert_peft_config_moe``)."""
    aliases: tuple[str, ...] = ()
    """transformers-4 names PEFT maps onto this target (``_MOE_TARGET_MODULE_MAPPING``)."""

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[-1]

    @property
    def weight_params(self) -> int:
        return self.in_features * self.out_features

    @property
    def params(self) -> int:
        return self.weight_params + (self.out_features if self.bias else 0)


class Architecture(Frozen):
    """Parameter layout of a decoder-only model."""

    linears: tuple[Linear, ...]
    """Linear modules of one decoder layer."""
    param_targets: tuple[Linear, ...] = ()
    """MoE router and expert tensors that PEFT adapts as parameters (transformers 5 + PEFT >= 0.18)."""
    norm_params: int
    """Norm weights (and biases) of one decoder layer."""
    norms_per_layer: int
    expert_params: int = 0
    """MoE expert tensors of one layer (``nn.Parameter``, not ``nn.Linear`` in transformers 5)."""
    router_params: int = 0
    embed_params: int
    """Token embeddings plus learned position embeddings (GPT-2 ``wpe``)."""
    final_norm_params: int
    lm_head_params: int
    """Zero when tied to the input embeddings (counted once)."""
    attn_targets: tuple[str, ...]
    """Target names for the ``attn`` preset."""
    qv_targets: tuple[str, ...]
    """Target names for the ``qv`` preset (q_proj,v_proj style)."""
    gated_mlp: bool
    norm_has_bias: bool
    bnb_quantizable: bool = True
    """False when bitsandbytes leaves the linears alone: transformers' ``replace_with_bnb_linear``
    (integrations/bitsandbytes.py) converts only ``type(module) is nn.Linear`` or ``Conv1D``, and
    Falcon's layers are the ``FalconLinear`` subclass."""
    sdpa_math: bool = False
    """SDPA falls back to the math kernel (saves the s x s probabilities): Falcon calls SDPA with fewer
    k/v heads than query heads and no ``enable_gqa``, which flash/memory-efficient kernels refuse."""

    @property
    def layer_params(self) -> int:
        return sum(lin.params for lin in self.linears) + self.norm_params + self.expert_params + self.router_params


def _llama_like(c: ModelConfig) -> Architecture:
    h, q, kv, i = c.hidden_size, c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim, c.intermediate_size
    ab, mb = c.attention_bias, c.mlp_bias
    if c.model_type == "phi3":  # fused qkv_proj and gate_up_proj (modeling_phi3.py)
        attn = [
            Linear(path="self_attn.qkv_proj", in_features=h, out_features=q + 2 * kv, bias=False, block=Block.ATTN),
            Linear(path="self_attn.o_proj", in_features=q, out_features=h, bias=False, block=Block.ATTN),
        ]
        mlp = [
            Linear(path="mlp.gate_up_proj", in_features=h, out_features=2 * i, bias=False, block=Block.MLP),
            Linear(path="mlp.down_proj", in_features=i, out_features=h, bias=False, block=Block.MLP),
        ]
        attn_targets, qv = ("qkv_proj", "o_proj"), ()
    else:
        # o_proj carries a bias only for Llama-style ``attention_bias`` (Qwen2: q/k/v only).
        o_bias = ab and c.model_type != "qwen2"
        attn = [
            Linear(path="self_attn.q_proj", in_features=h, out_features=q, bias=ab, block=Block.ATTN),
            Linear(path="self_attn.k_proj", in_features=h, out_features=kv, bias=ab, block=Block.ATTN),
            Linear(path="self_attn.v_proj", in_features=h, out_features=kv, bias=ab, block=Block.ATTN),
            Linear(path="self_attn.o_proj", in_features=q, out_features=h, bias=o_bias, block=Block.ATTN),
        ]
        mlp = []
        if c.num_local_experts == 0:
            mlp = [
                Linear(path="mlp.gate_proj", in_features=h, out_features=i, bias=mb, block=Block.MLP),
                Linear(path="mlp.up_proj", in_features=h, out_features=i, bias=mb, block=Block.MLP),
                Linear(path="mlp.down_proj", in_features=i, out_features=h, bias=mb, block=Block.MLP),
            ]
        attn_targets, qv = ("q_proj", "k_proj", "v_proj", "o_proj"), ("q_proj", "v_proj")
    # RMSNorm weight of size h: Llama 2/layer; Gemma 2 adds pre/post feed-forward norms (4/layer).
    norms = 4 if c.model_type == "gemma2" else 2
    # Qwen3 adds per-head q_norm/k_norm of size head_dim (modeling_qwen3.Qwen3Attention).
    qk_norm = 2 * c.head_dim if c.model_type == "qwen3" else 0
    # Mixtral: MixtralExperts.gate_up_proj (E, 2i, h) + down_proj (E, h, i); MixtralTopKRouter.weight (E, h).
    experts = c.num_local_experts * 3 * h * i
    router = c.num_local_experts * h
    params: tuple[Linear, ...] = ()
    if c.num_local_experts:
        # peft/utils/transformers_weight_conversion.py: v4 names gate / w1+w3 / w2 map onto the router
        # weight and the fused expert tensors; "all-linear" adds all three (_resolve_string_target_modules).
        e = c.num_local_experts
        params = (
            Linear(path="mlp.gate", in_features=h, out_features=e, bias=False, block=Block.MLP, aliases=("gate",)),
            Linear(path="mlp.experts.gate_up_proj", in_features=h, out_features=2 * i, bias=False, block=Block.MLP,
                   experts=e, rank_multiplier=2, aliases=("w1", "w3")),
            Linear(path="mlp.experts.down_proj", in_features=i, out_features=h, bias=False, block=Block.MLP,
                   experts=e, aliases=("w2",)),
        )
    return Architecture(
        linears=tuple(attn + mlp),
        param_targets=params,
        norm_params=norms * h + qk_norm,
        norms_per_layer=norms,
        expert_params=experts,
        router_params=router,
        embed_params=c.vocab_size * h,
        final_norm_params=h,
        lm_head_params=0 if c.tie_word_embeddings else c.vocab_size * h,
        attn_targets=attn_targets,
        qv_targets=qv,
        gated_mlp=True,
        norm_has_bias=False,
    )


def _falcon(c: ModelConfig) -> Architecture:
    # modeling_falcon.py: fused query_key_value (q + 2*kv), dense, dense_h_to_4h, dense_4h_to_h; LayerNorm w+b.
    h, kv = c.hidden_size, c.num_key_value_heads * c.head_dim
    b = c.attention_bias
    linears = (
        Linear(path="self_attention.query_key_value", in_features=h, out_features=h + 2 * kv, bias=b, block=Block.ATTN),
        Linear(path="self_attention.dense", in_features=h, out_features=h, bias=b, block=Block.ATTN),
        Linear(path="mlp.dense_h_to_4h", in_features=h, out_features=c.intermediate_size, bias=b, block=Block.MLP),
        Linear(path="mlp.dense_4h_to_h", in_features=c.intermediate_size, out_features=h, bias=b, block=Block.MLP),
    )
    # Falcon-7B (parallel_attn, old architecture): one input_layernorm; 40B/180B new architecture: ln_attn + ln_mlp.
    norms = 2 if (c.new_decoder_architecture or not c.parallel_attn) else 1
    return Architecture(
        linears=linears,
        norm_params=norms * 2 * h,
        norms_per_layer=norms,
        embed_params=c.vocab_size * h,
        final_norm_params=2 * h,
        lm_head_params=0 if c.tie_word_embeddings else c.vocab_size * h,
        attn_targets=("query_key_value", "dense"),
        qv_targets=(),
        gated_mlp=False,
        norm_has_bias=True,
        bnb_quantizable=False,
        sdpa_math=c.num_key_value_heads != c.num_attention_heads,
    )


def _gpt2(c: ModelConfig) -> Architecture:
    # modeling_gpt2.py: Conv1D c_attn (h -> 3h), attn.c_proj, mlp.c_fc, mlp.c_proj, all with bias; wte + wpe.
    h, i = c.hidden_size, c.intermediate_size
    linears = (
        Linear(path="attn.c_attn", in_features=h, out_features=3 * h, bias=True, block=Block.ATTN),
        Linear(path="attn.c_proj", in_features=h, out_features=h, bias=True, block=Block.ATTN),
        Linear(path="mlp.c_fc", in_features=h, out_features=i, bias=True, block=Block.MLP),
        Linear(path="mlp.c_proj", in_features=i, out_features=h, bias=True, block=Block.MLP),
    )
    return Architecture(
        linears=linears,
        norm_params=2 * 2 * h,
        norms_per_layer=2,
        embed_params=c.vocab_size * h + c.max_position_embeddings * h,
        final_norm_params=2 * h,
        lm_head_params=0 if c.tie_word_embeddings else c.vocab_size * h,
        attn_targets=("c_attn", "attn.c_proj"),
        qv_targets=(),
        gated_mlp=False,
        norm_has_bias=True,
    )


@cache
def architecture(config: ModelConfig) -> Architecture:
    """The parameter layout of ``config``'s family."""
    if config.model_type == "falcon":
        return _falcon(config)
    if config.model_type == "gpt2":
        return _gpt2(config)
    return _llama_like(config)


# --------------------------------------------------------------------------- LoRA targets

TARGET_PRESETS = ("all-linear", "attn", "qv")


@cache
def resolve_targets(config: ModelConfig, targets: tuple[str, ...]) -> tuple[Linear, ...]:
    """The modules (and MoE parameters) of one layer that a PEFT ``target_modules`` list selects.

    Presets: ``all-linear`` (PEFT's own preset: every nn.Linear but the output head, plus, for
    transformers-5 MoE models, the router and expert tensors PEFT remaps), ``attn`` (attention
    projections), ``qv`` (q_proj and v_proj). Names match PEFT's rule: the module's full name
    equals the target or ends with ``.`` + target (``check_target_module_exists``).

    Raises:
        PlannerError: a target that matches no module, listing the modules that exist.
    """
    arch = architecture(config)
    names: list[str] = []
    for t in targets:
        if t == "all-linear":
            return arch.linears + arch.param_targets
        if t == "attn":
            names += arch.attn_targets
        elif t == "qv":
            if not arch.qv_targets:
                raise PlannerError(f"{config.model_type} has no separate q/v projections; modules: {_module_list(arch)}")
            names += arch.qv_targets
        else:
            names.append(t)
    chosen: list[Linear] = []
    for name in names:
        hits = [lin for lin in arch.linears if lin.path == name or lin.path.endswith("." + name) or lin.name == name]
        hits += [p for p in arch.param_targets if name in p.aliases]
        if not hits:
            raise PlannerError(f"target {name!r} matches no module of {config.model_type}; modules: {_module_list(arch)}")
        chosen += [h for h in hits if h not in chosen]
    fused = [p for p in arch.param_targets if len(p.aliases) > 1]
    for p in fused:
        named = [a for a in p.aliases if a in names]
        if named and len(named) < len(p.aliases):
            raise PlannerError(f"targets {', '.join(p.aliases)} are fused into {p.name}: target all of them or none")
    everything = arch.linears + arch.param_targets
    return tuple(lin for lin in everything if lin in chosen)


def dropout_allowed(config: ModelConfig, targets: tuple[str, ...]) -> bool:
    """False when ``targets`` include MoE expert tensors (PEFT ``ParamWrapper`` takes no dropout)."""
    return not any(lin.experts > 1 for lin in resolve_targets(config, targets))


def lora_dropout(config: ModelConfig, targets: tuple[str, ...], requested: float | None) -> float:
    """The LoRA dropout to use: ``requested``, or by default 0.05 (the QLoRA scripts' value for large
    models), except 0 where PEFT forbids dropout: ``ParamWrapper`` (MoE expert tensors) raises
    "does not work with lora_dropout != 0" (peft/tuners/lora/layer.py).

    Raises:
        PlannerError: a requested non-zero dropout on targets that PEFT cannot apply it to.
    """
    allowed = dropout_allowed(config, targets)
    if requested is None:
        return 0.05 if allowed else 0.0
    if requested > 0 and not allowed:
        raise PlannerError(
            "PEFT adapts MoE expert tensors with ParamWrapper, which requires --lora-dropout 0 "
            "(or use --targets attn to leave the experts alone)"
        )
    return requested


def peft_target_modules(config: ModelConfig, targets: tuple[str, ...]) -> list[str] | str:
    """What to pass as ``LoraConfig(target_modules=...)`` for ``targets``."""
    if "all-linear" in targets:
        return "all-linear"
    names: list[str] = []
    for lin in resolve_targets(config, targets):
        names += list(lin.aliases) if lin.aliases else [lin.path if _ambiguous(config, lin) else lin.name]
    return names


def _ambiguous(config: ModelConfig, lin: Linear) -> bool:
    return sum(other.name == lin.name for other in architecture(config).linears) > 1


def _module_list(arch: Architecture) -> str:
    names = [lin.name if sum(o.name == lin.name for o in arch.linears) == 1 else lin.path for lin in arch.linears]
    return ", ".join(names + [a for p in arch.param_targets for a in p.aliases])
