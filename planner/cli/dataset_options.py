"""``--dataset FILE``, ``--dataset-field``, ``--packing``, ``--tokenizer``: one decorator and one helper.

Commands apply :func:`dataset_options` (one line) and call :func:`dataset_for` with the parsed values;
it returns the training spec sized for the dataset's longest batch and the report (``None`` without
``--dataset``). The dataset package (and ``tokenizers``) is imported only when ``--dataset`` is given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from planner.dataset.report import DatasetReport
    from planner.specs import TrainSpec

DATASET_KEYS = ("dataset", "dataset_field", "packing", "tokenizer")


def dataset_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add the four dataset options to a command."""
    options = [
        click.option("--dataset", "dataset", type=click.Path(dir_okay=False), default=None,
                     help="Your training data (JSONL, JSON, CSV or Parquet): token lengths, truncation at "
                          "--seq-len, padding, memory for the longest batch, epoch time."),
        click.option("--dataset-field", "dataset_field", default=None,
                     help="Field holding the text or message list [default: text, messages, or "
                          "prompt/completion pairs, detected]."),
        click.option("--packing/--no-packing", "packing", default=False, show_default=True,
                     help="With --dataset: sequences packed into --seq-len blocks (no padding)."),
        click.option("--tokenizer", "tokenizer", type=click.Path(exists=True), default=None,
                     help="With --dataset: a local tokenizer.json or folder [default: the model's, from "
                          "its folder or the HF cache; else a bytes estimate]."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def pop_dataset(options: dict[str, Any]) -> dict[str, Any]:
    """Remove the dataset values from a command's ``**options`` (so ``train_spec`` never sees them)."""
    return {k: options.pop(k, None) for k in DATASET_KEYS}


def _check_stray(values: dict[str, Any]) -> None:
    stray = [f"--{k.replace('_', '-')}" for k in ("dataset_field", "tokenizer") if values.get(k)]
    if values.get("packing"):
        stray.append("--packing")
    if stray:
        raise click.UsageError(f"{', '.join(stray)} needs --dataset")


def analysis_for(model: str, values: dict[str, Any]) -> Any:
    """The :class:`planner.dataset.analyze.Analysis` of ``values["dataset"]``, or None without ``--dataset``.

    Raises:
        click.UsageError: ``--dataset-field``, ``--packing`` or ``--tokenizer`` without ``--dataset``.
    """
    if not values.get("dataset"):
        _check_stray(values)
        return None
    from planner.catalog import load_model
    from planner.dataset.analyze import analyze

    return analyze(values["dataset"], model, load_model(model).hub_id, values.get("dataset_field"),
                   values.get("tokenizer"))


def report_for(analysis: Any, model: str, train: TrainSpec, gpu: str | None, packing: bool) -> DatasetReport:
    """The dataset report of ``analysis`` for ``train``, timed on ``gpu`` when given."""
    from planner.catalog import load_gpu, load_model
    from planner.dataset.plan import dataset_report

    return dataset_report(analysis, train, packing, load_model(model), load_gpu(gpu) if gpu else None)


def dataset_for(model: str, train: TrainSpec, gpu: str | None, values: dict[str, Any]
                ) -> tuple[TrainSpec, DatasetReport | None]:
    """``train`` sized for ``values["dataset"]`` and its report; ``(train, None)`` without ``--dataset``.

    Raises:
        click.UsageError: ``--dataset-field``, ``--packing`` or ``--tokenizer`` without ``--dataset``.
    """
    analysis = analysis_for(model, values)
    if analysis is None:
        return train, None
    from planner.dataset.plan import sized_train

    report = report_for(analysis, model, train, gpu, bool(values.get("packing")))
    return sized_train(train, report.batching.batch_seq_len), report
