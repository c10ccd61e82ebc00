"""``estimate --explain`` and ``estimate --check``: options and helpers the estimate command calls.

``--check`` makes the exit code the verdict, for CI pipelines and scripts: 0 fits, 1 does not fit,
2 bad input (any :class:`~planner.errors.PlannerError` or usage error, as for every command).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from planner.dataset.report import DatasetReport
    from planner.explain import Explanation
    from planner.parallel.spec import ParallelSpec
    from planner.results import Estimate
    from planner.specs import TrainSpec

EXIT_FITS = 0
EXIT_DOES_NOT_FIT = 1


def explain_check_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--explain`` and ``--check`` to a command."""
    f = click.option("--check", is_flag=True,
                     help="Exit code = verdict on --gpu: 0 fits, 1 does not fit, 2 bad input.")(f)
    return click.option("--explain", is_flag=True,
                        help="Also list single changes (checkpointing, QLoRA, 8-bit optimizer, rank, targets, "
                             "micro-batch, seq-len) and what each does to the device peak.")(f)


def check_needs_gpu(check: bool, gpu: str | None) -> None:
    """``--check`` without ``--gpu`` has no verdict to report: a usage error (exit 2)."""
    if check and not gpu:
        raise click.UsageError("--check needs --gpu (the GPU whose fit decides the exit code)")


def explanation_for(model: str, train: TrainSpec, gpu: str | None, calibrate: str | None, est: Estimate,
                    parallel: ParallelSpec | None = None) -> Explanation:
    """The ``--explain`` table for the configuration ``est`` was computed for (on its stack and ``parallel``'s GPUs)."""
    from dataclasses import replace

    from planner.estimator.api import resolve
    from planner.explain import explain
    from planner.stack.stack import load_stack

    inputs = replace(resolve(model, gpu, calibrate), parallel=parallel)
    if est.stack is not None:
        inputs = replace(inputs, stack=load_stack(est.stack.name))
    return explain(inputs, train, est)


def estimate_json(est: Estimate, explanation: Explanation | None,
                  dataset: DatasetReport | None = None) -> dict[str, Any]:
    """``estimate --json``, with an ``explain`` object under ``--explain`` and ``dataset`` under ``--dataset``."""
    data = est.to_json()
    if explanation is not None:
        data["explain"] = explanation.to_json()
    if dataset is not None:
        data["dataset"] = dataset.model_dump(mode="json")
    return data


def exit_for_check(est: Estimate) -> None:
    """Exit 0 when ``est`` fits its GPU, 1 when it does not."""
    sys.exit(EXIT_FITS if est.fits else EXIT_DOES_NOT_FIT)
