"""The one optimizer table (``profiles/optimizers.json``): what each ``--optim`` is in the modeled stack.

It serves the memory model (state bytes, 8-bit and paged rules, step transient), the time model
(state bytes moved per step), the recommend snippets (Trainer ``optim`` names) and the probes
(which implementation to build). Each row cites its library source.
"""

from __future__ import annotations

from enum import Enum
from functools import cache

from planner.catalog import _read_json, profiles_dir
from planner.specs import Frozen, Optim


class Library(str, Enum):
    TORCH = "torch"
    BITSANDBYTES = "bitsandbytes"
    TRANSFORMERS = "transformers"


class Family(str, Enum):
    ADAM = "adam"
    SGD = "sgd"
    ADAFACTOR = "adafactor"


class StateDtype(str, Enum):
    PARAM = "param"
    """The parameter's own dtype (``zeros_like(param)``)."""
    FP32 = "fp32"
    UINT8 = "uint8"
    """8-bit blockwise state plus fp32 absmax per block (profiles/runtime.json ``bnb_8bit_optimizer``)."""
    NONE = "none"


class StepTransient(str, Enum):
    NONE = "none"
    ADAFACTOR_FP32_COPIES = "adafactor_fp32_copies"


class OptimizerInfo(Frozen):
    """One row of the optimizer table."""

    optim: Optim
    trainer_name: str
    """``TrainingArguments.optim`` value (transformers ``OptimizerNames``)."""
    library: Library
    family: Family
    state_tensors: int
    """State tensors per parameter (AdamW: exp_avg and exp_avg_sq)."""
    state_bits: int
    state_dtype: StateDtype
    paged: bool
    """bitsandbytes paged: large state buffers in CUDA managed memory."""
    embedding_32bit_state: bool
    """Trainer gives ``nn.Embedding`` weights 32-bit state (bitsandbytes 8-bit optimizers)."""
    step_transient: StepTransient
    state_bytes_moved_per_param: float
    """DRAM bytes one step reads and writes of the optimizer state per trainable parameter."""
    source: str

    @property
    def eight_bit(self) -> bool:
        return self.state_dtype is StateDtype.UINT8


@cache
def optimizer_table() -> dict[Optim, OptimizerInfo]:
    """Every optimizer row, keyed by :class:`Optim` (``profiles/optimizers.json``)."""
    data = _read_json(profiles_dir() / "optimizers.json")
    return {Optim(name): OptimizerInfo(optim=Optim(name), **row) for name, row in data["optimizers"].items()}


def optimizer_info(optim: Optim) -> OptimizerInfo:
    """The row for ``optim``."""
    return optimizer_table()[optim]
