"""The training stack an estimate assumes: framework, library versions and the behaviours that follow.

A stack is data (``profiles/stacks/<name>.json``): each behaviour has a value, the version range it
holds for and its source (library file and function at a version). The memory model reads the
behaviours through the typed accessors here, never a library version directly.
"""

from __future__ import annotations

from enum import Enum
from functools import cache

from planner.catalog import _read_json, profiles_dir
from planner.errors import PlannerError, unknown
from planner.results import BehaviourRef, StackRef
from planner.specs import Frozen

DEFAULT_STACK = "trainer-transformers5"


class AdapterDtype(str, Enum):
    FP32 = "fp32"
    """PEFT upcasts adapters to fp32."""
    BASE = "base"
    """Adapters in the base model's dtype."""


class MoeExperts(str, Enum):
    FUSED_3D_UNQUANTIZED = "fused_3d_unquantized"
    """Experts are 3-D nn.Parameters that bitsandbytes does not quantize."""
    PER_EXPERT_LINEAR = "per_expert_linear"


class LossKind(str, Enum):
    """How the lm_head output and the loss are computed (:mod:`planner.memory.loss`)."""

    FULL_LOGITS_FP32 = "full_logits_fp32"
    """Full logits, ``.float()``, cross-entropy (transformers >= 4.49)."""
    FULL_LOGITS_CONTIGUOUS = "full_logits_contiguous"
    """Full logits, their fp32 copy and its shifted ``.contiguous()`` copy (transformers 4.46-4.48, TRL 0.15-1.7)."""
    FULL_LOGITS_UPCAST_CONTIGUOUS = "full_logits_upcast_contiguous"
    """The model upcasts its logits (16-bit copy freed), then the shifted fp32 ``.contiguous()`` copy
    (transformers < 4.46)."""
    CHUNKED_256 = "chunked_256"
    """256-token chunks of lm_head + loss under checkpoint (TRL 1.8-1.12)."""
    CHUNKED_8 = "chunked_8"
    """The output split in 8 chunks, each upcast and cross-entropied (torchtune CEWithChunkedOutputLoss)."""
    CHUNKED_HEAD_128 = "chunked_head_128"
    """lm_head in 128-token chunks in the compute dtype, each chunk cross-entropied without an fp32 upcast
    (litgpt ``finetune``: ``model(input_ids, lm_head_chunk_size=128)`` + ``chunked_cross_entropy``)."""
    FUSED_HEAD = "fused_head"
    """A fused, tiled lm_head + loss: full logits never built (TRL >= 1.13, Liger, CCE, Unsloth)."""


class CheckpointKind(str, Enum):
    """How activation checkpointing keeps each decoder layer's input."""

    NON_REENTRANT = "non_reentrant"
    """``torch.utils.checkpoint(use_reentrant=False)``: the input saved on the GPU (transformers 5)."""
    REENTRANT = "reentrant"
    """``use_reentrant=True`` (transformers 4.x default): the same inputs on the GPU."""
    OFFLOADED = "offloaded"
    """Unsloth's checkpointer: the inputs in pinned host memory, one reloaded at a time."""


class KbitPrepare(str, Enum):
    """What the stack does to a quantized model's non-quantized and trainable params."""

    UPCAST_FP32 = "upcast_fp32"
    """peft.prepare_model_for_kbit_training: non-quantized 16-bit params -> fp32 (``--kbit-prepare``)."""
    UPCAST_FP32_HEAD_BF16 = "upcast_fp32_head_bf16"
    """As ``upcast_fp32``, then (bf16 training) the embeddings and lm_head back to bf16 (TRL 0.9-0.24
    ``peft_module_casting_to_bf16``)."""
    UPCAST_FP32_HEAD_ADAPTERS_BF16 = "upcast_fp32_head_adapters_bf16"
    """As ``upcast_fp32_head_bf16``, and the LoRA layers to bf16 too (TRL 0.7.11-0.8)."""
    UPCAST_NORMS_FP32 = "upcast_norms_fp32"
    """TRL 0.25's own ``prepare_model_for_kbit_training``: only the norms -> fp32; embeddings, lm_head,
    biases and experts stay in the loaded dtype, adapters as PEFT makes them."""
    CAST_TRAINABLE_BF16 = "cast_trainable_bf16"
    """No prepare; the trainable params (adapters) cast to bf16 (current TRL SFTTrainer)."""

    @property
    def calls_prepare(self) -> bool:
        """Whether a kbit-prepare function runs (the ``--kbit-prepare`` default the stack implies)."""
        return self is not KbitPrepare.CAST_TRAINABLE_BF16


class FsdpTrainableDtype(str, Enum):
    """What FSDP's shards of the trainable parameters are stored in under bf16/fp16 mixed precision."""

    FP32 = "fp32"
    """accelerate >= 0.30 upcasts every trainable (flat) parameter to fp32 before sharding; the step computes
    and all-gathers in the MixedPrecision ``param_dtype`` (bf16)."""
    LOAD_DTYPE = "load_dtype"
    """The shards keep the dtype the model was loaded in (accelerate < 0.30, torchtune, litgpt bf16-true)."""


