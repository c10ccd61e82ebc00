"""Recommend training plans for a GPU, and cost them on cloud instances.

Modules, one job each: :mod:`~planner.recommender.request` (what the user asked for),
:mod:`~planner.recommender.search` (the joint search and ranking), :mod:`~planner.recommender.rules`
(quality policy and hyperparameters), :mod:`~planner.recommender.reasons` (the "why" lines),
:mod:`~planner.recommender.plan` (a candidate as a plan, code snippets from
:mod:`~planner.recommender.snippets`), :mod:`~planner.recommender.alternatives` (when nothing fits),
:mod:`~planner.recommender.instances` (cost on the instance catalogue, :mod:`~planner.recommender.catalogue`),
:mod:`~planner.recommender.schemas` (the result models) and :mod:`~planner.recommender.api` (:func:`recommend`).
"""

from planner.recommender.api import recommend
from planner.recommender.instances import plan_instances
from planner.recommender.request import Request, make_request
from planner.recommender.schemas import InstancesReport, Plan, Recommendation

__all__ = ["InstancesReport", "Plan", "Recommendation", "Request", "make_request", "plan_instances", "recommend"]
