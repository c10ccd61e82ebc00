"""Recommend training plans for a GPU, and cost them on cloud instances.

Modules, one job each: :mod:`~planner.recommender.request` (what the user asked for),
:mod:`~planner.recommender.search` (the joint search and ranking), :mod:`~planner.recommender.rules`
(quality policy and hyperparameters), :mod:`~planner.recommender.reasons` (the "why" lines),
:mod:`~planner.recommender.plan` (a candidate as a plan, code snippets from
:mod:`~planner.recommender.snippets`), :mod:`~planner.recommender.alternatives` (when nothing fits),
:mod:`~planner.recommender.instances` (cost on the instance catalogue, :mod:`~planner.recommender.catalogue`),
:mod:`~planner.recommender.schemas` (the result models) and :mod:`~planner.recommender.api` (:func:`recommend`).
"""

from __future__ import annotations

import importlib
from typing import Any

# Resolved lazily (PEP 562) so that the CLI, which needs only the request options' enums at import,
# loads the search and the time model only when a recommend/instances command runs.
_EXPORTS = {
    "recommend": "planner.recommender.api",
    "plan_instances": "planner.recommender.instances",
    "Request": "planner.recommender.request",
    "make_request": "planner.recommender.request",
    "InstancesReport": "planner.recommender.schemas",
    "Plan": "planner.recommender.schemas",
    "Recommendation": "planner.recommender.schemas",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'planner.recommender' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
