"""``loraplan probe --gpus N``: launch :mod:`probes.dist_worker` under torch's elastic launcher, gather the ranks.

Runs ``python -m torch.distributed.run --standalone --nproc-per-node N -m probes.dist_worker`` as a
subprocess (``torch/distributed/run.py`` ``main``, torch 2.x), one rank per GPU (NCCL) or, with
``device="cpu"``, N CPU processes on gloo: a plumbing check of the launch, wrapping and gathering, not a
GPU measurement. Every rank writes ``rank<R>.json``; the result holds each rank's peak and the max over
ranks, compared with the estimator's per-GPU peak as the one-GPU probe does.

Which path each strategy takes: ``fsdp2`` is raw torch FSDP2 ``fully_shard`` per decoder layer then root;
``fsdp`` is torch FSDP1 ``FullyShardedDataParallel`` with the transformer auto-wrap policy (the same wrap
accelerate's ``FullyShardedDataParallelPlugin`` applies with ``TRANSFORMER_BASED_WRAP``), ``ddp`` is
``DistributedDataParallel``. ``--offload params`` runs FSDP2 with ``CPUOffloadPolicy`` / FSDP1 with
``CPUOffload(offload_params=True)`` (``--offload optimizer`` is ZeRO-only: ``ParallelSpec`` refuses it for FSDP).
None of them goes through accelerate here; ZeRO stages need DeepSpeed and are not run by the launched probe
yet (one line, exit 2). FSDP1 needs an accelerator (torch 2.13 refuses a CPU device), so the gloo plumbing
check runs fsdp2 and ddp.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

from planner.catalog import load_gpu, raw_config
from planner.errors import PlannerError
from planner.estimator import estimate
from planner.parallel.spec import Offload, ParallelSpec, Strategy
from planner.specs import GIB, Frozen, TrainSpec
from probes.results import error_pct

WORKER_STRATEGY = {Strategy.FSDP2: "fsdp2", Strategy.FSDP: "fsdp", Strategy.DDP: "ddp"}
"""The strategies :mod:`probes.dist_worker` wraps the model with (``--parallel`` value -> worker name)."""
PATH = {"fsdp2": "raw torch FSDP2 fully_shard per layer",
        "fsdp": "raw torch FSDP1, transformer auto-wrap",
        "ddp": "raw torch DistributedDataParallel"}
DEFAULT_TIMEOUT_S = 900.0


class RankPeak(Frozen):
    """One rank's measurement (``probes.dist_worker`` record, in GiB)."""

    rank: int
    device: str
    backend: str
    after_load_gib: float
    peak_allocated_gib: float
    """``torch.cuda.max_memory_allocated`` on a GPU; the live-bytes tracker's peak on the CPU."""
    peak_reserved_gib: float | None = None
    """``torch.cuda.max_memory_reserved`` (None on the CPU)."""
    peak_rss_gib: float
    step_seconds: list[float] = []


class LaunchResult(Frozen):
    """``loraplan probe --gpus N``: every rank's peak, the max over ranks, the per-GPU estimate."""

    mode: Literal["launch"] = "launch"
    model: str
    strategy: str
    path: str
    """Which wrapper ran (raw torch FSDP2 / FSDP1 / DDP)."""
    world_size: int
    device: Literal["cuda", "cpu"]
    plumbing_check: bool
    """True on the CPU (gloo): launch and gathering checked, the numbers are CPU live bytes, not a GPU's."""
    ranks: list[RankPeak]
    peak_allocated_gib: float
    """Max over ranks."""
    peak_reserved_gib: float | None = None
    estimate_allocated_gib: float | None = None
    """The estimator's per-GPU allocated peak for the same plan."""
    error_pct: float | None = None
    """``(estimate - measured) / measured * 100`` on the allocated peak."""
    seconds: float
    command: list[str]


