"""Max micro-batch search (pure: fake runners)."""

from __future__ import annotations

import math

import pytest

from probes.search import MAX_MICRO_BATCH, estimated_max_batch, largest_fitting


@pytest.mark.parametrize("limit_fit", [1, 2, 3, 5, 8, 37, 100, 511, 1023])
def test_finds_the_largest_fitting(limit_fit: int) -> None:
    calls: list[int] = []

    def fits(b: int) -> bool:
        calls.append(b)
        return b <= limit_fit

    best, tried = largest_fitting(fits)
    assert best == limit_fit
    assert len(calls) == len(set(calls)) == len(tried)
    assert len(calls) <= 2 * math.ceil(math.log2(limit_fit + 1)) + 2
    assert all(tried[b] == (b <= limit_fit) for b in tried)


def test_nothing_fits() -> None:
    best, tried = largest_fitting(lambda b: False)
    assert best == 0 and tried == {1: False}


def test_everything_fits_stops_at_the_limit() -> None:
    best, tried = largest_fitting(lambda b: True, limit=100)
    assert best == 100 and max(tried) == 100
    assert largest_fitting(lambda b: True)[0] == MAX_MICRO_BATCH


def test_estimator_prediction_uses_the_same_search() -> None:
    assert estimated_max_batch(lambda b: b * 3.5 <= 80) == 22


def test_estimator_max_batch_is_monotone_on_a_real_estimate() -> None:
    from planner.catalog import load_gpu
    from planner.estimator import estimate
    from planner.specs import TrainSpec

    gpu = load_gpu("4090")
    spec = TrainSpec(seq_len=1024)

    def fits(b: int) -> bool:
        return bool(estimate("llama-3.2-1b", spec.model_copy(update={"micro_batch": b}), gpu).fits)

    best = estimated_max_batch(fits)
    assert best >= 1 and fits(best) and not fits(best + 1)
