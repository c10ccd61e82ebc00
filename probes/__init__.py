"""Probes: measure what ``planner`` estimates.

* :mod:`probes.trace` - CPU trace: the real training step on fake tensors, counting live bytes
  (:mod:`probes.memtrack`), with CUDA dispatch emulated on CPU (:mod:`probes.cuda_emulation`),
  bitsandbytes NF4 emulated (:mod:`probes.nf4`) and bitsandbytes optimizer state emulated
  (:mod:`probes.optim`).
* :mod:`probes.gpu` - the real probe on a CUDA GPU (random weights, no download).
* :mod:`probes.build` - model, PEFT, checkpointing and the step, shared by both.
* :mod:`probes.detect` - visible GPUs; :mod:`probes.search` - max micro-batch search;
  :mod:`probes.run` - estimate + measure + compare; :mod:`probes.results` - the JSON contract.

Importing a submodule imports torch. Only ``planner.cli`` imports this package (inside the commands
that need it: ``probe``, and GPU detection for ``recommend`` without ``--gpu``); probes import every
``planner`` layer but the CLI (``tests/test_layers.py``).
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

# On a CPU with AVX512-BF16, importing bitsandbytes (which transformers and PEFT do) warns that an
# optional CPU inference kernel is missing; probes never run bitsandbytes kernels on the CPU.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

_SUBMODULES = ("build", "cuda_emulation", "detect", "gpu", "matrix", "memtrack", "nf4", "optim", "results", "run", "search",
               "trace")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"probes.{name}")
    raise AttributeError(name)
