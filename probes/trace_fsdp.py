"""CPU trace of one FSDP2 rank: the real ``fully_shard`` step on fake tensors and a fake process group.

torch ships a process group that runs no communication (``torch.testing._internal.distributed.fake_pg``,
backend ``"fake"``): collectives return at once with their outputs allocated, so one process runs
exactly what rank 0 of a ``world_size`` job runs, its buffers included (torchtitan's memory estimator,
``scripts/estimate/estimation.py``, traces FSDP2 this way). The model is built on fake tensors as in
:mod:`probes.trace`, PEFT-wrapped (the frozen base is sharded with the adapters), then ``fully_shard``
is applied to every decoder layer (the model's ``_no_split_modules``, as accelerate's FSDP2
auto-wrap does) and to the root with ``reshard_after_forward=True``; forward, backward and the optimizer
step run unmodified on the sharded ``DTensor`` parameters.

FSDP2 frees and re-allocates its unsharded buffers by resizing their storage (``free_storage`` /
``alloc_storage`` in ``torch/distributed/fsdp/_fully_shard/_fsdp_param.py``), which is not a tensor op:
those two functions are wrapped to report the new size to the tracker. Rank 0 holds the largest shard
(padding goes to the last ranks), so its peak is the per-rank peak.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any
from unittest import mock

import torch
from torch import nn

from planner.errors import PlannerError
from planner.specs import DType, Method, TrainSpec
from probes.memtrack import LiveBytesTracker
from probes.trace import TraceRun, run_trace

MIXED_PRECISION_NOTE = ("accelerate's FSDP2 mixed precision: trainable params upcast to fp32 before fully_shard, "
                        "MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=bf16)")
FAKE_PG_NOTE = ("FSDP2 fully_shard (per decoder layer, then root; reshard_after_forward=True) on a fake process "
                "group of world size {w}: rank 0's buffers, no communication")


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The modules accelerate's FSDP2 auto-wrap shards one by one: instances of the model's ``_no_split_modules``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or ())
    layers = [m for m in base.modules() if type(m).__name__ in names]
    if not layers:
        raise PlannerError(f"{type(base).__name__} names no decoder-layer class (_no_split_modules): cannot shard it")
    return layers


@contextmanager
def fsdp2_storage_tracking(tracker: LiveBytesTracker) -> Iterator[None]:
    """Report every storage FSDP2 frees or re-allocates by resizing (not a tensor op) to ``tracker``."""
    import torch.distributed.fsdp._fully_shard._fsdp_param as fsdp_param
    import torch.distributed.fsdp._fully_shard._fsdp_param_group as fsdp_group

    alloc, free = fsdp_param.alloc_storage, fsdp_param.free_storage

    def tracked_alloc(tensor: torch.Tensor) -> None:
        alloc(tensor)
        tracker.track(tensor)

    def tracked_free(tensor: torch.Tensor) -> None:
        free(tensor)
        tracker.track(tensor)

    with mock.patch.object(fsdp_param, "alloc_storage", tracked_alloc), \
            mock.patch.object(fsdp_param, "free_storage", tracked_free), \
            mock.patch.object(fsdp_group, "alloc_storage", tracked_alloc):
        yield


class Fsdp2Sharding:
    """``fully_shard`` per decoder layer, then the root, on a device mesh of the (fake) default group.

    With ``mixed_precision`` it does what accelerate's ``fsdp2_prepare_model`` does under ``mixed_precision:
    bf16`` (accelerate v1.16.0 ``utils/fsdp_utils.py``): every trainable parameter is upcast to fp32 before
    sharding, and ``fully_shard`` gets ``MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=bf16)``
    (``FullyShardedDataParallelPlugin.set_mixed_precision``), so the step computes and gathers in bf16.
    """

    def __init__(self, world_size: int, mesh: Any, mixed_precision: bool = False) -> None:
        self.world_size = world_size
        self.mesh = mesh
        self.mixed_precision = mixed_precision
        self.notes = [FAKE_PG_NOTE.format(w=world_size)] + ([MIXED_PRECISION_NOTE] if mixed_precision else [])

    def context(self, tracker: LiveBytesTracker) -> AbstractContextManager[None]:
        return fsdp2_storage_tracking(tracker)

    def apply(self, model: nn.Module) -> nn.Module:
        kwargs: dict[str, Any] = {"mesh": self.mesh, "reshard_after_forward": True}
        if self.mixed_precision:
            kwargs.update(accelerate_fsdp2_mixed_precision(model, torch.bfloat16))
        return fully_shard_layers(model, **kwargs)


def fully_shard_layers(model: nn.Module, **kwargs: Any) -> nn.Module:
    """``fully_shard(**kwargs)`` on every decoder layer, then on the root (accelerate's FSDP2 auto-wrap)."""
    from torch.distributed.fsdp import fully_shard

    for layer in decoder_layers(model):
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)
    return model


