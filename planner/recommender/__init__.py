"""Recommend training plans for a GPU, and cost them on cloud instances."""

from planner.recommender.core import (  # noqa: F401 - the package's public API
    InstancesReport,
    Plan,
    Recommendation,
    make_request,
    plan_instances,
    recommend,
)
