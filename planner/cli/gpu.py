"""The local GPU for commands run without ``--gpu`` (detection is the CLI's job, not the planner core's).

Stub moved verbatim from the recommender (``detect_gpu``); the CLI engineer owns its final shape.
"""

from __future__ import annotations

from planner.catalog import load_gpu
from planner.errors import PlannerError
from planner.specs import GpuProfile


def detect_gpu_profile() -> GpuProfile:
    """The local CUDA GPU's profile, via ``probes.detect`` when it is installed (device 0).

    Accepts what the detector returns: a :class:`GpuProfile`, an object or dict with ``profile``
    (a shipped profile name) or ``name`` (a device name such as ``NVIDIA GeForce RTX 4090``), or a
    list of those.

    Raises:
        PlannerError: no GPU detected (or no matching profile).
    """
    err = PlannerError("no --gpu given and no GPU detected; pass --gpu (e.g. --gpu 4090)")
    try:
        from probes import detect  # lazy: may import torch / pynvml
    except ImportError:
        raise err from None
    fn = next((getattr(detect, n) for n in ("detect_gpus", "detect_gpu", "detect", "local_gpu")
               if callable(getattr(detect, n, None))), None)
    if fn is None:
        raise err
    try:
        found = fn()
    except Exception:  # noqa: BLE001 - any driver / library failure means "no GPU"
        raise err from None
    if isinstance(found, (list, tuple)):
        found = found[0] if found else None
    if found is None:
        raise err
    if isinstance(found, GpuProfile):
        return found
    get = found.get if isinstance(found, dict) else (lambda k: getattr(found, k, None))
    profile, name = get("profile"), get("name") if not isinstance(found, str) else found
    if isinstance(profile, GpuProfile):
        return profile
    for candidate in (profile, name):
        if isinstance(candidate, str) and candidate:
            try:
                return load_gpu(candidate)
            except PlannerError:
                continue
    raise PlannerError(f"detected GPU {name!r} has no shipped profile; pass --gpu with the closest one")
