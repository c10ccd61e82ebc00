"""``plan_instances``: the best plan on all the GPUs of each catalogue instance, its time and cost, sorted by cost.

A multi-GPU instance runs the best data-parallel plan over all its GPUs (:mod:`planner.recommender.parallel`):
its tokens/s (and so the hours billed) include the communication the step cannot hide, so the cost reflects
the scaling efficiency instead of billing idle GPUs as if they worked.
"""

from __future__ import annotations

from collections.abc import Iterable

from planner.catalog import load_gpu, load_model
from planner.errors import PlannerError
from planner.inputs import check_number
from planner.recommender.catalogue import Instance, load_instances
from planner.recommender.parallel import search_counts
from planner.recommender.plan import build_plan, stack_assumptions
from planner.recommender.request import Request, make_request
from planner.recommender.schemas import InstanceResult, InstancesReport, Plan
from planner.recommender.search import best_plan
from planner.specs import ModelProfile
from planner.stack.stack import default_stack

ASSUMPTIONS = (
    "sorted by cost for the job (by USD per million tokens when no dataset size is given: the same order)",
    "on-demand list prices as dated per entry; override with --prices FILE or $LORAPLAN_INSTANCES",
    "multi-GPU instances use all their GPUs with the best data-parallel strategy (DDP, FSDP or DeepSpeed ZeRO); "
    "their time includes the communication not hidden behind compute (profiles/parallel.json comm)",
)


def _chosen(catalogue: tuple[Instance, ...], providers: Iterable[str] | None,
            max_price_per_hour: float | None) -> list[Instance]:
    """The catalogue entries of the wanted providers at or under the price cap (validated)."""
    known = {i.provider.lower() for i in catalogue}
    wanted = None
    if providers is not None:
        wanted = {p.strip().lower() for p in providers if p.strip()}
        if not wanted:
            raise PlannerError("--provider names no provider; give comma-separated names such as aws,gcp")
        unknown = sorted(wanted - known)
        if unknown:
            raise PlannerError(f"unknown provider {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}")
    check_number("price_per_hour", max_price_per_hour, label="--max-price-per-hour")
    return [
        i for i in catalogue
        if (wanted is None or i.provider.lower() in wanted)
        and (max_price_per_hour is None or i.price_per_hour <= max_price_per_hour)
    ]


def _gpu_plan(profile: ModelProfile, gpu_name: str, request: Request, gpus: int = 1,
              network: float | None = None) -> tuple[tuple[bool, Plan | None], int]:
    """((whether a GPU profile has this name, the best plan on ``gpus`` of it or None), configurations evaluated)."""
    try:
        gpu = load_gpu(gpu_name)
    except PlannerError:
        return (False, None), 0
    if gpus == 1:
        search, cand = best_plan(profile, gpu, request)
        return (True, build_plan(search, cand, with_code=False) if cand else None), search.evaluated
    found = search_counts(profile, gpu, request, [gpus], best_only=True, network=network, offload=False)
    if not found.candidates:
        return (True, None), found.evaluated
    best = min(found.candidates, key=lambda c: c.key)
    return (True, build_plan(found.search_of(best), best, with_code=False)), found.evaluated


def _result(inst: Instance, plan: Plan | None, has_profile: bool, effective_batch: int) -> InstanceResult:
    """One instance's row: fit, hours, cost and USD per million tokens."""
    hours = plan.hours if plan else None
    cost = round(hours * inst.price_per_hour, 2) if hours is not None else None
    hours_range = plan.hours_range if plan else None
    cost_range = (round(hours_range[0] * inst.price_per_hour, 2),
                  round(hours_range[1] * inst.price_per_hour, 2)) if hours_range else None
    per_mtok = round(inst.price_per_hour / (plan.tokens_per_s * 3600.0) * 1e6, 6) if plan else None
    note = None
    if not has_profile:
        note = f"no GPU profile named {inst.gpu!r}"
    elif inst.gpus > 1 and effective_batch % inst.gpus:
        note = f"--effective-batch {effective_batch} does not split over {inst.gpus} GPUs: no data-parallel plan"
    elif plan is not None and plan.parallel is not None and plan.comm is not None:
        note = (f"{inst.gpus} GPUs, {plan.parallel.strategy}: {plan.comm.scaling_efficiency:.0%} scaling efficiency "
                f"({plan.comm.link})")
    return InstanceResult(
        provider=inst.provider, instance=inst.instance, gpu=inst.gpu, gpus=inst.gpus,
        price_per_hour=inst.price_per_hour, fits=plan is not None, plan=plan, hours=hours, cost=cost,
        hours_range=hours_range, cost_range=cost_range, cost_per_mtok=per_mtok, region=inst.region, price_date=inst.date, price_source=inst.source, note=note,
    )


def _sorted_marking_fastest(results: list[InstanceResult]) -> list[InstanceResult]:
    """Fitting first, cheapest first; ``fastest`` set on the shortest job among the fitting ones."""
    results = sorted(results, key=lambda r: (not r.fits, r.cost_per_mtok if r.cost_per_mtok is not None
                                             else r.price_per_hour, r.price_per_hour, r.provider, r.instance))
    fitting = [r for r in results if r.fits]
    if not fitting:
        return results
    fastest = min(fitting, key=lambda r: (-(r.plan.tokens_per_s if r.plan else 0), r.price_per_hour))
    return [r.model_copy(update={"fastest": True}) if r is fastest else r for r in results]


def plan_instances(
    model: ModelProfile | str,
    *,
    request: Request | None = None,
    prices: str | None = None,
    providers: Iterable[str] | None = None,
    max_price_per_hour: float | None = None,
    **options: object,
) -> InstancesReport:
    """For each catalogue instance: the best plan on all its GPUs, its time and cost; sorted by cost.

    Multi-GPU instances run the best data-parallel plan over every GPU (``plan.parallel``); its tokens/s
    include the exposed communication, so hours and cost reflect the scaling efficiency. ``fastest`` marks
    the shortest job among fitting ones.

    Args:
        model: profile or name (anything :func:`planner.load_model` resolves).
        request: a :class:`Request`, or its fields as keyword ``options`` (see :func:`make_request`).
        prices: user price file merged over the instance catalogue.
        providers: only these providers (case-insensitive); unknown names are an error.
        max_price_per_hour: skip instances above this USD per instance-hour.
    """
    profile = load_model(model) if isinstance(model, str) else model
    request = request or make_request(**options)  # type: ignore[arg-type]
    per_gpu: dict[tuple[str, int], tuple[bool, Plan | None]] = {}
    searched = 0
    results: list[InstanceResult] = []
    for inst in _chosen(load_instances(prices), providers, max_price_per_hour):
        key = (inst.gpu, inst.gpus)
        if key not in per_gpu:
            per_gpu[key], evaluated = _gpu_plan(profile, inst.gpu, request, inst.gpus)
            searched += evaluated
        has_profile, plan = per_gpu[key]
        results.append(_result(inst, plan, has_profile, request.effective_batch))
    return InstancesReport(instances=tuple(_sorted_marking_fastest(results)), model=profile.name,
                           dataset=request.dataset(), assumptions=ASSUMPTIONS + _stack_notes(request),
                           searched=searched,
                           stack=request.resolved_stack().ref(request.stack_detected))


def _stack_notes(request: Request) -> tuple[str, ...]:
    """A named stack's assumptions (none for the default stack, whose plans the catalogue was sized on)."""
    return () if request.stack is None or request.stack.name == default_stack().name else tuple(
        stack_assumptions(request))
