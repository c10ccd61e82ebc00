"""Memory terms of one training step, in bytes, each from what the modeled stack allocates.

The modeled stack (current versions): transformers model loaded in ``--dtype``; Trainer/accelerate
``bf16=True`` (forward under ``torch.autocast``); PEFT LoRA with fp32 adapters; for QLoRA
bitsandbytes NF4 ``Linear4bit`` plus ``peft.prepare_model_for_kbit_training``; gradient
checkpointing ``use_reentrant=False`` (transformers 5 default, modeling_utils.py); the step is
``loss.backward(); clip_grad_norm_(1.0); optimizer.step(); zero_grad(set_to_none=True)``.

Sources cited inline:
- [PEFT-cast]  peft/tuners/tuners_utils.py ``cast_adapter_dtype``: adapters upcast to fp32.
- [PEFT-fwd]   peft/tuners/lora/layer.py ``Linear.forward``: ``x = self._cast_input_dtype(x, lora_A.weight.dtype)``
               then ``lora_B(lora_A(dropout(x))) * scaling`` added to the base result.
- [KBIT]       peft/utils/other.py ``prepare_model_for_kbit_training``: every non-4-bit fp16/bf16 param -> fp32.
- [BNB-4bit]   bitsandbytes/nn/modules.py ``Linear4bit.forward`` casts x to compute dtype and the output back
               to x's dtype; bitsandbytes/autograd/_functions.py ``MatMul4Bit`` saves only the packed weight.
- [BNB-quant]  bitsandbytes/functional.py ``quantize_4bit``: packed uint8 (2 values/byte), fp32 absmax per
               ``blocksize`` (64); double quant stores absmax as uint8 with an fp32 absmax per 256 of them.
- [BNB-int8]   bitsandbytes/nn/modules.py ``Int8Params``: int8 weight (CB) plus an fp32 scale per output row
               (SCB); autograd/_functions.py ``MatMul8bitLt`` saves its 16-bit input when a gradient is needed.
- [DORA]       peft/tuners/lora/dora.py ``DoraLinearLayer.forward``: builds ``lora_B(lora_A(eye(in)))`` (fp32)
               and ``W + scaling * lora_weight`` to take the weight norm every forward, and saves the base
               and LoRA results for the magnitude's gradient.
- [BNB-optim]  bitsandbytes/optim/optimizer.py ``Optimizer2State.init_state``: 8-bit state uint8 with fp32
               absmax per 256-element block; tensors under ``min_8bit_size`` (4096) and 32-bit optimizers
               keep fp32 state; paged state is CUDA managed memory (outside torch's allocator).
- [AUTOGRAD]   torch autograd saves a matmul input only when the other operand needs a gradient (a frozen
               weight's input is not saved) - checked in tests/test_memory.py with saved_tensors_hooks.
- [AUTOCAST]   CUDA autocast op lists (torch.amp docs): linear/matmul/SDPA run in bf16 (inputs cast,
               casts of leaf params that require grad are cached for the autocast region); layer_norm,
               softmax, log_softmax, pow run in fp32.
- [SDPA]       torch flash / memory-efficient SDPA backward saves q, k, v, out and fp32 logsumexp
               (b, heads, s); transformers' sdpa_attention_forward uses ``enable_gqa`` without repeating
               k/v when there is no mask (integrations/sdpa_attention.py ``use_gqa_in_sdpa``).
- [FA-bwd]     flash-attention backward allocates an fp32 ``dq_accum`` (b, s, heads, head_dim)
               (aten/src/ATen/native/transformers/cuda/flash_attn/flash_api.cpp ``mha_bwd``).
- [LOSS]       transformers/loss/loss_utils.py ``ForCausalLMLoss``: ``logits = logits.float()`` then
               ``cross_entropy`` = log_softmax (saves its fp32 output) + nll_loss.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.model.architecture import Architecture, Linear, architecture, lora_dropout, resolve_targets
from planner.catalog import runtime_constants
from planner.model.params import (
    adapter_params,
    quantizable_weight_params,
    quantized_tensor_count,
    stacked_rank,
    total_params,
)
from planner.specs import Attn, DType, Method, ModelConfig, Optim, TrainSpec

FP32_BYTES = 4.0
INDEX_BYTES = 8.0  # int64 token ids / indices
MASK_BYTES = 1.0  # torch.bool dropout mask (native_dropout)


# --------------------------------------------------------------------------- dtypes


@dataclass(frozen=True)
class Dtypes:
    """Bytes per element of the tensors that matter, for one :class:`TrainSpec`."""

    compute: float
    """Matmul outputs under autocast (or the weight dtype without autocast)."""
    stream: float
    """Residual stream / embedding output: the dtype of the non-quantized params."""
    other_param: float
    """Norms, embeddings, lm_head, biases, experts."""
    linear_weight: float
    """Decoder-layer linear weights (0.5 + constants for NF4)."""
    trainable: float
    """Trainable params and their gradients."""
    autocast: bool
    frozen_base: bool


def nf4_bytes_per_param(double_quant: bool) -> float:
    """Bytes per weight of bitsandbytes NF4 storage [BNB-quant]: 4 bits plus blockwise absmax."""
    nf4 = runtime_constants()["nf4"]
    block = float(nf4["blocksize"])
    if not double_quant:
        return 4 / 8 + FP32_BYTES / block
    block2 = float(nf4["double_quant_blocksize"])
    return 4 / 8 + 1.0 / block + FP32_BYTES / (block * block2)


def dtypes(train: TrainSpec) -> Dtypes:
    """Element sizes for ``train`` (see module docstring for the stack)."""
    c = train.dtype.bytes_per_element
    autocast = train.dtype is not DType.FP32
    if train.method is Method.QLORA:
        # [KBIT]: everything not quantized becomes fp32, so the embeddings feed an fp32 residual stream;
        # without it (current TRL SFTTrainer) they stay in the loaded 16-bit dtype.
        linear = nf4_bytes_per_param(train.double_quant) if train.quant_bits == 4 else 1.0  # [BNB-int8]
        other = FP32_BYTES if train.kbit_prepare else c
        return Dtypes(c, other, other, linear, FP32_BYTES, autocast, True)
    if train.method is Method.LORA:
        # [PEFT-cast]: adapters (the trainable params) are fp32. --fp32-master: base kept in fp32.
        base = FP32_BYTES if train.fp32_master else c
        return Dtypes(c, base, base, base, FP32_BYTES, autocast, True)
    master = FP32_BYTES if train.fp32_master else c
    return Dtypes(c, master, master, master, master, autocast, False)


# --------------------------------------------------------------------------- states


def weight_bytes(config: ModelConfig, train: TrainSpec) -> float:
    """Base-model weights (adapters excluded)."""
    d = dtypes(train)
    quantized = quantizable_weight_params(config)
    other = total_params(config) - quantized
    per_tensor = 0.0
    if train.method is Method.QLORA and train.quant_bits == 8:
        # [BNB-int8]: one fp32 scale (SCB) per output row of every int8 weight.
        per_tensor = config.num_hidden_layers * sum(lin.out_features for lin in architecture(config).linears) * FP32_BYTES
    elif train.method is Method.QLORA and train.double_quant:
        # [BNB-quant]: each double-quantized tensor also keeps a 256-entry fp32 code and an fp32 offset.
        per_tensor = quantized_tensor_count(config) * (256 + 1) * FP32_BYTES
    return quantized * d.linear_weight + other * d.other_param + per_tensor


def trainable_params(config: ModelConfig, train: TrainSpec) -> int:
    return total_params(config) if train.method is Method.FULL else adapter_params(config, train)


def adapter_bytes(config: ModelConfig, train: TrainSpec) -> float:
    """LoRA/DoRA adapter weights, fp32 [PEFT-cast]. Zero for full fine-tuning."""
    if train.method is Method.FULL:
        return 0.0
    return adapter_params(config, train) * dtypes(train).trainable


def gradient_bytes(config: ModelConfig, train: TrainSpec) -> float:
    """One gradient per trainable parameter, in the parameter's dtype."""
    return trainable_params(config, train) * dtypes(train).trainable


