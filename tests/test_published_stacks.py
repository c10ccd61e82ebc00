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
    # Today 7.6% (9.2% before litgpt's fp16 quant state and its repeated GQA k/v were modelled).
    assert statistics.median(errs) <= 8.0


def test_litgpt_quantizes_falcon(table: list[tuple[Row, float, float]]) -> None:
    """Falcon's linears are plain nn.Linear in litgpt, so its QLoRA row is 4-bit (the transformers 5 stack
    leaves FalconLinear in bf16 and is +245% there). The bound separates those two cases; it is not the
    accuracy bound (that is the litgpt median below). Today +19.9%: the litgpt LoRA row of Falcon is +10.8% too
    (its activations are over-estimated on litgpt in both methods, not understood yet), and the lm_head's
    fp16-dequantized copy (stack ``quant_state_dtype``) adds 0.55 GiB."""
    falcon = [e for r, _, e in table if r.stack == "litgpt" and r.profile == "falcon-7b" and r.train.method.value
              == "qlora"]
    assert falcon and all(abs(e) <= 25.0 for e in falcon)


def test_rows_not_modelled_say_why() -> None:
    rows = load_rows(SHIPPED)
    assert rows
    for row in rows:
        assert row.status == "modelled" or row.status.startswith("not modelled: ")
