"""The memory context: everything an estimate's terms read, resolved once per estimate.

A :class:`Context` holds the model config and its architecture table, the resolved LoRA targets and
dropout, the element sizes (:class:`Dtypes`) that follow from the training spec and the stack, the
stack itself and the optimizer's row of the optimizer table. Term functions take a ``Context`` and
return bytes; none of them re-derives any of this.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.catalog import runtime_constants
from planner.errors import PlannerError
from planner.model.architecture import Architecture, Linear, architecture
from planner.model.params import adapter_params, total_params
from planner.model.targets import lora_dropout, resolve_targets
from planner.specs import Attn, DType, Method, ModelConfig, TrainSpec
from planner.stack.optimizers import OptimizerInfo, optimizer_info
from planner.stack.stack import AdapterDtype, KbitPrepare, Stack, default_stack

FP32_BYTES = 4.0
FP16_BYTES = 2.0
INDEX_BYTES = 8.0
"""int64 token ids / indices."""
MASK_BYTES = 1.0
"""torch.bool dropout mask (native_dropout)."""


@dataclass(frozen=True)
class Dtypes:
    """Bytes per element of the tensors that matter, for one :class:`TrainSpec` on one stack."""

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
    embedding: float
    """Token embeddings and the lm_head: ``other_param`` except where a trainer recasts them (TRL < 0.26)."""


def nf4_bytes_per_param(double_quant: bool) -> float:
    """Bytes per weight of bitsandbytes NF4 storage: 4 bits plus blockwise absmax.

    bitsandbytes v0.50.2 ``functional.py`` ``quantize_4bit``: packed uint8 (2 values/byte), an fp32 absmax per
    ``blocksize`` (64) values; double quantization stores the absmax as uint8 with an fp32 absmax per 256 of them
    (constants in ``profiles/runtime.json`` ``nf4``).
    """
    nf4 = runtime_constants()["nf4"]
    block = float(nf4["blocksize"])
    if not double_quant:
        return 4 / 8 + FP32_BYTES / block
    block2 = float(nf4["double_quant_blocksize"])
    return 4 / 8 + 1.0 / block + FP32_BYTES / (block * block2)


def dtypes(train: TrainSpec, stack: Stack) -> Dtypes:
    """Element sizes for ``train`` on ``stack``.

    - QLoRA: ``prepare_model_for_kbit_training`` (``--kbit-prepare``) upcasts every non-quantized
      param to fp32, so the residual stream is fp32; without it (current TRL ``SFTTrainer``) they stay in
      the loaded 16-bit dtype. TRL < 0.26 recasts the embeddings/lm_head (and before 0.9 the adapters) to
      bf16 afterwards; TRL 0.25's own prepare upcasts only the norms (stack ``kbit_prepare``). LLM.int8
      weights are 1 byte.
    - LoRA: the stack's adapter dtype (PEFT >= 0.12: fp32); ``--fp32-master`` keeps the base in fp32.
    - Full: the weights (and their gradients and AdamW state) in ``--dtype``, or fp32 with ``--fp32-master``.
    """
    c = train.dtype.bytes_per_element
    autocast = train.dtype is not DType.FP32
    # PEFT < 0.12 casts LoRA adapters to a floating-point base weight's dtype (a 4-bit base is uint8: QLoRA
    # adapters stay fp32); current TRL casts a quantized model's trainable params to bf16.
    lora_base = FP32_BYTES if train.fp32_master else c
    adapter = lora_base if stack.adapter_dtype is AdapterDtype.BASE and train.method is Method.LORA else FP32_BYTES
    if train.method is Method.QLORA:
        linear = nf4_bytes_per_param(train.double_quant) if train.quant_bits == 4 else 1.0
        kp = stack.kbit_prepare
        # TRL < 0.26 runs peft_module_casting_to_bf16 after get_peft_model when args.bf16 (trl/trainer/utils.py):
        # embeddings/lm_head fp32 -> bf16, norms fp32, and before 0.9 every LoRA layer -> bf16.
        recast = train.dtype is DType.BF16
        if kp is KbitPrepare.CAST_TRAINABLE_BF16 or (kp is KbitPrepare.UPCAST_FP32_HEAD_ADAPTERS_BF16 and recast):
            adapter = c
        other = FP32_BYTES if train.kbit_prepare and kp is not KbitPrepare.UPCAST_NORMS_FP32 else c
        # The fp32 norms' outputs (fp32 weight x 16-bit input) make the residual stream fp32 from the first
        # layer on, whether or not the embeddings were upcast.
        stream = FP32_BYTES if train.kbit_prepare else c
        head_recast = kp is KbitPrepare.UPCAST_NORMS_FP32 or (recast and kp in (
            KbitPrepare.UPCAST_FP32_HEAD_BF16, KbitPrepare.UPCAST_FP32_HEAD_ADAPTERS_BF16))
        return Dtypes(c, stream, other, linear, adapter, autocast, True, embedding=c if head_recast else other)
    if train.method is Method.LORA:
        base = FP32_BYTES if train.fp32_master else c
        return Dtypes(c, base, base, base, adapter, autocast, True, embedding=base)
    master = FP32_BYTES if train.fp32_master else c
    return Dtypes(c, master, master, master, master, autocast, False, embedding=master)


@dataclass(frozen=True)
class Context:
    """One estimate's inputs, resolved once: config, architecture, targets, dropout, dtypes, stack, optimizer."""

    config: ModelConfig
    train: TrainSpec
    arch: Architecture
    targets: tuple[Linear, ...]
    """Adapted modules of one layer (empty for full fine-tuning)."""
    target_paths: frozenset[str]
    """Their paths, for membership tests."""
    dropout: float
    """LoRA dropout actually applied (0 for full fine-tuning)."""
    d: Dtypes
    stack: Stack
    optimizer: OptimizerInfo
    total_params: int
    """Base-model parameters (tied embeddings once)."""
    trainable_params: int
    """Parameters the optimizer updates (all of them for full fine-tuning, else the adapters)."""

    def adapted(self, lin: Linear) -> bool:
        """Whether ``lin`` carries a LoRA adapter."""
        return lin.path in self.target_paths

    @property
    def full(self) -> bool:
        return self.train.method is Method.FULL

    @property
    def qlora(self) -> bool:
        return self.train.method is Method.QLORA

    @property
    def quantized_linears(self) -> bool:
        """QLoRA and bitsandbytes actually quantizes this family's linears (transformers 4.x also quantizes
        ``nn.Linear`` subclasses such as FalconLinear: the stack's ``subclass_linears_quantized``)."""
        return self.qlora and (self.arch.bnb_quantizable or self.stack.flag("subclass_linears_quantized"))

    @property
    def lm_head_quantized(self) -> bool:
        """QLoRA on a stack that also quantizes the untied lm_head (litgpt's ``BitsandbytesPrecision``)."""
        return self.qlora and self.arch.lm_head_params > 0 and self.stack.flag("lm_head_quantized")

    @property
    def matmul4bit_saves_input(self) -> bool:
        """4-bit QLoRA linears whose ``MatMul4Bit`` keeps its input for backward (bitsandbytes < 0.43.2)."""
        return (self.quantized_linears and self.train.quant_bits == 4
                and self.stack.value("matmul4bit_saves") == "input_and_packed_weight")

    @property
    def dequant_bytes_per_param(self) -> float:
        """Bytes per weight element alive while a 4-bit weight is dequantized for one matmul [BNB-4bit]:
        ``dequantize_4bit`` returns the quant state's dtype, then ``MatMul4Bit`` casts it ``.to(A.dtype)``.
        Quantized from the loaded dtype (transformers) that is the compute dtype, one 16-bit tensor; quantized
        from fp16 (lightning's ``BitsandbytesPrecision``, stack ``quant_state_dtype``) under bf16, the fp16
        tensor and its bf16 copy are alive together during the cast."""
        if self.stack.value("quant_state_dtype") == "fp16" and self.train.dtype is not DType.FP16:
            return FP16_BYTES + self.d.compute
        return self.d.compute

    @property
    def sdpa_repeats_kv(self) -> bool:
        """SDPA attention whose k/v are first repeated to every query head (``repeat_kv``: transformers < 4.54's
        GQA models; ``repeat_kv_every_model``: litgpt, Falcon's multi-query attention too); MHA repeats nothing."""
        kv = self.stack.value("sdpa_kv")
        return (self.train.attn is not Attn.EAGER
                and self.config.num_key_value_heads < self.config.num_attention_heads
                and (kv == "repeat_kv_every_model" or kv == "repeat_kv" and not self.arch.sdpa_math))

    @property
    def sdpa_math(self) -> bool:
        """SDPA falls back to its math kernel (the architecture's k/v head count reaches SDPA unrepeated)."""
        return self.arch.sdpa_math and self.stack.value("sdpa_kv") != "repeat_kv_every_model"

    @property
    def experts_quantized(self) -> bool:
        """QLoRA on a stack whose MoE experts are per-expert ``nn.Linear`` (transformers 4.x), which
        bitsandbytes quantizes like any other linear."""
        return self.qlora and bool(self.arch.expert_params) and self.stack.per_expert_linears

    @property
    def layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def tokens(self) -> float:
        """Tokens per forward (micro-batch x sequence length)."""
        return float(self.train.micro_batch * self.train.seq_len)

    @property
    def accumulating(self) -> bool:
        """Gradients stay alive across micro-batches (``zero_grad`` runs only after the optimizer step)."""
        return self.train.grad_accum > 1


