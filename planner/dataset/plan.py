"""Tie a dataset to a training run: the sequence length memory is sized for, and the epoch time."""

from __future__ import annotations

from planner.dataset.analyze import Analysis
from planner.dataset.report import DatasetReport
from planner.dataset.stats import batching, histogram, lengths
from planner.specs import GpuProfile, ModelProfile, TrainSpec


def dataset_report(analysis: Analysis, train: TrainSpec, packing: bool, model: ModelProfile | None = None,
                   gpu: GpuProfile | None = None) -> DatasetReport:
    """The report of ``analysis`` for ``train`` (its ``seq_len`` and ``micro_batch``), timed on ``gpu`` if given.

    Time: ``tokens_processed`` (padding included, as the GPU computes it) over the time model's tokens/s at
    the longest batch's sequence length (:func:`planner.time.api.tokens_per_second`); shorter padded
    batches run at about the same tokens/s, since the per-token FLOPs are dominated by the linear layers.
    """
    batch = batching(analysis.counts, train.seq_len, train.micro_batch, packing)
    tps = hours = None
    if model is not None and gpu is not None:
        from planner.time.api import tokens_per_second

        tps = tokens_per_second(model, sized_train(train, batch.batch_seq_len), gpu)
        hours = float(f"{batch.tokens_processed / tps / 3600.0:.4g}") if tps > 0 else None
        tps = round(tps, 1)
    return DatasetReport(
        path=analysis.path, format=analysis.format, field=analysis.field, examples=len(analysis.counts),
        tokens_total=sum(analysis.counts), tokenizer=analysis.tokenizer, bytes_per_token=analysis.bytes_per_token,
        lengths=lengths(analysis.counts), histogram=histogram(analysis.counts), truncated=batch.truncated,
        seq_len=train.seq_len, packing=packing, padding_waste_pct=batch.padding_waste_pct, batching=batch,
        tokens_per_s=tps, hours_per_epoch=hours, assumptions=analysis.assumptions, warnings=analysis.warnings)


def sized_train(train: TrainSpec, batch_seq_len: int) -> TrainSpec:
    """``train`` with the sequence length of the dataset's longest batch after truncation (worst case)."""
    return train.model_copy(update={"seq_len": max(1, min(train.seq_len, batch_seq_len))})
