"""loraplan: GPU memory for LoRA, QLoRA and full fine-tuning from a model config.

>>> from planner import estimate, TrainSpec, Method
>>> est = estimate("llama-3-8b", TrainSpec(method=Method.QLORA), gpu="4090")
>>> est.fits, round(est.peak_gib.device, 1)  # doctest: +SKIP
"""

from planner.catalog import gpu_profiles, load_gpu, load_model, model_names
from planner.estimator import estimate
from planner.instances import Instance, load_instances
from planner.recommender import InstancesReport, Plan, Recommendation, plan_instances, recommend
from planner.rules import Task
from planner.throughput import tokens_per_second
from planner.specs import (
    Attn,
    DType,
    Estimate,
    GpuProfile,
    Method,
    ModelProfile,
    Optim,
    TrainSpec,
)

__all__ = [
    "Instance",
    "InstancesReport",
    "Plan",
    "Recommendation",
    "Task",
    "load_instances",
    "plan_instances",
    "recommend",
    "tokens_per_second",
    "Attn",
    "DType",
    "Estimate",
    "GpuProfile",
    "Method",
    "ModelProfile",
    "Optim",
    "TrainSpec",
    "estimate",
    "gpu_profiles",
    "load_gpu",
    "load_model",
    "model_names",
]
