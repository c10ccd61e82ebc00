"""``recommend``: training plans for a model on a GPU, fastest first within quality tiers."""

from __future__ import annotations

from planner.catalog import load_gpu, load_model
from planner.errors import PlannerError
from planner.estimator import usable_gib
from planner.recommender.alternatives import alternatives
from planner.recommender.parallel import network_gbps, search_counts
from planner.recommender.plan import assumptions, build_plan, parallel_assumption
from planner.recommender.reasons import nothing_fits_reason
from planner.recommender.request import Request, make_request
from planner.recommender.schemas import GpuBudget, Recommendation
from planner.recommender.search import Search, full_search, select
from planner.specs import GpuProfile, ModelProfile

NO_GPU = "recommend needs a GPU (name or GpuProfile); the CLI detects the local one"


def _gpu_budget(search: Search, detected: bool) -> GpuBudget:
    gpu = search.gpu
    return GpuBudget(name=gpu.name, memory_gib=gpu.memory_gib, usable_gib=round(usable_gib(gpu), 3),
                     budget_gib=round(search.budget, 3), headroom=search.request.headroom, detected=detected)


def recommend(
    model: ModelProfile | str,
    gpu: GpuProfile | str,
    *,
    request: Request | None = None,
    gpu_detected: bool = False,
    with_alternatives: bool = True,
    with_code: bool = True,
    prices: str | None = None,
    **options: object,
) -> Recommendation:
    """Recommend training plans for ``model`` on ``gpu``, fastest first within quality tiers.

    Args:
        model: profile or name (anything :func:`planner.load_model` resolves).
        gpu: profile or name (anything :func:`planner.load_gpu` resolves). Detecting the local GPU is
            the caller's job (the CLI does it).
        request: a :class:`Request`; or pass its fields as keyword arguments (``dataset_tokens=20e6``,
            ``examples=..., avg_tokens=...``, ``seq_len``, ``effective_batch``, ``epochs``, ``task``,
            ``headroom``, ``top``, ``methods``) - validated by :func:`make_request`.
        gpu_detected: ``gpu`` was detected on this machine (reported as ``gpu.detected``).
        with_alternatives: when nothing fits, also search the smallest GPUs and cheapest instances that fit.
        with_code: attach ready-to-paste snippets to each plan.
        prices: user price file merged over the instance catalogue (alternatives only).

    Returns:
        A :class:`Recommendation`; ``plans`` is empty and ``reason`` says why when nothing fits.

    Raises:
        PlannerError: no GPU given, unknown model or GPU, or invalid request fields.
    """
    if gpu is None:
        raise PlannerError(NO_GPU)
    profile = load_model(model) if isinstance(model, str) else model
    gpu_profile = load_gpu(gpu) if isinstance(gpu, str) else gpu
    request = request or make_request(**options)  # type: ignore[arg-type]
    counts = request.gpu_counts()
    if counts == [1]:
        search, cands = full_search(profile, gpu_profile, request)
        plans = tuple(build_plan(search, c, with_code) for c in select(cands, request.top))
        evaluated, notes = search.evaluated, assumptions(search)
    else:
        found = search_counts(profile, gpu_profile, request, counts, network=network_gbps(gpu_profile, prices))
        search = found.searches[0]
        plans = tuple(build_plan(found.search_of(c), c, with_code) for c in select(found.candidates, request.top))
        evaluated, notes = found.evaluated, assumptions(search)
        if found.world > 1:
            first = plans[0] if plans else None
            link = first.comm.link if first and first.comm else None
            nodes = first.parallel.nodes if first and first.parallel else 1
            notes[-1] = parallel_assumption(found.world, nodes, link)
    reason = None if plans else nothing_fits_reason(search)
    if reason and counts != [1]:
        many = f"{' / '.join(map(str, counts))} x {gpu_profile.name} (every strategy)"
        reason = reason.replace(f"nothing fits {gpu_profile.name}:", f"nothing fits {many}:", 1)
    alts = alternatives(profile, request, prices=prices, gpu=gpu_profile) if not plans and with_alternatives else None
    return Recommendation(
        model=profile.name,
        gpu=_gpu_budget(search, gpu_detected),
        plans=plans,
        reason=reason,
        dataset=request.dataset(),
        task=request.task,
        utilization=search.util[request.methods[0]],
        assumptions=tuple(notes),
        searched=evaluated,
        alternatives=alts,
        stack=request.resolved_stack().ref(request.stack_detected),
    )
