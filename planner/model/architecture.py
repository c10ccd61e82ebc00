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

from planner.specs import Frozen, ModelConfig


class Block(str, Enum):
    ATTN = "attn"
    MLP = "mlp"


class MlpActivation(str, Enum):
    """What the MLP's activation saves for backward."""

    SWIGLU = "swiglu"
    """``act_fn(gate) * up``: saves gate, act(gate) and up."""
    GELU = "gelu"
    """``F.gelu``: saves its input."""
    GELU_TANH_PYTHON = "gelu_tanh_python"
    """GPT-2 ``NewGELUActivation`` (python tanh formula, transformers/activations.py): several saved tensors."""


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

    def per_expert_linears(self) -> tuple[Linear, ...]:
        """The ``nn.Linear`` modules of ONE expert that this 3-D expert tensor is in transformers 4.x (v4.44.2
        modeling_mixtral.py ``MixtralBlockSparseTop2MLP``: ``w1``/``w3`` (h -> i) for the fused gate_up tensor,
        ``w2`` (i -> h) for down); PEFT adapts each as a plain LoRA ``Linear``. ``()`` for a non-expert target."""
        if self.experts == 1:
            return ()
        base = self.path.rsplit(".", 1)[0]
        out = self.out_features // len(self.aliases)
        return tuple(Linear(path=f"{base}.{a}", in_features=self.in_features, out_features=out, bias=self.bias,
                            block=self.block) for a in self.aliases)

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
    norm_has_bias: bool
    bnb_quantizable: bool = True
    """False when bitsandbytes leaves the linears alone: transformers' ``replace_with_bnb_linear``
    (integrations/bitsandbytes.py) converts only ``type(module) is nn.Linear`` or ``Conv1D``, and
    Falcon's layers are the ``FalconLinear`` subclass."""
    sdpa_math: bool = False
    """SDPA falls back to the math kernel (saves the s x s probabilities): Falcon calls SDPA with fewer
    k/v heads than query heads and no ``enable_gqa``, which flash/memory-efficient kernels refuse."""
    mlp_activation: MlpActivation = MlpActivation.SWIGLU
    mlp_shares_attn_norm: bool = False
    """Falcon-7B's parallel attention: the MLP reads the attention block's ``input_layernorm`` output."""
    extra_rmsnorms_per_layer: int = 0
    """RMSNorms beyond the attention and MLP input norms whose fp32 input autograd saves (Gemma 2:
    ``post_attention_layernorm``, ``pre_feedforward_layernorm``, ``post_feedforward_layernorm`` around a
    ``pre_feedforward`` input norm, modeling_gemma2.py ``Gemma2DecoderLayer.forward``)."""
    rotary_tables: bool = True
    """The model builds rotary cos/sin tables once per forward and every layer saves them (Llama-style
    ``rotary_emb``); GPT-2 learns positions, Falcon's rotary is applied inside its attention."""

    @property
    def gated_mlp(self) -> bool:
        return self.mlp_activation is MlpActivation.SWIGLU

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
        norm_has_bias=False,
        extra_rmsnorms_per_layer=3 if c.model_type == "gemma2" else 0,
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
        norm_has_bias=True,
        bnb_quantizable=False,
        sdpa_math=c.num_key_value_heads != c.num_attention_heads,
        mlp_activation=MlpActivation.GELU,
        mlp_shares_attn_norm=c.parallel_attn and not c.new_decoder_architecture,
        rotary_tables=False,
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
        norm_has_bias=True,
        mlp_activation=MlpActivation.GELU_TANH_PYTHON,
        rotary_tables=False,
    )


@cache
def architecture(config: ModelConfig) -> Architecture:
    """The parameter layout of ``config``'s family."""
    if config.model_type == "falcon":
        return _falcon(config)
    if config.model_type == "gpt2":
        return _gpt2(config)
    return _llama_like(config)
