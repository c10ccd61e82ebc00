"""``ParallelSpec``: the data-parallel / sharding engine a plan runs under.

The engines are the ones users already launch (torch DDP, torch FSDP / FSDP2, DeepSpeed ZeRO through
accelerate or torchrun); :func:`planner.parallel.shard.shard` turns the single-process ledger into what
one rank holds under each.
"""

from __future__ import annotations

from enum import Enum
from pydantic import Field, model_validator

from planner.errors import PlannerError
from planner.specs import Frozen



class Strategy(str, Enum):
    """The engine and its sharding mode."""

    NONE = "none"
    """One process, one GPU."""
    DDP = "ddp"
    """torch DistributedDataParallel: everything replicated, gradients all-reduced in buckets."""
    FSDP = "fsdp"
    """torch FSDP (FSDP1) ``FULL_SHARD``: parameters, gradients and optimizer state sharded."""
    FSDP_SHARD_GRAD_OP = "fsdp-shard-grad-op"
    """torch FSDP ``SHARD_GRAD_OP``: parameters unsharded from forward to the end of backward."""
    FSDP2 = "fsdp2"
    """torch ``fully_shard`` (FSDP2, per-parameter DTensor sharding, ``reshard_after_forward``)."""
    ZERO1 = "zero1"
    """DeepSpeed ZeRO stage 1: optimizer state (and fp32 master) partitioned."""
    ZERO2 = "zero2"
    """DeepSpeed ZeRO stage 2: also gradients."""
    ZERO3 = "zero3"
    """DeepSpeed ZeRO stage 3: also parameters."""

    @property
    def shards_optimizer(self) -> bool:
        return self not in (Strategy.NONE, Strategy.DDP)

    @property
    def shards_gradients(self) -> bool:
        return self not in (Strategy.NONE, Strategy.DDP, Strategy.ZERO1)

    @property
    def shards_params(self) -> bool:
        """Parameters sharded at rest (``SHARD_GRAD_OP``: only outside forward/backward)."""
        return self in (Strategy.FSDP, Strategy.FSDP_SHARD_GRAD_OP, Strategy.FSDP2, Strategy.ZERO3)

    @property
    def is_fsdp(self) -> bool:
        return self in (Strategy.FSDP, Strategy.FSDP_SHARD_GRAD_OP, Strategy.FSDP2)

    @property
    def is_zero(self) -> bool:
        return self in (Strategy.ZERO1, Strategy.ZERO2, Strategy.ZERO3)


class Offload(str, Enum):
    """What moves to host RAM: ZeRO-Offload ``offload_optimizer`` / ``offload_param``, FSDP ``cpu_offload``."""

    NONE = "none"
    OPTIMIZER = "optimizer"
    PARAMS = "params"


class QuantStorage(str, Enum):
    """``BitsAndBytesConfig(bnb_4bit_quant_storage=...)``: the dtype Params4bit's packed bytes are stored in."""

    BF16 = "bf16"
    UINT8 = "uint8"


class ParallelSpec(Frozen):
    """Where the step runs: GPUs per node, nodes, the engine's strategy and what it offloads.

    Invalid combinations raise :class:`PlannerError` (one line; the CLI exits 2).
    """

    strategy: Strategy = Strategy.NONE
    gpus: int = Field(default=1, ge=1)
    """GPUs per node."""
    nodes: int = Field(default=1, ge=1)
    offload: Offload = Offload.NONE
    quant_storage: QuantStorage | None = None
    """QLoRA's 4-bit storage dtype (None: bitsandbytes' default, uint8, or bf16 under FSDP)."""
    host_ram_gib: float | None = Field(default=None, gt=0)
    """Host RAM per node available to offloaded state (None: not checked)."""

    @property
    def world_size(self) -> int:
        return self.gpus * self.nodes

    @property
    def multi(self) -> bool:
        """Anything but the plain one-GPU, one-process step."""
        return self.strategy is not Strategy.NONE

    @model_validator(mode="after")
    def _check(self) -> ParallelSpec:
        s, o = self.strategy, self.offload
        if s is Strategy.NONE and self.world_size > 1:
            raise PlannerError(f"--parallel none runs on one GPU, not {self.world_size}: pick ddp, fsdp, "
                               "fsdp-shard-grad-op, fsdp2 or zero1/2/3")
        if o is not Offload.NONE and s in (Strategy.NONE, Strategy.DDP):
            raise PlannerError(f"--offload {o.value} needs a sharding engine (fsdp or zero1/2/3), not "
                               f"--parallel {s.value}")
        if o is Offload.OPTIMIZER and s.is_fsdp:
            raise PlannerError("FSDP's cpu_offload moves parameters, gradients and optimizer state together: "
                               "use --offload params (or a zero strategy for --offload optimizer)")
        if o is Offload.PARAMS and s in (Strategy.ZERO1, Strategy.ZERO2):
            raise PlannerError(f"--offload params needs ZeRO stage 3 (offload_param), not {s.value}: "
                               "use --parallel zero3 or --offload optimizer")
        return self
