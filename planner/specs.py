"""Typed, frozen specs shared by the estimator, the recommender, the CLI and the probes.

Everything here is plain data (pydantic, frozen, ``extra="forbid"``): no I/O, no CLI objects.
Results (what the estimator returns) live in :mod:`planner.results`.
"""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, field_validator, model_validator

from planner.inputs import limit

GIB = float(1 << 30)
"""Bytes in one GiB (what torch.cuda and nvidia-smi's MiB figures are based on)."""


class Frozen(BaseModel):
    """Base for every spec: immutable, hashable, rejects unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class Method(str, Enum):
    """Fine-tuning method."""

    LORA = "lora"
    QLORA = "qlora"
    FULL = "full"


class Optim(str, Enum):
    """Optimizer, named as the CLI spells it."""

    ADAMW = "adamw"
    ADAMW_8BIT = "adamw-8bit"
    PAGED_ADAMW = "paged-adamw"
    PAGED_ADAMW_8BIT = "paged-adamw-8bit"
    SGD = "sgd"
    ADAFACTOR = "adafactor"

    @property
    def paged(self) -> bool:
        """bitsandbytes paged optimizers keep state in CUDA unified memory (can spill to host)."""
        return self in (Optim.PAGED_ADAMW, Optim.PAGED_ADAMW_8BIT)


class Attn(str, Enum):
    """Attention implementation (transformers ``attn_implementation``)."""

    SDPA = "sdpa"
    FLASH = "flash"
    EAGER = "eager"

    @property
    def transformers_name(self) -> str:
        """The ``attn_implementation`` string transformers takes."""
        return "flash_attention_2" if self is Attn.FLASH else self.value


class DType(str, Enum):
    """Floating dtype of weights / compute."""

    BF16 = "bf16"
    FP16 = "fp16"
    FP32 = "fp32"

    @property
    def bytes_per_element(self) -> float:
        return 4.0 if self is DType.FP32 else 2.0


class ModelConfig(Frozen):
    """The architecture fields loraplan needs, normalized from a HF ``config.json``.

    Field names follow the Llama ``config.json`` spelling; ``planner.profiles.normalize_config``
    maps other families (GPT-2's ``n_embd``, Falcon's ``n_head`` ...) onto them.
    """

    model_type: str
    hidden_size: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    num_hidden_layers: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_key_value_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    max_position_embeddings: int = Field(gt=0)
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    # Mixture of experts (0 = dense).
    num_local_experts: int = 0
    num_experts_per_tok: int = 0
    # Family specifics (read by planner.model.architecture only).
    final_logit_softcapping: float | None = None
    attn_logit_softcapping: float | None = None
    """Gemma 2: attention scores pass through ``cap * tanh(scores / cap)`` (no SDPA kernel does that)."""
    parallel_attn: bool = False
    new_decoder_architecture: bool = False


class ModelProfile(Frozen):
    """A model: its name, where its config came from, and the normalized config."""

    name: str
    hub_id: str | None = None
    source: str
    config: ModelConfig
    warnings: tuple[str, ...] = ()
    """What the config says that the estimate does not model (e.g. ``auto_map`` custom code)."""


class Interconnect(Frozen):
    """A GPU's link to the other GPUs of its node (``profiles/gpus.json`` ``interconnect``)."""

    kind: Literal["nvlink", "pcie"]
    generation: str
    """E.g. ``NVLink 4 (SXM5, NVSwitch)`` or ``PCIe 4.0 x16``."""
    gb_per_s: float = Field(gt=0)
    """GB/s (1e9 bytes) per direction per GPU (NVIDIA's NVLink totals count both directions: halved)."""
    source: str
    date: str


class GpuProfile(Frozen):
    """One GPU model. Memory is what the device reports (``torch.cuda.get_device_properties().total_memory``)."""

    name: str
    aliases: tuple[str, ...] = ()
    memory_gib: float = Field(gt=0)
    bf16: bool
    bf16_tflops: float | None = None
    fp16_tflops: float = Field(gt=0)
    memory_bandwidth_gbps: float = Field(gt=0)
    compute_capability: str
    source: str
    date: str
    interconnect: Interconnect | None = None
    """Intra-node GPU-to-GPU link (None: unknown; the comm model assumes PCIe, ``profiles/parallel.json``)."""


class TrainSpec(Frozen):
    """One training configuration: everything that changes memory, besides the model."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True, allow_inf_nan=False)
    """Bounds: finite numbers, upper limits from ``profiles/limits.json`` (each with its reason)."""

    method: Method = Method.LORA
    rank: StrictInt = Field(default=16, gt=0, le=limit("rank"))
    alpha: StrictFloat = Field(default=32.0, gt=0, le=limit("alpha"))
    targets: tuple[str, ...] = Field(default=("all-linear",), min_length=1)
    lora_dropout: StrictFloat | None = Field(default=None, ge=0, lt=1)
    """None: 0.05, or 0 where PEFT requires it (see ``planner.model.architecture.lora_dropout``)."""
    dora: bool = False
    micro_batch: StrictInt = Field(default=1, gt=0, le=limit("micro_batch"))
    seq_len: StrictInt = Field(default=2048, gt=0, le=limit("seq_len"))
    grad_accum: StrictInt = Field(default=1, gt=0, le=limit("grad_accum"))
    grad_ckpt: bool = True
    optim: Optim = Optim.ADAMW
    attn: Attn = Attn.SDPA
    dtype: DType = DType.BF16
    fp32_master: bool = False
    """LoRA / full: keep the weights in fp32 and autocast to ``dtype`` (mixed precision) instead of pure ``dtype``."""
    double_quant: bool = True
    """QLoRA only: bitsandbytes ``bnb_4bit_use_double_quant``."""
    kbit_prepare: bool = True
    """QLoRA only: ``peft.prepare_model_for_kbit_training`` (upcasts every non-quantized param to fp32), as
    the QLoRA scripts and most training code call it; current TRL ``SFTTrainer`` does not."""
    quant_bits: StrictInt = Field(default=4, ge=4, le=8, multiple_of=4)
    """QLoRA only: 4 (NF4, ``load_in_4bit``) or 8 (LLM.int8, ``load_in_8bit``) base weights."""
    optimizer_in_backward: bool = False
    """Full fine-tuning on torchtune only: ``optimizer_in_bwd`` steps each parameter's optimizer in its
    post-accumulate-grad hook and frees the gradient, so the gradients never all exist."""

    @model_validator(mode="after")
    def _optimizer_in_backward(self) -> TrainSpec:
        # torchtune v0.6.1 recipes/full_finetune_single_device.py: only the full recipes take optimizer_in_bwd, and
        # they raise with gradient accumulation (the hook steps before a second micro-batch could add to .grad).
        if self.optimizer_in_backward and self.method is not Method.FULL:
            raise ValueError("optimizer_in_backward needs method full (torchtune's LoRA recipes have no "
                             "optimizer_in_bwd)")
        if self.optimizer_in_backward and self.grad_accum > 1:
            raise ValueError("optimizer_in_backward cannot accumulate gradients (torchtune raises for "
                             "gradient_accumulation_steps > 1 with optimizer_in_bwd)")
        return self

    @field_validator("targets")
    @classmethod
    def _targets(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        """Module names, none empty; ``all-linear`` alone (combined, the other names would be ignored)."""
        if any(not isinstance(t, str) or not t.strip() for t in value):
            raise ValueError("an empty target module name")
        if "all-linear" in value and len(value) > 1:
            raise ValueError("'all-linear' already adapts every linear layer; give it alone, not with other names")
        return value
