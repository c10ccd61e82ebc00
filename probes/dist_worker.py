"""One rank of ``loraplan probe --gpus N``: started by ``python -m torch.distributed.run`` (:mod:`probes.launch`).

Reads the request :mod:`probes.launch` wrote (model config, training spec, strategy, steps), joins the
process group (NCCL on CUDA, gloo on the CPU), builds the model with random weights on its device,
wraps it (FSDP2 ``fully_shard`` per decoder layer then root, FSDP1 ``FullyShardedDataParallel`` with
the transformer auto-wrap policy, or DDP), runs the optimizer steps and writes ``rank<R>.json`` with
its peak: ``torch.cuda.max_memory_allocated`` on a GPU, the live-bytes tracker's peak
(:class:`probes.memtrack.LiveBytesTracker`, real tensors) on the CPU, plus the process's peak RSS.
A failing rank writes its error instead and exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import traceback
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from planner.errors import PlannerError
from planner.parallel.precision import uses_fsdp_mixed_precision
from planner.specs import Method, TrainSpec
from probes import build

KIB = 1024
RANK_FILE = "rank{rank}.json"


def _device(local_rank: int) -> torch.device:
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def wrap(model: nn.Module, strategy: str, device: torch.device, mesh: Any, offload_params: bool = False,
         mixed_precision: torch.dtype | None = None) -> nn.Module:
    """``model`` under ``strategy`` (``fsdp2``, ``fsdp``, ``ddp``), sharded per decoder layer where it shards.

    ``offload_params`` (``--offload params``): FSDP2 ``offload_policy=CPUOffloadPolicy()`` (torch
    ``distributed/fsdp/_fully_shard/_fsdp_api.py``: sharded params, their gradients and so the optimizer step
    on the host, all-gathered to the GPU per unit) / FSDP1 ``cpu_offload=CPUOffload(offload_params=True)``.
    ``mixed_precision`` (bf16/fp16 training): FSDP mixed precision as ``accelerate launch`` runs it, trainable
    params upcast to fp32 and gathered/computed in that dtype (:mod:`planner.parallel.precision`)."""
    from probes.trace_fsdp import (accelerate_fsdp1_upcast, accelerate_fsdp2_mixed_precision, decoder_layers,
                                   fully_shard_layers)

    if strategy == "fsdp2":
        from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy

        policy = CPUOffloadPolicy(pin_memory=device.type == "cuda") if offload_params else OffloadPolicy()
        kwargs: dict[str, Any] = {"mesh": mesh, "reshard_after_forward": True, "offload_policy": policy}
        if mixed_precision is not None:
            kwargs.update(accelerate_fsdp2_mixed_precision(model, mixed_precision))
        return fully_shard_layers(model, **kwargs)
    if strategy == "fsdp":
        from torch.distributed.fsdp import CPUOffload, FullyShardedDataParallel, MixedPrecision
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy

        classes = {type(m) for m in decoder_layers(model)}
        policy = None if mixed_precision is None else MixedPrecision(
            param_dtype=mixed_precision, reduce_dtype=mixed_precision, buffer_dtype=mixed_precision)
        wrapped = FullyShardedDataParallel(model, auto_wrap_policy=ModuleWrapPolicy(classes), use_orig_params=True,
                                           cpu_offload=CPUOffload(offload_params=offload_params),
                                           mixed_precision=policy, device_id=device if device.type == "cuda" else None)
        if mixed_precision is not None:
            accelerate_fsdp1_upcast(wrapped)
        return wrapped
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    raise PlannerError(f"the launched probe runs fsdp2, fsdp or ddp, not {strategy}")


def run_rank(request: dict[str, Any], out: Path) -> dict[str, Any]:
    """Run this rank's steps; returns (and the caller writes) its record."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from probes.memtrack import LiveBytesTracker
    from probes.optim import build_optimizer
    from probes.trace_fsdp import fsdp2_storage_tracking

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    device = _device(local_rank)
    spec = TrainSpec.model_validate(request["spec"])
    if spec.method is Method.QLORA and device.type != "cuda":
        raise PlannerError("--method qlora needs CUDA (bitsandbytes 4-bit kernels); on the CPU use full or lora")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        mesh = init_device_mesh(device.type, (world,))
        cpu = device.type == "cpu"
        tracker = LiveBytesTracker("cpu") if cpu else None
        resized = fsdp2_storage_tracking(tracker) if cpu and request["strategy"] == "fsdp2" else nullcontext()
        started = time.perf_counter()
        torch.manual_seed(1234 + rank)
        with (tracker if tracker is not None else nullcontext()), resized:
            model = build.create_model(request["raw"], spec, device, trace=False)
            model = build.prepare(model, request["raw"], spec)
            total, trainable = build.count_params(model, {}, spec)
            mixed = build.compute_dtype(spec) if uses_fsdp_mixed_precision(spec) else None
            model = wrap(model, request["strategy"], device, mesh, offload_params=request.get("offload") == "params",
                         mixed_precision=mixed)
            after_load = tracker.live_bytes if cpu else float(torch.cuda.memory_allocated(device))
            optimizer = build_optimizer(model, spec.optim)
            if cpu:
                tracker.reset_peak()
            else:
                torch.cuda.reset_peak_memory_stats(device)
            batch = build.random_batch(build.vocab_size(_unwrapped(model)), spec, device)
            step_seconds = []
            for _ in range(max(2, int(request["steps"]))):
                t0 = time.perf_counter()
                build.train_step(model, optimizer, batch, spec, device.type, lambda phase: None)
                if not cpu:
                    torch.cuda.synchronize(device)
                step_seconds.append(time.perf_counter() - t0)
            peak = tracker.peak_bytes if cpu else float(torch.cuda.max_memory_allocated(device))
            reserved = None if cpu else float(torch.cuda.max_memory_reserved(device))
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return {
        "rank": rank, "local_rank": local_rank, "world_size": world, "device": str(device),
        "backend": "gloo" if device.type == "cpu" else "nccl",
        "after_load_bytes": after_load, "peak_allocated_bytes": peak, "peak_reserved_bytes": reserved,
        "peak_rss_bytes": float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB),
        "step_seconds": step_seconds, "params_total": total, "params_trainable": trainable,
        "seconds": time.perf_counter() - started,
    }


def _unwrapped(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m probes.dist_worker")
    parser.add_argument("--request", required=True, help="request JSON written by probes.launch")
    parser.add_argument("--out", required=True, help="folder each rank writes rank<R>.json to")
    args = parser.parse_args(argv)
    out = Path(args.out)
    rank = int(os.environ.get("RANK", "0"))
    request = json.loads(Path(args.request).read_text())
    try:
        record = run_rank(request, out)
        code = 0
    except Exception as err:  # noqa: BLE001 - reported to the parent, which prints one line
        first = str(err).splitlines()[0] if str(err) else ""
        record = {"rank": rank, "error": f"{type(err).__name__}: {first}", "traceback": traceback.format_exc()}
        code = 1
    with (out / RANK_FILE.format(rank=rank)).open("w") as fh:  # a file for the parent, not output
        json.dump(record, fh)
    return code


if __name__ == "__main__":
    sys.exit(main())
