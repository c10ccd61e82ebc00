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
from planner.stack.resolve import resolve_stack

CSV = Path(__file__).parent / "data" / "published_multi_gpu.csv"
HF_STACK = ("trl",)


def _rows() -> list[dict[str, str]]:
    return list(csv.DictReader(CSV.open()))


def _compare(r: dict[str, str]) -> tuple[float, float]:
    method, rank = Method(r["method"]), int(r["rank"] or 16)
    strategy = Strategy(r["strategy"])
    versions = dict(item.split("=", 1) for item in r["versions"].split(",") if item)
    stack = resolve_stack(r["stack"], versions, detect=False).stack
    # A model loaded in fp32: FSDP keeps fp32 shards and computes in bf16 (--fp32-master); DeepSpeed's bf16
    # engine casts the module to bf16 and keeps its own fp32 master partition (the ZeRO default).
    fp32 = r["fp32_load"] == "yes" and strategy.is_fsdp
    train = TrainSpec(method=method, rank=rank, alpha=2.0 * rank, targets=tuple(r["targets"].split(",")),
                      micro_batch=int(r["micro_batch"]), seq_len=int(r["seq_len"]), grad_ckpt=r["grad_ckpt"] == "yes",
                      optim=Optim(r["optim"]), lora_dropout=0.05, double_quant=method is Method.QLORA,
                      fp32_master=fp32)
    if method is Method.QLORA:
        train = train.model_copy(update={"kbit_prepare": stack.kbit_prepare.calls_prepare})
    parallel = ParallelSpec(strategy=strategy, gpus=int(r["gpus"]), offload=Offload(r["offload"]),
                            quant_storage=QuantStorage(r["quant_storage"]) if r["quant_storage"] else None)
    est = estimate(r["profile"], train, r["gpu"], stack=stack, parallel=parallel)
    return float(r["measured_gib"]), getattr(est.peak_gib, r["counter"])


def table() -> list[tuple[str, str, str, str, float, float, float, str]]:
    """(framework, model, method, plan, measured, estimate, relative error, status) per row."""
    out = []
    for r in _rows():
        measured, est = _compare(r)
        plan = f"{r['gpus']}x {r['strategy']}" + (f" +{r['offload']}" if r["offload"] != "none" else "")
        out.append((r["stack"], r["profile"], r["method"], plan, measured, est, est / measured - 1, r["status"]))
    return out


def test_every_row_has_its_source_and_runs() -> None:
    rows = table()
    assert len(rows) == len(_rows()) >= 10
    assert all(r["source"] for r in _rows())
    assert all(r["status"] == "modelled" or r["status"].startswith("not modelled: ") for r in _rows())
    for row in rows:
        print(" | ".join(map(str, row[:4])) + f" | {row[4]:.2f} | {row[5]:.2f} | {row[6]:+.1%} | {row[7][:12]}")
    for stack in sorted({row[0] for row in rows}):
        errs = [abs(row[6]) for row in rows if row[0] == stack and row[7] == "modelled"]
        if errs:
            print(f"{stack}: {len(errs)} modelled rows, median |error| {statistics.median(errs):.1%}")


def test_hf_stack_rows_median_error() -> None:
    """PEFT's FSDP / ZeRO-3 guide rows on the stack they ran (TRL SFTTrainer, transformers 4.38-4.39, PEFT
    0.9-0.10, accelerate 0.27-0.28; the LoRA rows load the model in fp32)."""
    errors = [abs(row[6]) for row in table() if row[0] in HF_STACK]
    assert len(errors) == 5
    # Today 5.2% (goal 10%): 16.0% before the rows named their stack and fp32 load, FSDP1 / ZeRO-3 gathered
    # units became full-size buffers, FSDP mixed precision was modelled (fp32 shards, bf16 compute) and ZeRO's
    # reduce buckets were counted whole (contiguous_gradients).
    assert statistics.median(errors) <= 0.06


@pytest.mark.parametrize("row", [r for r in _rows() if r["strategy"] != "none"], ids=lambda r: r["profile"])
def test_sharded_rows_are_below_the_one_gpu_estimate(row: dict[str, str]) -> None:
    """Sanity: sharding never raises the per-GPU peak above the same step on one GPU."""
    single = dict(row, strategy="ddp", offload="none")
    assert _compare(row)[1] <= _compare(single)[1] + 1e-9
