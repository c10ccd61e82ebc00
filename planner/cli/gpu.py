"""The local GPU, for commands that default to it (``loraplan recommend`` without ``--gpu``).

Detection is the CLI's job: it reads :func:`probes.detect.detect_gpus` (NVML / ``torch.cuda``; imports
torch, so only when ``--gpu`` is not given) and hands the library a :class:`~planner.specs.GpuProfile`.
"""

from __future__ import annotations

from planner.catalog import load_gpu
from planner.errors import PlannerError
from planner.specs import GpuProfile

NO_GPU_MESSAGE = "no --gpu given and no GPU detected; pass --gpu (e.g. --gpu 4090)"


def detect_gpu_profile() -> GpuProfile:
    """The shipped profile matching the first visible CUDA GPU (device 0)."""
    return detect_gpu_profile_and_count()[0]


def detect_gpu_profile_and_count() -> tuple[GpuProfile, int]:
    """The shipped profile matching the first visible CUDA GPU (device 0), and how many visible GPUs match it.

    Raises:
        PlannerError: no GPU is visible (or the probe extra is not installed), or the detected GPU
            matches no shipped profile.
    """
    try:
        from probes.detect import detect_gpus  # heavy: torch and pynvml, only when --gpu is not given

        gpus = detect_gpus()
    except Exception:  # noqa: BLE001 - a missing probe extra or any driver failure means "no GPU"
        raise PlannerError(NO_GPU_MESSAGE) from None
    if not gpus:
        raise PlannerError(NO_GPU_MESSAGE)
    first = gpus[0]
    if first.profile is None:
        raise PlannerError(f"detected GPU {first.name!r} has no shipped profile; pass --gpu with the closest one")
    return load_gpu(first.profile), sum(1 for g in gpus if g.profile == first.profile)
