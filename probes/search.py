"""Largest micro-batch that fits: exponential growth, then binary search (pure, for any runner)."""

from __future__ import annotations

from collections.abc import Callable

MAX_MICRO_BATCH = 1024
"""Upper bound of the search (a probe never tries more sequences per step than this)."""


def largest_fitting(fits: Callable[[int], bool], limit: int = MAX_MICRO_BATCH) -> tuple[int, dict[int, bool]]:
    """The largest ``b`` in ``1..limit`` with ``fits(b)``, assuming ``fits`` is monotone (true, then false).

    Tries 1, 2, 4, ... until one fails (or ``limit``), then bisects between the last success and
    the first failure. Each ``b`` is tried at most once.

    Returns:
        (largest fitting micro-batch or 0 when even 1 fails, {micro_batch: fits} for every try).
    """
    tried: dict[int, bool] = {}

    def attempt(b: int) -> bool:
        if b not in tried:
            tried[b] = bool(fits(b))
        return tried[b]

    if not attempt(1):
        return 0, tried
    lo, hi = 1, None
    while hi is None:
        nxt = min(lo * 2, limit)
        if nxt == lo:
            return lo, tried
        if attempt(nxt):
            lo = nxt
        else:
            hi = nxt
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if attempt(mid):
            lo = mid
        else:
            hi = mid
    return lo, tried


def estimated_max_batch(fits: Callable[[int], bool], limit: int = MAX_MICRO_BATCH) -> int:
    """The estimator's prediction, searched the same way (``fits(b)`` = ``estimate(..., micro_batch=b).fits``)."""
    return largest_fitting(fits, limit)[0]
