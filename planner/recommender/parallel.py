"""Multi-GPU search: GPU counts and data-parallel strategies, each candidate timed with its communication.

Counts: 1, 2, 4, 8 GPUs in one node, then whole nodes of ``gpus_per_node`` (16, 24, ...), up to the
user's ``--max-gpus`` (or exactly ``--gpus``). Strategies per method (:data:`STRATEGIES`): LoRA and QLoRA
train few parameters, so replicating them (DDP) or sharding the frozen base (FSDP, ZeRO-3) are the
choices; full fine-tuning shards optimizer state at least (FSDP, FSDP2, ZeRO-1/2/3). Fewer GPUs win;
among the strategies of one count the usual ranking (quality tier, then tokens/s) decides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from planner.calibration import cached_calibration
from planner.estimator import estimate
from planner.memory.context import build_context
from planner.parallel.spec import Offload, ParallelSpec, QuantStorage, Strategy
from planner.recommender import rules
from planner.recommender.catalogue import load_instances
from planner.recommender.counts import gpu_counts, gpus_per_node
from planner.recommender.request import Request
from planner.recommender.search import Candidate, Search
from planner.results import Estimate
from planner.specs import GpuProfile, Method, ModelProfile, Optim, TrainSpec
from planner.time import TimeBreakdown
from planner.time.comm import data_parallel_time

STRATEGIES: dict[Method, tuple[Strategy, ...]] = {
    Method.LORA: (Strategy.DDP, Strategy.FSDP, Strategy.ZERO2, Strategy.ZERO3),
    Method.QLORA: (Strategy.DDP, Strategy.FSDP, Strategy.ZERO2, Strategy.ZERO3),
    Method.FULL: (Strategy.FSDP, Strategy.FSDP2, Strategy.ZERO1, Strategy.ZERO2, Strategy.ZERO3),
}
"""Strategies searched per method without offload."""

OFFLOADS: dict[Method, tuple[tuple[Strategy, Offload], ...]] = {
    Method.LORA: ((Strategy.ZERO3, Offload.PARAMS), (Strategy.FSDP, Offload.PARAMS)),
    Method.QLORA: ((Strategy.ZERO3, Offload.PARAMS), (Strategy.FSDP, Offload.PARAMS)),
    Method.FULL: ((Strategy.ZERO2, Offload.OPTIMIZER), (Strategy.ZERO3, Offload.OPTIMIZER),
                  (Strategy.ZERO3, Offload.PARAMS), (Strategy.FSDP, Offload.PARAMS)),
}
"""Offloading strategies, searched only when nothing fits without offload (and host RAM allows)."""


def parallel_spec(world: int, strategy: Strategy, offload: Offload = Offload.NONE) -> ParallelSpec:
    """``world`` GPUs as one node (up to ``gpus_per_node``) or whole nodes, under ``strategy``."""
    node = gpus_per_node()
    if world <= node:
        return ParallelSpec(strategy=strategy, gpus=world, nodes=1, offload=offload)
    return ParallelSpec(strategy=strategy, gpus=node, nodes=math.ceil(world / node), offload=offload)


def network_gbps(gpu: GpuProfile, prices: str | None = None) -> float | None:
    """The fastest inter-node network of a catalogued instance with ``gpu`` (Gbit/s), None if none."""
    speeds = [i.network_gbps for i in load_instances(prices) if i.gpu == gpu.name and i.network_gbps]
    return max(speeds) if speeds else None


@dataclass
class ParallelSearch(Search):
    """A :class:`Search` for one strategy on ``world`` GPUs: per-GPU memory, data-parallel time."""

    parallel: ParallelSpec = field(default_factory=ParallelSpec)
    network: float | None = None
    """Inter-node network per node (Gbit/s) for multi-node plans."""
    _comm: dict = field(default_factory=dict)

    @property
    def world(self) -> int:
        return self.parallel.world_size

    def allows(self, method: Method) -> bool:
        if self.parallel.offload is not Offload.NONE:
            return (self.parallel.strategy, self.parallel.offload) in OFFLOADS[method]
        return self.parallel.strategy in STRATEGIES[method]

    def fits(self, est: Estimate) -> bool:
        """The device fit rule, and the offloaded state within ``--host-ram`` per node when given."""
        ram = self.request.host_ram_gib
        return bool(est.fits) and (ram is None or (est.host_gib or 0.0) <= ram)

    def parallel_for(self, method: Method) -> ParallelSpec:
        """QLoRA under sharding stores its 4-bit weights as bf16 (shardable, same bytes)."""
        if method is Method.QLORA and (self.parallel.strategy.is_fsdp or self.parallel.strategy is Strategy.ZERO3):
            return self.parallel.model_copy(update={"quant_storage": QuantStorage.BF16})
        return self.parallel

    def estimate(self, train: TrainSpec) -> Estimate:
        est = self._cache.get(train)
        if est is None:
            est = estimate(self.profile, train, self.gpu, self.calibration, parallel=self.parallel_for(train.method),
                           headroom=self.request.headroom)
            self._cache[train] = est
            self.evaluated += 1
        return est

    def micro_batches(self) -> list[int]:
        """Per-GPU micro-batches: divisors of the effective batch / world size (none when it does not divide)."""
        from planner.recommender.search import divisors

        if self.request.effective_batch % self.world:
            return []
        return divisors(self.request.effective_batch // self.world)

    def spec(self, method: Method, targets: str | None, rank: int, mb: int, ckpt: bool, optim: Optim,
             kbit_prepare: bool = True) -> TrainSpec:
        train = super().spec(method, targets, rank, mb, ckpt, optim, kbit_prepare)
        update: dict[str, object] = {"grad_accum": max(1, self.request.effective_batch // (mb * self.world))}
        if self.parallel.strategy.is_zero:
            update["fp32_master"] = False  # DeepSpeed's 16-bit engine keeps its own fp32 master partition
        return train.model_copy(update=update)

    def timing(self, train: TrainSpec) -> tuple[TimeBreakdown, float | None]:
        single, _ = super().timing(train)
        timed = train.model_copy(update={"seq_len": self.request.time_seq_len()})
        t, comm = data_parallel_time(build_context(self.profile.config, timed), self.parallel_for(train.method),
                                     self.gpu, single, train.grad_accum, self.network)
        self._comm[train] = comm
        tokens = self.request.tokens()
        hours = tokens * self.request.epochs / t.tokens_per_s / 3600.0 if tokens is not None else None
        return t, hours

    def _candidate(self, train: TrainSpec, est: Estimate, targets: str | None, rank_tier: int) -> Candidate:
        c = super()._candidate(train, est, targets, rank_tier)
        c.parallel = self.parallel_for(train.method)
        c.comm = self._comm.get(train)
        return c


def searches(profile: ModelProfile, gpu: GpuProfile, request: Request, world: int,
             network: float | None = None, offload: bool = False) -> list[Search]:
    """One search per strategy on ``world`` GPUs (the plain single-GPU search for one; ``offload``: the
    offloading strategies of :data:`OFFLOADS` instead, multi-GPU only)."""
    calibration = cached_calibration(gpu.name)
    if offload:
        combos = list(dict.fromkeys(c for m in request.methods for c in OFFLOADS[m])) if world > 1 else []
    elif world == 1:
        return [Search(profile, gpu, request, calibration=calibration)]
    else:
        combos = [(s, Offload.NONE) for s in dict.fromkeys(s for m in request.methods for s in STRATEGIES[m])]
    return [ParallelSearch(profile, gpu, request, calibration=calibration, parallel=parallel_spec(world, s, o),
                           network=network) for s, o in combos]


@dataclass
class CountResult:
    """The searches of the first GPU count with a fitting plan (or of the last count tried)."""

    world: int
    searches: list[Search]
    candidates: list[Candidate]
    evaluated: int
    """Configurations evaluated over every count tried."""

    def search_of(self, c: Candidate) -> Search:
        """The search that produced ``c``."""
        for s in self.searches:
            if c.parallel is None and not isinstance(s, ParallelSearch):
                return s
            if isinstance(s, ParallelSearch) and c.parallel is not None and s.parallel.strategy is c.parallel.strategy \
                    and s.parallel.offload is c.parallel.offload:
                return s
        return self.searches[0]


def search_counts(profile: ModelProfile, gpu: GpuProfile, request: Request, counts: list[int],
                  best_only: bool = False, network: float | None = None, offload: bool = True) -> CountResult:
    """Search ``counts`` in order; stop at the first with a fitting plan (fewer GPUs first). When none fits
    without offload, the offloading strategies are searched over the same counts.

    ``best_only``: per strategy only the first quality tier that fits (what ``instances`` needs);
    ``offload`` False: never offload (``instances``: the catalogue does not list host RAM).
    """
    rank, _ = rules.recommended_rank(request.tokens(), request.task)
    evaluated = 0
    result = CountResult(counts[-1], [], [], 0)
    for offloading in (False, True) if offload else (False,):
        for world in counts:
            found: list[Candidate] = []
            tried = searches(profile, gpu, request, world, network, offloading)
            if not tried:
                continue
            for s in tried:
                if (best_only or offloading) and not s.feasible():
                    evaluated += s.evaluated
                    continue
                found += s.run(rank, best_only=best_only)
                evaluated += s.evaluated
            if found or not offloading:
                result = CountResult(world, tried, found, evaluated)
            if found:
                return result
    result.evaluated = evaluated
    return result
