"""Time model: tokens per second of one training configuration on one GPU.

- :mod:`~planner.time.flops`: FLOPs per token of a step (Kaplan et al. 2020 counting) and the dense peak;
- :mod:`~planner.time.step`: seconds per micro-batch and optimizer step at a given utilization;
- :mod:`~planner.time.points` and :mod:`~planner.time.mfu`: the utilization (MFU) and fixed overhead,
  derived from probe measurements and the published runs in ``profiles/throughput.json`` through the
  same FLOP model, so the definitions agree;
- :mod:`~planner.time.api`: :func:`tokens_per_second`.
"""

from planner.time.api import tokens_per_second
from planner.time.mfu import utilization
from planner.time.schemas import TimeBreakdown, Utilization
from planner.time.step import time_breakdown

__all__ = ["TimeBreakdown", "Utilization", "time_breakdown", "tokens_per_second", "utilization"]
