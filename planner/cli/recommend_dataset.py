"""``recommend --dataset``: the request sized from the file, and the file's report for the top plan.

The request's ``--seq-len`` becomes the longest example capped at ``--seq-len`` (the longest batch
after truncation, whatever micro-batch is chosen; ``--packing`` keeps ``--seq-len``) and its dataset
size the real tokens per epoch after truncation. The JSON key is ``dataset_file``: ``recommend`` already
has a ``dataset`` object (the size the time is computed for).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from planner.cli.dataset_options import analysis_for, report_for
from planner.specs import TrainSpec

if TYPE_CHECKING:
    from planner.dataset.report import DatasetReport
    from planner.recommender import Recommendation


def apply_dataset(model: str, values: dict[str, Any], data_values: dict[str, Any]) -> Any:
    """Read ``--dataset`` and update ``values`` (``seq_len``, ``dataset_tokens``) in place; None without it.

    Raises:
        click.UsageError: ``--dataset`` with ``--dataset-tokens``/``--examples``/``--avg-tokens``.
    """
    analysis = analysis_for(model, data_values)
    if analysis is None:
        return None
    clash = [f"--{k.replace('_', '-')}" for k in ("dataset_tokens", "examples", "avg_tokens") if values.get(k)]
    if clash:
        raise click.UsageError(f"--dataset gives the dataset size; drop {', '.join(clash)}")
    seq_len = values["seq_len"]
    report = report_for(analysis, model, TrainSpec(seq_len=seq_len, micro_batch=1), None,
                        bool(data_values.get("packing")))
    values["dataset_tokens"] = float(report.batching.tokens_trained)
    if not data_values.get("packing"):
        values["seq_len"] = max(1, min(seq_len, report.lengths.max))
    values["_requested_seq_len"] = seq_len
    return analysis


def dataset_file_report(analysis: Any, model: str, result: Recommendation, gpu: str | None,
                        values: dict[str, Any], data_values: dict[str, Any]) -> DatasetReport | None:
    """The dataset report at the top plan's micro-batch (1 when nothing fits), timed on ``gpu``."""
    if analysis is None:
        return None
    micro_batch = result.plans[0].micro_batch if result.plans else 1
    train = TrainSpec(seq_len=values["_requested_seq_len"], micro_batch=micro_batch)
    return report_for(analysis, model, train, gpu, bool(data_values.get("packing")))
