"""Per-GPU overhead measured by a probe: CUDA context and allocator reserve.

``loraplan probe --save PATH`` writes a result whose ``calibration`` object is a :class:`Calibration`
(``{"gpu", "profile", "cuda_context_gib", "allocator_reserve_gib", "allocator_reserve_fraction"}``);
``loraplan estimate --calibrate PATH`` reads it, and a successful GPU probe stores a copy under
:func:`calibration_dir` (``$XDG_CACHE_HOME/loraplan/calibration/<gpu>.json``) that is picked up
automatically for that GPU. One type for the probe that measures it and the estimator that uses it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import ConfigDict, Field, StrictFloat, ValidationError

from planner.errors import PlannerError
from planner.inputs import describe, read_json_file
from planner.specs import Frozen, GpuProfile


class Calibration(Frozen):
    """Measured overhead for one GPU (GiB = 2**30 bytes). Finite, non-negative; see the field bounds."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True, allow_inf_nan=False)

    gpu: str = Field(min_length=1)
    """Device name as torch reports it (``torch.cuda.get_device_name``), or the profile name."""
    profile: str | None = None
    """Matching shipped GPU profile, if any."""
    cuda_context_gib: StrictFloat = Field(ge=0, le=16)
    """Bounded by 16 GiB: measured contexts are 0.3-1.5 GiB (CUDA 12 lazy loading); more is a bad file."""
    """NVML device use minus torch's reserved memory at a quiet point (after load)."""
    allocator_reserve_gib: StrictFloat | None = Field(default=None, ge=0)
    """``peak_reserved - peak_allocated`` of the probe that measured it."""
    allocator_reserve_fraction: StrictFloat = Field(ge=0, le=1)
    """``allocator_reserve_gib / peak_allocated``: the caching allocator's reserve over allocated memory."""


def calibration_dir() -> Path:
    """``$XDG_CACHE_HOME/loraplan/calibration`` (``~/.cache`` without ``XDG_CACHE_HOME``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "loraplan" / "calibration"


def calibration_path(gpu_name: str) -> Path:
    """Where the calibration of ``gpu_name`` is cached."""
    return calibration_dir() / (gpu_name.lower().replace(" ", "-") + ".json")


def load_calibration(path: str | Path) -> Calibration:
    """Read the ``calibration`` object of a saved probe result (or a bare calibration object).

    Raises:
        PlannerError: the file cannot be read or holds no calibration.
    """
    data = read_json_file(path, "calibration file")
    cal = data.get("calibration", data) if isinstance(data, dict) else None
    if not isinstance(cal, dict) or not {"gpu", "cuda_context_gib", "allocator_reserve_fraction"} <= set(cal):
        raise PlannerError(f"{path} has no calibration (expected gpu, cuda_context_gib, allocator_reserve_fraction)")
    try:
        return Calibration.model_validate({k: v for k, v in cal.items() if k in Calibration.model_fields})
    except ValidationError as err:
        raise PlannerError(describe(err, cli=False, prefix=f"calibration {path}: ")) from None


def calibration_matches(calibration: Calibration, gpu: GpuProfile) -> bool:
    """Whether ``calibration`` was measured on ``gpu`` (its profile name, device name or an alias)."""
    from planner.catalog import match_gpu

    names = {gpu.name.lower(), *(a.lower() for a in gpu.aliases)}
    if (calibration.profile or "").lower() in names or calibration.gpu.lower() in names:
        return True
    return match_gpu(calibration.gpu, gpu.memory_gib) == gpu


def cached_calibration(gpu_name: str) -> Calibration | None:
    """The calibration saved for ``gpu_name`` under the user's cache dir, if any."""
    path = calibration_path(gpu_name)
    return load_calibration(path) if path.is_file() else None


def cache_calibration(calibration: Calibration) -> Path | None:
    """Store ``calibration`` where :func:`cached_calibration` finds it (keyed by profile, else device name).

    Returns:
        The path written, or None when the cache dir is not writable (caching is best effort).
    """
    path = calibration_path(calibration.profile or calibration.gpu)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"calibration": calibration.model_dump(mode="json")}, indent=2) + "\n")
    except OSError:
        return None
    return path