def effective_attn(config: ModelConfig, train: TrainSpec, stack: Stack) -> Attn:
    """The attention the stack runs for ``train.attn``: softcapped attention (Gemma 2) cannot use SDPA where the
    stack's ``softcapped_attention`` is ``eager_only`` (transformers >= 5.21 refuses it; litgpt computes it
    by hand), so SDPA becomes eager there."""
    if (train.attn is Attn.SDPA and config.attn_logit_softcapping
            and stack.value("softcapped_attention") == "eager_only"):
        return Attn.EAGER
    return train.attn


def build_context(config: ModelConfig, train: TrainSpec, stack: Stack | None = None) -> Context:
    """Resolve ``train`` against ``config`` (targets, dropout, dtypes) for ``stack`` (default: the modeled one).

    Raises:
        PlannerError: targets that match no module, or a dropout PEFT cannot apply.
    """
    stack = stack or default_stack()
    if config.tie_word_embeddings and not stack.flag("ties_embeddings"):
        # litgpt keeps a separate lm_head (its converter copies the embedding into it): count both.
        config = config.model_copy(update={"tie_word_embeddings": False})
    if train.optimizer_in_backward and stack.framework != "torchtune":
        raise PlannerError(f"--optimizer-in-backward is torchtune's optimizer_in_bwd; the {stack.framework} stack "
                           "steps the optimizer after backward (use --framework torchtune)")
    attn = effective_attn(config, train, stack)
    if attn is not train.attn:
        train = train.model_copy(update={"attn": attn})
    full = train.method is Method.FULL
    targets = () if full else resolve_targets(config, train.targets)
    dropout = 0.0 if full else lora_dropout(config, train.targets, train.lora_dropout)
    total = total_params(config)
    return Context(
        config=config, train=train, arch=architecture(config), targets=targets,
        target_paths=frozenset(lin.path for lin in targets), dropout=dropout,
        d=dtypes(train, stack), stack=stack, optimizer=optimizer_info(train.optim),
        total_params=total, trainable_params=total if full else adapter_params(
            config, train, per_expert_linears=stack.per_expert_linears),
    )