@dataclass(frozen=True)
class TrainableTensor:
    """One kind of trainable tensor: its shape, how many there are, and whether it is an ``nn.Embedding`` weight."""

    shape: tuple[int, ...]
    count: int
    embedding: bool = False

    @property
    def numel(self) -> int:
        n = 1
        for dim in self.shape:
            n *= dim
        return n


def _trainable_tensors(config: ModelConfig, train: TrainSpec) -> list[TrainableTensor]:
    """Every trainable tensor by shape, for the optimizers' per-tensor rules (8-bit thresholds, factoring)."""
    layers = config.num_hidden_layers
    h, i, e = config.hidden_size, config.intermediate_size, config.num_local_experts
    if train.method is Method.FULL:
        arch = architecture(config)
        norm_tensors = 2 if arch.norm_has_bias else 1  # LayerNorm weight and bias
        tensors = [TrainableTensor((lin.out_features, lin.in_features), layers) for lin in arch.linears]
        tensors += [TrainableTensor((lin.out_features,), layers) for lin in arch.linears if lin.bias]
        tensors += [TrainableTensor((h,), layers * arch.norms_per_layer * norm_tensors)]
        if arch.expert_params:  # MixtralExperts gate_up_proj (E, 2i, h), down_proj (E, h, i); router (E, h)
            tensors += [TrainableTensor((e, 2 * i, h), layers), TrainableTensor((e, h, i), layers),
                        TrainableTensor((e, h), layers)]
        token_embed = config.vocab_size * h
        tensors += [TrainableTensor((config.vocab_size, h), 1, embedding=True), TrainableTensor((h,), norm_tensors)]
        if arch.embed_params > token_embed:  # GPT-2 learned positions (an nn.Embedding too)
            tensors += [TrainableTensor(((arch.embed_params - token_embed) // h, h), 1, embedding=True)]
        if arch.lm_head_params:
            tensors += [TrainableTensor((config.vocab_size, h), 1)]
        return tensors
    tensors = []
    for lin in resolve_targets(config, train.targets):
        r = stacked_rank(lin, train.rank)
        tensors += [TrainableTensor((r, lin.in_features), layers), TrainableTensor((lin.out_features, r), layers)]
        if train.dora:
            tensors += [TrainableTensor((lin.out_features,), layers)]
    return tensors


@dataclass(frozen=True)
class OptimizerMemory:
    state_bytes: float
    """Persistent optimizer state in torch's allocator."""
    paged_bytes: float
    """Persistent state in CUDA managed memory (bitsandbytes paged optimizers): on the device, outside torch."""
    step_transient_bytes: float
    """Extra bytes alive only inside ``optimizer.step()``."""


def optimizer_memory(config: ModelConfig, train: TrainSpec) -> OptimizerMemory:
    """Optimizer state after the first step, and the transient inside ``step()``."""
    d = dtypes(train)
    n = trainable_params(config, train)
    optim = train.optim
    if optim is Optim.ADAMW:
        # torch.optim.AdamW: exp_avg and exp_avg_sq = zeros_like(param) -> the param dtype. Trainer's default
        # "adamw_torch_fused" (training_args.py, torch>=2.8) updates in place: no step transient.
        return OptimizerMemory(2 * n * d.trainable, 0.0, 0.0)
    if optim is Optim.SGD:
        # Trainer "sgd" = torch.optim.SGD with momentum 0: no state.
        return OptimizerMemory(0.0, 0.0, 0.0)
    if optim is Optim.ADAFACTOR:
        return _adafactor(config, train)
    # bitsandbytes AdamW8bit / PagedAdamW / PagedAdamW8bit [BNB-optim].
    consts = runtime_constants()["bnb_8bit_optimizer"]
    block, min_8bit = float(consts["blocksize"]), consts["min_8bit_size"]
    # Optimizer8bit.get_state_buffer: only tensors of at least 1e5 elements get paged buffers;
    # smaller ones are plain torch allocations even for paged optimizers.
    paged_min = consts["paged_min_numel"] if optim.paged else None
    eight_bit = optim in (Optim.ADAMW_8BIT, Optim.PAGED_ADAMW_8BIT)
    state = paged = 0.0
    for t in _trainable_tensors(config, train):
        numel, count = t.numel, t.count
        # transformers Trainer.create_optimizer: for bitsandbytes 8-bit optimizers every nn.Embedding
        # weight gets ``register_module_override(module, "weight", {"optim_bits": 32})``.
        if eight_bit and numel >= min_8bit and not t.embedding:
            per_param = 2 * (1.0 + FP32_BYTES / block)  # uint8 state1/state2 + fp32 absmax per block
        else:
            per_param = 2 * FP32_BYTES
        if paged_min is not None and numel >= paged_min:
            paged += numel * count * per_param
        else:
            state += numel * count * per_param
    return OptimizerMemory(state, paged, 0.0)


def _adafactor(config: ModelConfig, train: TrainSpec) -> OptimizerMemory:
    """transformers.optimization.Adafactor (beta1=None): factored fp32 second moment.

    Matrices keep a row and a column vector (``exp_avg_sq_row``/``_col``), vectors a full
    ``exp_avg_sq``; all fp32 because ``step()`` upcasts the gradient first. Inside ``step()`` each
    16-bit parameter gets fp32 copies of its gradient and data, ``grad**2 + eps`` and the update
    (4 x 4 bytes x numel) one tensor at a time, so the transient is set by the largest tensor.
    """
    state = 0.0
    largest = 0
    for t in _trainable_tensors(config, train):
        largest = max(largest, t.numel)
        if len(t.shape) >= 2:  # Adafactor._get_options: factored when ndim >= 2
            rows = t.numel // t.shape[-1]  # exp_avg_sq_row: shape[:-1]
            cols = t.numel // t.shape[-2]  # exp_avg_sq_col: shape[:-2] + shape[-1:]
            state += t.count * (rows + cols) * FP32_BYTES
        else:
            state += t.count * t.numel * FP32_BYTES
    # Adafactor.step holds fp32 grad, fp32 param, grad**2 + eps and the update together (the first two
    # are copies only for 16-bit params).
    copies = 4.0 if dtypes(train).trainable < FP32_BYTES else 2.0
    return OptimizerMemory(state, 0.0, copies * FP32_BYTES * largest)


# --------------------------------------------------------------------------- activations


@dataclass(frozen=True)
class Activations:
    """Saved-for-backward bytes and the transients around them, for the whole micro-batch."""

    per_layer_bytes: float
    """Saved tensors of one decoder layer (no checkpointing)."""
    checkpoint_bytes: float
    """With checkpointing: the saved input of one decoder layer."""
    outside_layers_bytes: float
    """Saved outside the decoder layers (final norm, token ids, rotary tables)."""
    layer_backward_transient_bytes: float
    """Gradients in flight while one layer runs backward."""
    forward_transient_bytes: float
    """Largest short-lived tensor of a layer's forward (eager attention scores, fp32 casts)."""

    def saved_total(self, layers: int, grad_ckpt: bool) -> float:
        per = self.checkpoint_bytes if grad_ckpt else self.per_layer_bytes
        return layers * per + self.outside_layers_bytes


def _lora_saved_per_token(lin: Linear, train: TrainSpec, d: Dtypes, dropout: float) -> float:
    """Bytes per token a LoRA-wrapped module saves beyond its frozen base [PEFT-fwd].

    ``x.to(fp32)`` then ``dropout`` (saves a bool mask when p > 0) then ``lora_A`` under autocast,
    which saves its bf16-cast input; ``lora_B`` saves ``lora_A``'s output.
    """
    in_b = d.compute if d.autocast else FP32_BYTES
    mask = MASK_BYTES if dropout > 0 else 0.0
    saved = lin.in_features * (in_b + mask) + train.rank * in_b
    if train.dora:
        # [DORA]: (m / ||W + dW|| - 1) * base_result + (m / ||.||) * lora_result saves both results.
        saved += 2 * lin.out_features * d.compute
    return saved


def _linear_out_bytes(d: Dtypes, in_bytes: float, quantized: bool) -> float:
    """Element size of a linear layer's output."""
    if quantized:
        return in_bytes  # [BNB-4bit] output cast back to the input dtype
    return d.compute if d.autocast else d.other_param


def activations(config: ModelConfig, train: TrainSpec) -> Activations:
    """Saved activations of one training step for ``config`` x ``train``.

    Per decoder layer this walks the forward of the transformers module and sums what autograd
    keeps (see module docstring). Everything is bytes for the whole micro-batch.
    """
    arch = architecture(config)
    d = dtypes(train)
    b, s = float(train.micro_batch), float(train.seq_len)
    tokens = b * s
    h = float(config.hidden_size)
    heads = float(config.num_attention_heads)
    q_dim = heads * config.head_dim
    kv_dim = float(config.num_key_value_heads * config.head_dim)
    c = d.compute
    quantized = train.method is Method.QLORA and arch.bnb_quantizable
    full = train.method is Method.FULL
    targets = set(resolve_targets(config, train.targets)) if not full else set()
    dropout = 0.0 if full else lora_dropout(config, train.targets, train.lora_dropout)
    by_name = {lin.name: lin for lin in arch.linears}
    layernorm = arch.norm_has_bias

    def norm_saved() -> tuple[float, float]:
        """(saved bytes/token, output bytes/element) of one norm."""
        if layernorm:
            # F.layer_norm runs in fp32 under CUDA autocast [AUTOCAST]: saves the fp32 input plus
            # mean/rstd; the output is fp32.
            saved = h * FP32_BYTES + 2 * FP32_BYTES
            out = FP32_BYTES if d.autocast else d.stream
        else:
            # LlamaRMSNorm: hidden.to(fp32) is saved by pow(2) and the mul by rsqrt (one tensor),
            # plus the fp32 rsqrt per token; weight * x.to(input_dtype) saves nothing for a frozen weight.
            saved = h * FP32_BYTES + FP32_BYTES
            out = d.stream
        if full:
            saved += h * out  # trainable norm weight: the mul also saves the normalized input
        return saved, out

    def linears_saved(group: list[Linear], in_bytes: float) -> float:
        """Saved bytes/token for linears that read the same input tensor."""
        saved = sum(_lora_saved_per_token(lin, train, d, dropout) for lin in group if lin in targets)
        if quantized and train.quant_bits == 8:
            saved += group[0].in_features * c  # [BNB-int8] MatMul8bitLt keeps its (shared) 16-bit input
        if full:
            lin_in = c if d.autocast else in_bytes
            # [AUTOGRAD] a trainable weight needs its input: one shared tensor when no cast is
            # needed, else one autocast copy per linear (casts of non-leaf tensors are not cached).
            copies = 1 if lin_in == in_bytes else len(group)
            saved += copies * group[0].in_features * lin_in
        return saved

    per_token = 0.0
    attn_lins = [lin for lin in arch.linears if lin.block.value == "attn"]
    mlp_lins = [lin for lin in arch.linears if lin.block.value == "mlp"]
    qkv, out_proj = attn_lins[:-1], attn_lins[-1]

    # --- attention block
    n1_saved, n1_out = norm_saved()
    per_token += n1_saved + linears_saved(qkv, n1_out)
    proj_out = _linear_out_bytes(d, n1_out, quantized)
    qkv_b = c if d.autocast else proj_out  # SDPA inputs are cast to the compute dtype [AUTOCAST]
    if train.attn is Attn.EAGER:
        # eager_attention_forward: repeat_kv copies k/v to every head; matmul saves q and k; softmax
        # (fp32) saves its output; the bf16 copy of the probabilities and v are saved by the 2nd matmul.
        per_token += qkv_b * (q_dim + 2 * q_dim)
        per_token += heads * s * (FP32_BYTES + c)
    elif arch.sdpa_math:
        # SDPA's math kernel (aten _scaled_dot_product_attention_math) upcasts 16-bit q, k, v to fp32
        # and saves the fp32 scaled q, k, v and softmax probabilities (b, heads, s, s); no logsumexp.
        per_token += FP32_BYTES * (q_dim + 2 * kv_dim) + heads * s * FP32_BYTES
    else:
        per_token += qkv_b * (q_dim + 2 * kv_dim)  # q, k, v [SDPA]
        per_token += c * q_dim + heads * FP32_BYTES  # out + logsumexp [SDPA]
    per_token += linears_saved([out_proj], c)

    # --- MLP block (Falcon's parallel attention shares the first norm)
    parallel = config.model_type == "falcon" and config.parallel_attn and not config.new_decoder_architecture
    if parallel:
        n2_out = n1_out
    else:
        n2_saved, n2_out = norm_saved()
        per_token += n2_saved
    act_b = _linear_out_bytes(d, n2_out, quantized)  # MLP intermediates (up/gate outputs) and their gradients
    expert_weight_bytes = 0.0
    if arch.expert_params:
        per_token += _moe_saved_per_token(config, d, n2_out)
        expert_weight_bytes, expert_inputs = _moe_adapted_saved(config, arch, train, d, targets)
        per_token += expert_inputs
    else:
        up_group, down = mlp_lins[:-1], mlp_lins[-1]
        per_token += linears_saved(up_group, n2_out)
        inter = float(config.intermediate_size)
        if arch.gated_mlp:
            # act_fn(gate) saves gate; act * up saves both factors: gate, act(gate), up.
            per_token += 3 * inter * act_b
        elif config.model_type == "gpt2":
            # NewGELUActivation (python tanh formula, transformers/activations.py): pow saves x, tanh
            # saves its output, the final product saves 0.5*x and (1 + tanh). Under CUDA autocast pow
            # runs in fp32 [AUTOCAST], so x's saved copy, tanh's output and (1 + tanh) are fp32.
            per_token += inter * (3 * FP32_BYTES + act_b) if d.autocast else 4 * inter * act_b
        else:
            per_token += inter * act_b  # F.gelu saves its input
        per_token += linears_saved([down], act_b)
        if config.model_type == "gemma2":
            per_token += 2 * (h * FP32_BYTES + FP32_BYTES)  # pre/post feed-forward RMSNorms
            per_token += h * FP32_BYTES + FP32_BYTES  # post_attention_layernorm output norm

    per_layer = tokens * per_token + expert_weight_bytes
    # With checkpointing (torch.utils.checkpoint, non-reentrant) a layer keeps only its input.
    checkpoint = tokens * h * d.stream

    # Outside the layers: final norm; token ids and labels (+ the shifted label copy in
    # ForCausalLMLoss); rotary cos/sin shared by every layer (b=1 x s x head_dim each, stream dtype).
    final_saved, final_out = norm_saved()
    outside = tokens * final_saved + 3 * tokens * INDEX_BYTES
    if config.model_type != "gpt2" and config.model_type != "falcon":
        outside += 2 * s * config.head_dim * d.stream
    if full:
        outside += tokens * h * (c if d.autocast else final_out)  # lm_head input, for its weight grad

    # Backward of one layer: the incoming residual gradient and the branch gradient (stream dtype),
    # plus the larger of the MLP's three intermediate gradients and attention's dq/dk/dv with the
    # fp32 dq accumulator [FA-bwd].
    ffn = float(config.intermediate_size)
    if arch.expert_params:
        ffn *= config.num_experts_per_tok
    mlp_bwd = 3 * ffn * act_b
    attn_bwd = c * (q_dim + 2 * kv_dim) + FP32_BYTES * q_dim
    bwd = tokens * (2 * h * d.stream + max(mlp_bwd, attn_bwd))

    fwd = 0.0
    if train.dora and targets:
        # [DORA]: eye(in) and lora_B(lora_A(eye)) in fp32, then W + scaling * dW in the compute dtype.
        fwd = max(
            lin.in_features * lin.in_features * FP32_BYTES + lin.in_features * lin.out_features * (FP32_BYTES + 2 * c)
            for lin in targets
        )
    if train.attn is Attn.EAGER:
        # scores = q @ k^T, then * scaling and + mask: two more (b, heads, s, s) compute-dtype tensors
        # alive before softmax; plus the 4-D float mask built once per forward.
        fwd = max(fwd, b * heads * s * s * 2 * c + b * s * s * c)
    return Activations(per_layer, checkpoint, outside, bwd, fwd)


def _moe_saved_per_token(config: ModelConfig, d: Dtypes, in_bytes: float) -> float:
    """Mixtral sparse MoE block (modeling_mixtral.py, transformers 5), per token.

    Router: F.linear -> softmax(float) saves the fp32 probs; topk indices. Experts loop: for each
    routed (token, expert) pair, gate_up output (2i, kept whole because both chunks are saved), the
    activation output (i), and the down output (h) saved by the routing-weight multiply; indices.
    """
    k = float(config.num_experts_per_tok)
    e = float(config.num_local_experts)
    i, h = float(config.intermediate_size), float(config.hidden_size)
    c = d.compute if d.autocast else d.other_param
    router = e * (FP32_BYTES + c) + k * (INDEX_BYTES + FP32_BYTES)
    experts = k * (c * (2 * i + i + h) + 3 * INDEX_BYTES)
    return router + experts


def _moe_adapted_saved(
    config: ModelConfig, arch: Architecture, train: TrainSpec, d: Dtypes, targets: set[Linear]
) -> tuple[float, float]:
    """(bytes per layer, bytes per token) that MoE expert weights add to the saved tensors.

    - LoRA on an expert tensor (PEFT ``ParamWrapper`` with ``_LoraFactorsProxy``,
      peft/tuners/lora/layer.py): each forward materializes ``baddbmm(W, B, A)``, the full merged
      (E, out, in) tensor in W's dtype, cached by ``parametrize.cached()``; autograd keeps it (the
      expert matmuls need it for the input gradient) and, since the weight now needs a gradient,
      also the expert matmul inputs.
    - A frozen expert tensor that is not in the compute dtype (QLoRA: fp32 after [KBIT]; experts
      are not quantized) is cast per expert by autocast, and the cast is saved [AUTOCAST].
    """
    e, k = float(config.num_local_experts), float(config.num_experts_per_tok)
    h, i = float(config.hidden_size), float(config.intermediate_size)
    c = d.compute if d.autocast else d.other_param
    cast = d.autocast and d.other_param != d.compute
    per_layer = per_token = 0.0
    for p in arch.param_targets:
        if p.experts == 1:
            continue
        numel = e * p.in_features * p.out_features
        if p in targets:
            per_layer += numel * d.other_param + (numel * c if cast else 0.0)
            per_token += k * p.in_features * c
        elif cast:
            per_layer += numel * c
    return per_layer, per_token


# --------------------------------------------------------------------------- logits and loss


@dataclass(frozen=True)
class LogitsMemory:
    forward_bytes: float
    """Alive at the end of the loss forward: compute-dtype logits, the fp32 copy, log_softmax output."""
    backward_bytes: float
    """Alive inside cross-entropy backward: saved log_softmax output, its gradient, the input gradient."""
    saved_weight_bytes: float
    """An autocast copy of a frozen fp32 lm_head saved for backward (QLoRA after [KBIT], LoRA with --fp32-master)."""


def logits_memory(config: ModelConfig, train: TrainSpec) -> LogitsMemory:
    """lm_head output and the cross-entropy over it, for every position [LOSS]."""
    d = dtypes(train)
    n = float(train.micro_batch * train.seq_len) * config.vocab_size
    logits_b = d.compute if d.autocast else d.other_param
    # ``logits.float()`` copies only when the logits are not already fp32.
    upcast = FP32_BYTES if logits_b < FP32_BYTES else 0.0
    forward = n * (logits_b + upcast + FP32_BYTES)
    if config.final_logit_softcapping:
        # Gemma 2: logits / cap -> tanh (saves its output) -> * cap: two more compute-dtype tensors.
        forward += 2 * n * logits_b
    backward = 3 * n * FP32_BYTES
    saved_weight = 0.0
    if d.autocast and d.other_param > d.compute and train.method is not Method.FULL:
        # The frozen fp32 lm_head is cast to bf16 by autocast; the cast is saved to compute the
        # hidden-state gradient [AUTOCAST] (not cached: frozen params are not cached).
        saved_weight = config.vocab_size * config.hidden_size * d.compute
    return LogitsMemory(forward, backward, saved_weight)


def autocast_weight_copy_bytes(config: ModelConfig, train: TrainSpec) -> float:
    """fp32 weights under bf16 autocast (``--fp32-master``): every decoder matmul weight gets a bf16 copy
    [AUTOCAST]. Trainable leaves (full fine-tuning) are cast once and cached for the forward region,
    with the lm_head; frozen ones (LoRA base) are cast per op. Without checkpointing autograd saves
    each copy until its layer's backward; with it they live through the forward only (the
    estimator places them accordingly). The frozen fp32 lm_head's copy is in :func:`logits_memory`."""
    if train.method is Method.QLORA or not train.fp32_master or not dtypes(train).autocast:
        return 0.0
    arch = architecture(config)
    matmul_weights = config.num_hidden_layers * (sum(lin.weight_params for lin in arch.linears) + arch.expert_params)
    if train.method is Method.FULL:
        matmul_weights += config.vocab_size * config.hidden_size
    return matmul_weights * dtypes(train).compute


def qlora_dequant_transient_bytes(config: ModelConfig, train: TrainSpec) -> float:
    """QLoRA: each 4-bit matmul dequantizes its weight to a temporary 16-bit tensor, forward and
    backward [BNB-4bit]; the largest one is the transient. (int8 multiplies int8 directly.)"""
    if train.method is not Method.QLORA or train.quant_bits != 4:
        return 0.0
    return max(lin.weight_params for lin in architecture(config).linears) * dtypes(train).compute


def lm_head_grad_bytes(config: ModelConfig, train: TrainSpec) -> float:
    """Full fine-tuning: the first parameter gradient backward produces (lm_head / tied embedding)."""
    return config.vocab_size * config.hidden_size * dtypes(train).trainable