def accelerate_fsdp2_mixed_precision(model: nn.Module, dtype: torch.dtype) -> dict[str, Any]:
    """What accelerate (v1.16.0 ``utils/fsdp_utils.py`` ``fsdp2_prepare_model``) does under ``mixed_precision``
    bf16/fp16 before ``fully_shard``: every trainable parameter upcast to fp32 in place; returns the
    ``mp_policy`` keyword (``FullyShardedDataParallelPlugin.set_mixed_precision``: param and reduce dtype)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.to(torch.float32)
    return {"mp_policy": MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=dtype)}


def accelerate_fsdp1_upcast(model: nn.Module) -> None:
    """accelerate v0.30+ ``Accelerator.prepare_model`` after ``FullyShardedDataParallel(...)`` under mixed
    precision: each FSDP module's flat parameter that requires grad and is not fp32 upcast to fp32."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    for module in FullyShardedDataParallel.fsdp_modules(model):
        if not module._has_params:
            continue
        param = module._flat_param
        if param.dtype != torch.float32 and param.requires_grad:
            param.data = param.data.to(torch.float32)
            module._handle._orig_param_dtype = torch.float32


@contextmanager
def fake_process_group(world_size: int) -> Iterator[Any]:
    """A fake default process group of ``world_size`` (this process is rank 0) and its 1-D CPU mesh."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.testing._internal.distributed.fake_pg import FakeStore

    if dist.is_initialized():
        raise PlannerError("a process group is already initialized in this process: cannot trace with a fake one")
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=world_size)
    try:
        # The mesh is built from real tensors, before the trace enters fake-tensor mode.
        yield init_device_mesh("cpu", (world_size,))
    finally:
        dist.destroy_process_group()


def run_fsdp_trace(raw: dict[str, Any], spec: TrainSpec, world_size: int, *, steps: int = 2,
                   mixed_precision: bool = False) -> TraceRun:
    """Trace rank 0 of an FSDP2 job of ``world_size`` ranks (see the module docstring).

    Args:
        raw: The model's ``config.json`` dict.
        spec: The training configuration (micro-batch per rank).
        world_size: Ranks the parameters, gradients and optimizer state are sharded over (>= 1).
        steps: Optimizer steps (at least 2).
        mixed_precision: Shard as accelerate does under ``mixed_precision: bf16`` (trainable params upcast to
            fp32, bf16 ``MixedPrecisionPolicy``); needs ``spec.dtype`` bf16.

    Returns:
        The :class:`~probes.trace.TraceRun` of rank 0; ``peak_bytes`` is the per-rank peak.
    """
    if world_size < 1:
        raise PlannerError(f"world size must be at least 1, got {world_size}")
    if spec.method is Method.QLORA:
        raise PlannerError("the FSDP2 trace covers --method full and lora (emulated NF4 weights are not shardable "
                           "parameters)")
    if mixed_precision and spec.dtype is not DType.BF16:
        raise PlannerError("the mixed-precision FSDP2 trace computes in bf16: use --dtype bf16")
    with fake_process_group(world_size) as mesh:
        return run_trace(raw, spec, steps=steps, sharding=Fsdp2Sharding(world_size, mesh, mixed_precision))
