"""Library entry points that combine the pieces: estimate + GPU + calibration + advice."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from planner.estimator.advice import advise
from planner.calibration import Calibration, cached_calibration, calibration_matches, load_calibration
from planner.catalog import load_gpu, load_model
from planner.estimator.core import estimate
from planner.estimator.fits import DEFAULT_HEADROOM
from planner.parallel.spec import ParallelSpec
from planner.results import Estimate
from planner.specs import GpuProfile, ModelProfile, TrainSpec
from planner.stack.stack import Stack


@dataclass(frozen=True)
class Resolved:
    """A model, an optional GPU and the calibration that applies to it: what every estimate of a run shares."""

    model: ModelProfile
    gpu: GpuProfile | None
    calibration: Calibration | None
    headroom: float = DEFAULT_HEADROOM
    """Fraction of usable GPU memory kept free by the fit rule."""
    warnings: tuple[str, ...] = ()
    """Added to every estimate (e.g. a calibration from another GPU, not applied)."""
    parallel: ParallelSpec | None = None
    """Where the step runs (None: one GPU)."""
    stack: Stack | None = None
    """The training stack (default: :func:`planner.stack.stack.default_stack`)."""

    def run(self, train: TrainSpec) -> Estimate:
        """Estimate ``train`` for this model, GPU, calibration, fit rule, stack and GPUs."""
        est = estimate(self.model, train, self.gpu, self.calibration, parallel=self.parallel, stack=self.stack,
                       headroom=self.headroom)
        return est.model_copy(update={"warnings": self.warnings + est.warnings}) if self.warnings else est


def resolve(model: str, gpu: str | None = None, calibrate: str | Path | None = None,
            headroom: float = DEFAULT_HEADROOM) -> Resolved:
    """Load the model and GPU profiles and pick the calibration: ``calibrate`` when given, else the GPU's cached one."""
    profile = load_model(model)
    gpu_profile = load_gpu(gpu) if gpu else None
    calibration = load_calibration(calibrate) if calibrate else None
    warnings: tuple[str, ...] = ()
    if calibration is not None and gpu_profile is not None and not calibration_matches(calibration, gpu_profile):
        warnings = (f"calibration {calibrate} was measured on {calibration.gpu!r}, not {gpu_profile.name}: "
                    "not applied (the shipped runtime constants are used)",)
        calibration = None
    if calibration is None and gpu_profile is not None and not calibrate:
        calibration = cached_calibration(gpu_profile.name)
    return Resolved(profile, gpu_profile, calibration, headroom, warnings)


def estimate_with_advice(
    model: str,
    train: TrainSpec,
    gpu: str | None = None,
    calibrate: str | Path | None = None,
    headroom: float = DEFAULT_HEADROOM,
    parallel: ParallelSpec | None = None,
    stack: Stack | None = None,
) -> Estimate:
    """Estimate, using a probe calibration when given (or cached for the GPU), and attach advice when it does
    not fit; fit and advice use the same rule (:mod:`planner.estimator.fits`)."""
    inputs = resolve(model, gpu, calibrate, headroom)
    if parallel is not None:
        inputs = replace(inputs, parallel=parallel)
    if stack is not None:
        inputs = replace(inputs, stack=stack)
    est = inputs.run(train)
    if est.fits is False and inputs.gpu is not None:
        advice = advise(inputs.model, train, inputs.gpu, lambda m, t, g: inputs.run(t))
        est = est.model_copy(update={"advice": advice})
    return est
