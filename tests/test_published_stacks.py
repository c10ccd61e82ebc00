"""Single-GPU published measurements against the estimate on the stack each source ran.

``tests/data/published_single_gpu.csv`` ships the single-GPU rows of ``../shared/validation/published.csv``
with the ``--framework`` / ``--versions`` each row states (so CI checks them without ../shared). Prints the
per-row table and each stack's median |error| and bias; ``python -m pytest tests/test_published_stacks.py -s``.
"""

from __future__ import annotations

import statistics

import pytest

from tests.published import SHIPPED, Row, compare, load_rows


def _numeric() -> list[tuple[Row, float, float]]:
    out = []
    for row in load_rows(SHIPPED):
        if row.status != "modelled" or row.measured_gib is None or row.counter == "fit":
            continue
        est, _ = compare(row, stacked=True)
        out.append((row, est, 100.0 * (est - row.measured_gib) / row.measured_gib))
    return out


@pytest.fixture(scope="module")
def table() -> list[tuple[Row, float, float]]:
    return _numeric()


def test_per_stack_table(table: list[tuple[Row, float, float]]) -> None:
    print(f"\n{'stack':9} {'versions':34} {'model':14} {'method':6} {'b':>2} {'seq':>5} {'ckpt':4} {'gpu':10} "
          f"{'counter':9} {'measured':>8} {'estimate':>8} {'err%':>6}")
    for row, est, err in table:
        t = row.train
        print(f"{row.stack:9} {row.versions or 'newest':34} {row.profile:14} {t.method.value:6} {t.micro_batch:>2} "
              f"{t.seq_len:>5} {'yes' if t.grad_ckpt else 'no':4} {row.gpu:10} {row.counter:9} "
              f"{row.measured_gib:8.2f} {est:8.2f} {err:+6.1f}")
    for stack in sorted({r.stack for r, _, _ in table}):
        errs = [e for r, _, e in table if r.stack == stack]
        print(f"{stack}: {len(errs)} rows, median |error| {statistics.median(map(abs, errs)):.1f}%, "
              f"median error {statistics.median(errs):+.1f}%")
    assert {r.stack for r, _, _ in table} >= {"litgpt", "torchtune"}


def test_litgpt_rows_on_the_litgpt_stack(table: list[tuple[Row, float, float]]) -> None:
    """litgpt's own model: 128-token chunked head, bf16-true adapters, every nn.Linear 4-bit (bitsandbytes
    0.42 keeping MatMul4Bit's input), untied lm_head."""
    errs = [abs(e) for r, _, e in table if r.stack == "litgpt"]
    assert len(errs) >= 20
    # Today 6.3% (9.2% before litgpt's fp16 quant state and its repeated GQA k/v were modelled, 7.6% before its
    # repetition was known to cover Falcon's multi-query attention too, so SDPA never takes the math kernel, 6.6%
    # before Gemma 2's softcapped attention was computed by hand, not by SDPA).
    assert statistics.median(errs) <= 7.0


def test_litgpt_quantizes_falcon(table: list[tuple[Row, float, float]]) -> None:
    """Falcon's linears are plain nn.Linear in litgpt, so its QLoRA row is 4-bit (the transformers 5 stack
    leaves FalconLinear in bf16 and is +245% there). Today -2.2% (LoRA -1.8%): litgpt repeats Falcon's single
    k/v head to every query head before SDPA (stack ``sdpa_kv`` repeat_kv_every_model), so no math-kernel
    probabilities are saved (+19.9% / +10.8% while they were)."""
    falcon = [e for r, _, e in table if r.stack == "litgpt" and r.profile == "falcon-7b"]
    assert len(falcon) == 2 and all(abs(e) <= 5.0 for e in falcon)


def test_rows_not_modelled_say_why() -> None:
    rows = load_rows(SHIPPED)
    assert rows
    for row in rows:
        assert row.status == "modelled" or row.status.startswith("not modelled: ")
