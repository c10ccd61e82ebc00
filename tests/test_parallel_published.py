"""Multi-GPU rows of ``../shared/validation/published.csv`` (copied with their source column into
``tests/data/published_multi_gpu.csv``, mapped onto loraplan specs by hand) against the per-GPU estimate.

The ``notes`` column says where a row's conditions are uncertain: torchtune's alpaca rows cap the sequence
length (samples are mostly much shorter), litgpt chunks its lm_head/loss and its FSDP settings are not
stated, PEFT's numbers are read off nvidia-smi screenshots. Only the transformers/PEFT rows run the step
loraplan models; their median error is the regression guard here (the issue's goal is 10%).
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import pytest

from planner.estimator import estimate
from planner.parallel.spec import Offload, ParallelSpec, QuantStorage, Strategy
from planner.specs import Method, Optim, TrainSpec

CSV = Path(__file__).parent / "data" / "published_multi_gpu.csv"
HF_STACK = ("peft",)


def _rows() -> list[dict[str, str]]:
    return list(csv.DictReader(CSV.open()))


def _compare(r: dict[str, str]) -> tuple[float, float]:
    method, rank = Method(r["method"]), int(r["rank"] or 16)
    train = TrainSpec(method=method, rank=rank, alpha=2.0 * rank, targets=tuple(r["targets"].split(",")),
                      micro_batch=int(r["micro_batch"]), seq_len=int(r["seq_len"]), grad_ckpt=r["grad_ckpt"] == "yes",
                      optim=Optim(r["optim"]), lora_dropout=0.05, double_quant=method is Method.QLORA)
    parallel = ParallelSpec(strategy=Strategy(r["strategy"]), gpus=int(r["gpus"]), offload=Offload(r["offload"]),
                            quant_storage=QuantStorage(r["quant_storage"]) if r["quant_storage"] else None)
    est = estimate(r["profile"], train, r["gpu"], parallel=parallel)
    return float(r["measured_gib"]), getattr(est.peak_gib, r["counter"])


def table() -> list[tuple[str, str, str, str, float, float, float]]:
    """(framework, model, method, plan, measured, estimate, relative error) per row."""
    out = []
    for r in _rows():
        measured, est = _compare(r)
        plan = f"{r['gpus']}x {r['strategy']}" + (f" +{r['offload']}" if r["offload"] != "none" else "")
        out.append((r["source"].split(":")[0], r["profile"], r["method"], plan, measured, est, est / measured - 1))
    return out


def test_every_row_has_its_source_and_runs() -> None:
    rows = table()
    assert len(rows) == len(_rows()) >= 10
    assert all(r["source"] for r in _rows())
    for row in rows:
        print(" | ".join(map(str, row[:4])) + f" | {row[4]:.2f} | {row[5]:.2f} | {row[6]:+.1%}")


def test_hf_stack_rows_median_error() -> None:
    errors = [abs(row[6]) for row in table() if row[0] in HF_STACK]
    assert len(errors) == 5
    # Today 16.0% (goal 10%; 14.3% before the QLoRA layer-backward dequantized weight was traced to overlap
    # the down projection's freed saved tensors, -0.33 GiB on the 70B QLoRA rows): the screenshots read
    # nvidia-smi, which includes allocator caching we under-model at 70B scale on 8 GPUs (issue 9's report).
    assert statistics.median(errors) <= 0.165


@pytest.mark.parametrize("row", [r for r in _rows() if r["strategy"] != "none"], ids=lambda r: r["profile"])
def test_sharded_rows_are_below_the_one_gpu_estimate(row: dict[str, str]) -> None:
    """Sanity: sharding never raises the per-GPU peak above the same step on one GPU."""
    single = dict(row, strategy="ddp", offload="none")
    assert _compare(row)[1] <= _compare(single)[1] + 1e-9
