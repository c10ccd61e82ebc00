"""When nothing fits: the smallest GPU profiles, and the cheapest instances, on which some plan does."""

from __future__ import annotations

from collections.abc import Callable

from planner.catalog import gpu_profiles, load_gpu
from planner.errors import PlannerError
from planner.recommender.catalogue import load_instances
from planner.recommender.request import Request
from planner.recommender.schemas import Alternatives, GpuCountOption, GpuOption, InstanceOption
from planner.recommender.search import Candidate, best_plan
from planner.specs import GpuProfile, ModelProfile

_Best = Callable[[GpuProfile], Candidate | None]


def _gpu_options(best: _Best, limit: int) -> list[GpuOption]:
    """The ``limit`` smallest GPU profiles on which a plan fits, smallest first."""
    gpus: list[GpuOption] = []
    for gpu in sorted(gpu_profiles(), key=lambda g: (g.memory_gib, g.name)):
        c = best(gpu)
        if c is not None:
            gpus.append(GpuOption(name=gpu.name, memory_gib=gpu.memory_gib, method=c.train.method, targets=c.targets,
                                  hours=c.hours, tokens_per_s=round(c.time.tokens_per_s, 1)))
        if len(gpus) >= limit:
            break
    return gpus


def _instance_options(best: _Best, limit: int, prices: str | None) -> list[InstanceOption]:
    """The ``limit`` instances with the cheapest job on which a plan fits, cheapest first."""
    insts: list[tuple[float, InstanceOption]] = []
    for inst in load_instances(prices):
        try:
            gpu = load_gpu(inst.gpu)
        except PlannerError:
            continue
        c = best(gpu)
        if c is None:
            continue
        per_token = inst.price_per_hour / c.time.tokens_per_s  # orders like the job's cost
        insts.append((per_token, InstanceOption(
            provider=inst.provider, instance=inst.instance, gpu=inst.gpu, gpus=inst.gpus,
            price_per_hour=inst.price_per_hour, hours=c.hours,
            cost=None if c.hours is None else round(c.hours * inst.price_per_hour, 2))))
    insts.sort(key=lambda x: (x[0], x[1].price_per_hour))
    return [o for _, o in insts[:limit]]


MORE_GPUS_UP_TO = 64
"""How far :func:`more_gpus` looks (8 nodes of 8)."""


def more_gpus(profile: ModelProfile, gpu: GpuProfile, request: Request, prices: str | None = None
              ) -> GpuCountOption | None:
    """The fewest GPUs of kind ``gpu`` beyond the request's counts (up to 64) on which some plan fits."""
    from planner.recommender.counts import gpu_counts
    from planner.recommender.parallel import network_gbps, search_counts

    counts = [n for n in gpu_counts(MORE_GPUS_UP_TO) if n > max(request.gpu_counts())]
    if not counts:
        return None
    found = search_counts(profile, gpu, request, counts, best_only=True, network=network_gbps(gpu, prices),
                          offload=False)
    if not found.candidates:
        return None
    c = min(found.candidates, key=lambda c: c.key)
    p = c.parallel
    return GpuCountOption(gpus=found.world, nodes=p.nodes if p else 1, strategy=p.strategy.value if p else "none",
                          method=c.train.method, targets=c.targets, peak_gib=round(c.estimate.peak_gib.device, 3),
                          hours=None if c.hours is None else round(c.hours, 3),
                          tokens_per_s=round(c.time.tokens_per_s, 1))


def alternatives(profile: ModelProfile, request: Request, limit: int = 3, prices: str | None = None,
                 gpu: GpuProfile | None = None) -> Alternatives:
    """The smallest GPU profiles, and the instances with the cheapest job, on which some plan fits.

    Args:
        profile: the model.
        request: what the user asked for.
        limit: how many of each to list.
        prices: user price file merged over the instance catalogue.
        gpu: the requested GPU: also say how many of it would fit (``more_gpus``).
    """
    fits: dict[str, Candidate | None] = {}

    def best(gpu: GpuProfile) -> Candidate | None:
        if gpu.name not in fits:
            fits[gpu.name] = best_plan(profile, gpu, request)[1]
        return fits[gpu.name]

    return Alternatives(gpus=tuple(_gpu_options(best, limit)), instances=tuple(_instance_options(best, limit, prices)),
                        more_gpus=more_gpus(profile, gpu, request, prices) if gpu is not None else None)