def worker_strategy(parallel: ParallelSpec) -> str:
    """The worker's wrapper for ``parallel``, or one line saying why the launched probe cannot run it."""
    strategy = parallel.strategy
    if strategy is Strategy.NONE:
        if parallel.world_size > 1:
            raise PlannerError("--parallel none runs one GPU: use --parallel ddp, fsdp or fsdp2 with --gpus > 1")
        strategy = Strategy.DDP
    if parallel.offload is not Offload.NONE and strategy in (Strategy.DDP, Strategy.NONE):
        raise PlannerError(f"--offload {parallel.offload.value} needs a sharded engine (fsdp, fsdp2 or zero*), "
                           f"not --parallel {parallel.strategy.value}")
    if strategy.is_zero:
        if importlib.util.find_spec("deepspeed") is None:
            raise PlannerError(f"--parallel {strategy.value} needs DeepSpeed installed (pip install deepspeed)")
        raise PlannerError(f"the launched probe runs fsdp2, fsdp or ddp; --parallel {strategy.value} is not run yet")
    if strategy not in WORKER_STRATEGY:
        raise PlannerError(f"the launched probe runs fsdp2, fsdp or ddp, not --parallel {strategy.value}")
    if parallel.nodes != 1:
        raise PlannerError("the launched probe runs on one node (--nodes 1)")
    return WORKER_STRATEGY[strategy]


def _visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(device: str, gpus: int) -> Literal["cuda", "cpu"]:
    """``auto``: cuda when there is a GPU; checks ``--gpus`` against the detected count on cuda."""
    if device == "auto":
        device = "cuda" if _visible_gpus() else "cpu"
    if device == "cuda":
        found = _visible_gpus()
        if found == 0:
            raise PlannerError("--device cuda: no GPU detected (use --device cpu for the gloo plumbing check)")
        if gpus > found:
            raise PlannerError(f"--gpus {gpus} is more than the {found} GPU(s) detected")
    return "cuda" if device == "cuda" else "cpu"


def launch_command(nproc: int, request: Path, out: Path) -> list[str]:
    """The torchrun command line (``python -m torch.distributed.run --standalone``)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
            "-m", "probes.dist_worker", "--request", str(request), "--out", str(out)]


def run_launch_probe(model: str, spec: TrainSpec, parallel: ParallelSpec, *, device: str = "auto", steps: int = 2,
                     gpu: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> LaunchResult:
    """Launch ``parallel.gpus`` ranks, gather their ``rank<R>.json`` and compare with the per-GPU estimate."""
    strategy = worker_strategy(parallel)
    chosen = resolve_device(device, parallel.gpus)
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    if chosen == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
        env.setdefault("OMP_NUM_THREADS", "1")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="loraplan-launch-") as tmp:
        folder = Path(tmp)
        request = folder / "request.json"
        with request.open("w") as fh:  # a file for the ranks, not output
            json.dump({"raw": raw_config(model), "spec": spec.model_dump(mode="json"), "strategy": strategy,
                       "offload": parallel.offload.value, "steps": steps}, fh)
        command = launch_command(parallel.gpus, request, folder)
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise PlannerError(f"the launched probe ran past {timeout_s:.0f} s and was stopped") from None
        records = [json.loads((folder / f"rank{r}.json").read_text())
                   for r in range(parallel.gpus) if (folder / f"rank{r}.json").exists()]
    failed = [r for r in records if "error" in r]
    if failed:
        raise PlannerError(f"rank {failed[0]['rank']} failed: {failed[0]['error']}")
    if done.returncode != 0 or len(records) != parallel.gpus:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise PlannerError(f"torch.distributed.run exited {done.returncode} with {len(records)} of "
                           f"{parallel.gpus} rank results: {tail}")
    ranks = [_rank(r) for r in sorted(records, key=lambda r: r["rank"])]
    peak = max(r.peak_allocated_gib for r in ranks)
    reserved = [r.peak_reserved_gib for r in ranks if r.peak_reserved_gib is not None]
    est = estimate(model, spec, gpu=load_gpu(gpu) if gpu else None, parallel=parallel)
    est_gib = est.peak_gib.allocated
    return LaunchResult(model=model, strategy=strategy, path=PATH[strategy], world_size=parallel.gpus, device=chosen,
                        plumbing_check=chosen == "cpu", ranks=ranks, peak_allocated_gib=peak,
                        peak_reserved_gib=max(reserved) if reserved else None, estimate_allocated_gib=est_gib,
                        error_pct=error_pct(est_gib, peak), seconds=time.perf_counter() - started,
                        command=["python", *command[1:]])


def _rank(record: dict) -> RankPeak:
    reserved = record.get("peak_reserved_bytes")
    return RankPeak(rank=record["rank"], device=record["device"], backend=record["backend"],
                    after_load_gib=record["after_load_bytes"] / GIB,
                    peak_allocated_gib=record["peak_allocated_bytes"] / GIB,
                    peak_reserved_gib=None if reserved is None else reserved / GIB,
                    peak_rss_gib=record["peak_rss_bytes"] / GIB, step_seconds=record.get("step_seconds", []))
