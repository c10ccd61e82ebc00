"""Per-GPU overhead measured by a probe: CUDA context and allocator reserve.

``loraplan probe --save PATH`` writes a result whose ``calibration`` object holds
``{"gpu", "cuda_context_gib", "allocator_reserve_fraction", ...}``; ``loraplan estimate --calibrate PATH``
reads it, and a copy under :func:`calibration_dir` (``$XDG_CACHE_HOME/loraplan/calibration/<gpu>.json``)
is picked up automatically for that GPU.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from planner.errors import PlannerError


@dataclass(frozen=True)
class Calibration:
    """Measured overhead for one GPU."""

    gpu: str
    cuda_context_gib: float
    allocator_reserve_fraction: float


def calibration_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "loraplan" / "calibration"


def calibration_path(gpu_name: str) -> Path:
    return calibration_dir() / (gpu_name.lower().replace(" ", "-") + ".json")


def load_calibration(path: str | Path) -> Calibration:
    """Read the ``calibration`` object of a saved probe result (or a bare calibration object)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise PlannerError(f"cannot read calibration {path}: {err}") from None
    cal = data.get("calibration", data) if isinstance(data, dict) else None
    try:
        return Calibration(
            gpu=str(cal["gpu"]),
            cuda_context_gib=float(cal["cuda_context_gib"]),
            allocator_reserve_fraction=float(cal["allocator_reserve_fraction"]),
        )
    except (KeyError, TypeError, ValueError):
        raise PlannerError(
            f"{path} has no calibration (expected gpu, cuda_context_gib, allocator_reserve_fraction)"
        ) from None


def cached_calibration(gpu_name: str) -> Calibration | None:
    """The calibration saved for ``gpu_name`` under the user's cache dir, if any."""
    path = calibration_path(gpu_name)
    return load_calibration(path) if path.is_file() else None
