"""loraplan: GPU memory for LoRA, QLoRA and full fine-tuning from a model config.

>>> from planner import estimate, TrainSpec, Method
>>> est = estimate("llama-3-8b", TrainSpec(method=Method.QLORA), gpu="4090")
>>> est.fits, round(est.peak_gib.device, 1)  # doctest: +SKIP

Exports are resolved lazily (PEP 562) so that ``loraplan estimate`` does not pay for the
recommender's import.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "estimate": "planner.estimator.core",
    "recommend": "planner.recommender.api",
    "plan_instances": "planner.recommender.instances",
    "Plan": "planner.recommender.schemas",
    "Recommendation": "planner.recommender.schemas",
    "InstancesReport": "planner.recommender.schemas",
    "Instance": "planner.recommender.catalogue",
    "load_instances": "planner.recommender.catalogue",
    "Task": "planner.recommender.rules",
    "tokens_per_second": "planner.time.api",
    "resolve_stack": "planner.stack.resolve",
    "gpu_profiles": "planner.catalog",
    "load_gpu": "planner.catalog",
    "load_model": "planner.catalog",
    "model_names": "planner.catalog",
    "Attn": "planner.specs",
    "DType": "planner.specs",
    "Estimate": "planner.results",
    "GpuProfile": "planner.specs",
    "Method": "planner.specs",
    "ModelProfile": "planner.specs",
    "Optim": "planner.specs",
    "TrainSpec": "planner.specs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'planner' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
