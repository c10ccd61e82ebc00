"""Estimate on a resolved stack, with the stack's ``stack`` object and warnings (:mod:`planner.estimator.stack_notes`)."""

from __future__ import annotations

from pathlib import Path

from planner.estimator.api import estimate_with_advice
from planner.estimator.stack_notes import with_stack
from planner.parallel.spec import ParallelSpec
from planner.results import Estimate
from planner.specs import TrainSpec
from planner.stack.resolve import Resolution


def estimate_with_stack(model: str, train: TrainSpec, gpu: str | None, calibrate: str | Path | None,
                        resolution: Resolution, parallel: ParallelSpec | None = None) -> Estimate:
    """:func:`estimate_with_advice` on ``resolution.stack``, then its stack notes."""
    est = estimate_with_advice(model, train, gpu, calibrate, parallel=parallel, stack=resolution.stack)
    return with_stack(est, resolution, lambda t: estimate_with_advice(model, t, gpu, calibrate, parallel=parallel))
