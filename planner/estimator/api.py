"""Library entry points that combine the pieces: estimate + GPU + calibration + advice."""

from __future__ import annotations

from pathlib import Path

from planner.estimator.advice import advise
from planner.calibration import cached_calibration, load_calibration
from planner.catalog import load_gpu, load_model
from planner.estimator.core import estimate
from planner.estimator.fits import DEFAULT_HEADROOM
from planner.results import Estimate
from planner.specs import TrainSpec


def estimate_with_advice(
    model: str,
    train: TrainSpec,
    gpu: str | None = None,
    calibrate: str | Path | None = None,
    headroom: float = DEFAULT_HEADROOM,
) -> Estimate:
    """Estimate, using a probe calibration when given (or cached for the GPU), and attach advice when it does
    not fit; fit and advice use the same rule (:mod:`planner.estimator.fits`)."""
    profile = load_model(model)
    gpu_profile = load_gpu(gpu) if gpu else None
    calibration = load_calibration(calibrate) if calibrate else None
    if calibration is None and gpu_profile is not None:
        calibration = cached_calibration(gpu_profile.name)
    est = estimate(profile, train, gpu_profile, calibration, headroom=headroom)
    if est.fits is False and gpu_profile is not None:
        advice = advise(profile, train, gpu_profile, lambda m, t, g: estimate(m, t, g, calibration, headroom=headroom))
        est = est.model_copy(update={"advice": advice})
    return est
