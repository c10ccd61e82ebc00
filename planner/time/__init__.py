"""Time model: tokens per second of one training configuration on one GPU.

- :mod:`~planner.time.gemm`: every GEMM of the step at its roofline (utilization x GEMM-size factor);
- :mod:`~planner.time.traffic`: counted memory-bound bytes (norms, activations, LoRA path, loss, DoRA,
  QLoRA dequantization, optimizer and clipping passes);
- :mod:`~planner.time.step`: seconds per micro-batch and optimizer step, with the held-out error band;
- :mod:`~planner.time.mfu`: utilization per GPU (measured, fitted on its generation, or inferred);
- :mod:`~planner.time.points`: the published runs and probe measurements; :mod:`~planner.time.fit`: the
  offline fit of the few free constants;
- :mod:`~planner.time.flops`: FLOPs per token (Kaplan et al. 2020 counting) and the dense peak;
- :mod:`~planner.time.api`: :func:`tokens_per_second`.
"""

from planner.time.api import tokens_per_second
from planner.time.mfu import utilization
from planner.time.schemas import Provenance, StepImpl, TimeBreakdown, Utilization
from planner.time.step import time_breakdown

__all__ = ["Provenance", "StepImpl", "TimeBreakdown", "Utilization", "time_breakdown", "tokens_per_second",
           "utilization"]