class Behaviour(Frozen):
    value: str
    holds_for: str
    source: str


class Stack(Frozen):
    """One modeled stack (``profiles/stacks/<name>.json``)."""

    name: str
    framework: str
    description: str
    versions: dict[str, str]
    behaviours: dict[str, Behaviour]
    date: str
    traced: bool = True
    """Whether the trace suite runs this stack's code (else modelled from the cited sources)."""
    untraced_methods: tuple[str, ...] = ()
    """Methods (``Method`` values) the trace suite does not run on this otherwise traced stack."""

    def traced_for(self, method: str) -> bool:
        """Whether the trace suite runs ``method`` (a ``Method`` value) on this stack."""
        return self.traced and method not in self.untraced_methods

    def untraced_note(self, methods: tuple[str, ...] | None = None) -> str | None:
        """The line saying this stack, or those of ``methods`` (default: every method) it does not trace, is
        modelled rather than traced; None when all of them are traced."""
        if not self.traced:
            return f"{self.framework} stack is modelled from the libraries' sources, not traced"
        untraced = [m for m in (self.untraced_methods if methods is None else methods) if not self.traced_for(m)]
        if not untraced:
            return None
        return (f"{', '.join(untraced)} on this {self.framework} stack is modelled from the libraries' sources, "
                "not traced")

    def value(self, name: str) -> str:
        """The value of behaviour ``name``."""
        try:
            return self.behaviours[name].value
        except KeyError:
            raise PlannerError(f"stack {self.name} does not define behaviour {name!r}") from None

    def flag(self, name: str) -> bool:
        return self.value(name) == "true"

    @property
    def adapter_dtype(self) -> AdapterDtype:
        return AdapterDtype(self.value("adapter_dtype"))

    @property
    def moe_experts(self) -> MoeExperts:
        return MoeExperts(self.value("moe_experts"))

    @property
    def per_expert_linears(self) -> bool:
        """MoE experts are one ``nn.Linear`` per expert and projection (transformers 4.x, litgpt)."""
        return self.moe_experts is MoeExperts.PER_EXPERT_LINEAR

    @property
    def loss(self) -> LossKind:
        return LossKind(self.value("loss"))

    @property
    def checkpointing(self) -> CheckpointKind:
        return CheckpointKind(self.value("checkpointing"))

    @property
    def kbit_prepare(self) -> KbitPrepare:
        return KbitPrepare(self.value("kbit_prepare"))

    @property
    def fsdp_trainable_dtype(self) -> FsdpTrainableDtype:
        return FsdpTrainableDtype(self.value("fsdp_trainable_dtype"))

    def ref(self, detected: bool = False) -> StackRef:
        """The ``stack`` object of an estimate's JSON (built once per stack)."""
        return _ref(self.name, detected)

    def _build_ref(self, detected: bool) -> StackRef:
        return StackRef(
            name=self.name, framework=self.framework, versions=dict(self.versions), detected=detected,
            behaviours=tuple(BehaviourRef(name=k, value=b.value, source=b.source) for k, b in self.behaviours.items()),
        )


@cache
def _ref(name: str, detected: bool) -> StackRef:
    return load_stack(name)._build_ref(detected)


_RESOLVED: dict[str, Stack] = {}
"""Stacks built from ``--framework``/``--versions`` (:mod:`planner.stack.resolve`), by name."""


def register_stack(stack: Stack) -> Stack:
    """Make a resolved stack findable by :func:`load_stack` (its name encodes framework and versions)."""
    _RESOLVED.setdefault(stack.name, stack)
    return _RESOLVED[stack.name]


_DATA_FILES = ("behaviours", "frameworks", "snippets")


@cache
def _constants(block: str) -> dict[str, float]:
    raw = _read_json(profiles_dir() / "stacks" / "frameworks.json")[block]
    return {k: float(v["value"]) for k, v in raw.items()}


def checkpoint_constants() -> dict[str, float]:
    """Thresholds of the checkpointing variants (``profiles/stacks/frameworks.json``)."""
    return _constants("checkpoint_constants")


def loss_constants() -> dict[str, float]:
    """Chunk and tile sizes of the chunked/fused loss paths (``profiles/stacks/frameworks.json``)."""
    return _constants("loss_constants")


def stack_names() -> list[str]:
    return sorted(p.stem for p in (profiles_dir() / "stacks").glob("*.json") if p.stem not in _DATA_FILES)


@cache
def load_stack(name: str = DEFAULT_STACK) -> Stack:
    """The stack profile ``name`` (default: the one loraplan models today), or a resolved one by name."""
    if name in _RESOLVED:
        return _RESOLVED[name]
    path = profiles_dir() / "stacks" / f"{name}.json"
    if not path.is_file():
        raise unknown("stack", name, stack_names())
    return Stack(**_read_json(path))


def default_stack() -> Stack:
    return load_stack(DEFAULT_STACK)
