"""The serving configuration: what ``loraplan serve`` is asked about (pure data, no I/O)."""

from __future__ import annotations

from enum import Enum

from pydantic import ConfigDict, Field, StrictBool, StrictFloat, StrictInt, model_validator

from planner.inputs import limit
from planner.specs import DType, Frozen


class Quant(str, Enum):
    """How the decoder linears are stored (formats in ``profiles/serve.json`` ``quant_formats``)."""

    NONE = "none"
    NF4 = "nf4"
    INT8 = "int8"
    AWQ = "awq"
    GPTQ = "gptq"


class Engine(str, Enum):
    """Who serves: transformers ``generate`` with a static cache, or vLLM's paged KV pool."""

    HF = "hf"
    VLLM = "vllm"


class KvDtype(str, Enum):
    """KV cache element type: the model dtype, or 8-bit float (vLLM ``--kv-cache-dtype fp8`` only)."""

    AUTO = "auto"
    FP8 = "fp8"


class ServeSpec(Frozen):
    """One serving configuration.

    ``context`` is the tokens one sequence's KV cache holds (prompt plus generated tokens; vLLM's
    ``max_model_len``); ``batch`` the sequences served together (HF: the static cache's batch; vLLM:
    the concurrent sequences the answer must hold).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True, allow_inf_nan=False)

    dtype: DType = DType.BF16
    quant: Quant = Quant.NONE
    adapters: StrictInt = Field(default=0, ge=0, le=100_000)
    """LoRA adapters resident on the GPU (vLLM: ``max_loras`` slots)."""
    rank: StrictInt = Field(default=16, gt=0, le=limit("rank"))
    targets: tuple[str, ...] = Field(default=("all-linear",), min_length=1)
    merged: StrictBool = False
    """The (single) adapter is merged into the base weights: no adapter memory, no LoRA compute."""
    batch: StrictInt = Field(default=1, gt=0, le=1_000_000)
    context: StrictInt = Field(default=4096, gt=0, le=limit("seq_len"))
    engine: Engine = Engine.HF
    kv_dtype: KvDtype = KvDtype.AUTO
    gpu_memory_utilization: StrictFloat = Field(default=0.9, gt=0, le=1)
    """vLLM: the fraction of total GPU memory the engine may take (weights, activations, KV pool)."""
    prefill_chunk: StrictInt | None = Field(default=None, gt=0, le=limit("seq_len"))
    """Tokens per prefill forward (HF: per sequence; vLLM: ``max_num_batched_tokens``); None: the engine's default."""

    @model_validator(mode="after")
    def _consistent(self) -> ServeSpec:
        if self.kv_dtype is KvDtype.FP8 and self.engine is not Engine.VLLM:
            raise ValueError("--kv-dtype fp8 needs --engine vllm (transformers' StaticCache stores the model dtype)")
        if self.merged and self.adapters > 1:
            raise ValueError(f"--merged folds one adapter into the weights; got --adapters {self.adapters}")
        if self.merged and self.quant in (Quant.AWQ, Quant.GPTQ):
            raise ValueError(f"--merged with --quant {self.quant.value}: PEFT cannot merge into packed "
                             f"{self.quant.value} weights (merge into the float model, then quantize)")
        return self

    @property
    def adapter_count(self) -> int:
        """Adapters that cost memory (a merged adapter costs none)."""
        return 0 if self.merged else self.adapters
