"""``sweep --dataset``: swept sequence lengths capped at the file's longest example, and a row per length.

Without ``--packing`` no batch is longer than the longest example, so swept ``--seq-len`` values above
it are replaced by it (duplicates dropped): the chart ends where the data does. Every remaining
length gets a row: examples truncated, the longest batch, padding waste and the epoch time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from planner.cli.dataset_options import analysis_for, report_for
from planner.specs import Frozen

if TYPE_CHECKING:
    from planner.dataset.report import DatasetReport


class SeqLenRow(Frozen):
    """The dataset at one swept ``--seq-len`` (at the base micro-batch)."""

    seq_len: int
    truncated: int
    batch_seq_len: int
    padding_waste_pct: float
    hours_per_epoch: float | None = None


def _cap(values: tuple[int, ...], longest: int) -> tuple[int, ...]:
    return tuple(dict.fromkeys(min(v, longest) for v in values))


def apply_sweep_dataset(model: str, gpu: str | None, request: Any, data_values: dict[str, Any]
                        ) -> tuple[Any, DatasetReport | None, list[SeqLenRow]]:
    """The request with sequence lengths capped, the report at the base configuration, and one row per length."""
    from planner.sweep import Axis

    analysis = analysis_for(model, data_values)
    if analysis is None:
        return request, None, []
    packing = bool(data_values.get("packing"))
    longest = max(analysis.counts)
    if not packing:
        if request.x_axis == Axis.SEQ_LEN:
            request = request.model_copy(update={"x_values": _cap(request.x_values, longest)})
        elif request.group_axis == Axis.SEQ_LEN:
            request = request.model_copy(update={"group_values": _cap(request.group_values, longest)})
        else:
            base = request.base
            request = request.model_copy(update={"base": base.model_copy(update={"seq_len": min(base.seq_len, longest)})})
    if request.x_axis == Axis.SEQ_LEN:
        lengths = request.x_values
    elif request.group_axis == Axis.SEQ_LEN:
        lengths = request.group_values
    else:
        lengths = (request.base.seq_len,)
    rows = []
    for seq_len in lengths:
        r = report_for(analysis, model, request.base.model_copy(update={"seq_len": seq_len}), gpu, packing)
        rows.append(SeqLenRow(seq_len=seq_len, truncated=r.truncated, batch_seq_len=r.batching.batch_seq_len,
                              padding_waste_pct=r.padding_waste_pct, hours_per_epoch=r.hours_per_epoch))
    report = report_for(analysis, model, request.base.model_copy(update={"seq_len": lengths[-1]}), gpu, packing)
    return request, report, rows
