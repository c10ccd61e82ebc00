"""Length distribution, truncation and padding of a dataset's token counts (pure functions over ints)."""

from __future__ import annotations

import math

from pydantic import Field

from planner.specs import Frozen


class Lengths(Frozen):
    """Tokens per example (before truncation)."""

    min: int
    median: float
    p95: float
    p99: float
    max: int
    mean: float


class Bin(Frozen):
    """One histogram bar: examples with ``lo <= tokens < hi`` (the last bar includes ``hi``)."""

    lo: int
    hi: int
    count: int = Field(ge=0)


class Batching(Frozen):
    """What ``micro_batch`` sequences per step cost after truncation at ``seq_len``, padded or packed."""

    seq_len: int
    micro_batch: int
    packing: bool
    truncated: int
    """Examples longer than ``seq_len`` (cut when padding; split across blocks when packing)."""
    tokens_trained: int
    """Real (non-pad) tokens the model sees per epoch."""
    tokens_processed: int
    """Tokens computed per epoch, padding included."""
    padding_waste_pct: float
    micro_batches: int
    """Forward passes per epoch."""
    batch_seq_len: int
    """Longest padded sequence of any batch: what memory is sized for."""


def percentile(sorted_values: list[int], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method) of an ascending list, ``q`` in [0, 100]."""
    pos = (len(sorted_values) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo))


def lengths(counts: list[int]) -> Lengths:
    """Summary of ``counts`` (non-empty)."""
    s = sorted(counts)
    return Lengths(min=s[0], median=percentile(s, 50), p95=round(percentile(s, 95), 1),
                   p99=round(percentile(s, 99), 1), max=s[-1], mean=round(sum(s) / len(s), 1))


def histogram(counts: list[int], bins: int = 8) -> list[Bin]:
    """``bins`` equal-width bars from the shortest to the longest example (fewer when the range is small)."""
    lo, hi = min(counts), max(counts)
    width = max(1, math.ceil((hi - lo + 1) / bins))
    n = max(1, math.ceil((hi - lo + 1) / width))
    tally = [0] * n
    for c in counts:
        tally[min(n - 1, (c - lo) // width)] += 1
    return [Bin(lo=lo + i * width, hi=min(hi, lo + (i + 1) * width - 1), count=t) for i, t in enumerate(tally)]


def batching(counts: list[int], seq_len: int, micro_batch: int, packing: bool) -> Batching:
    """Tokens, padding and the memory-sizing sequence length of one epoch.

    Padding (transformers ``DataCollatorWithPadding``/TRL's collator pad each batch to its longest
    sequence): batches of ``micro_batch`` examples in file order, each padded to
    ``micro_batch x min(longest, seq_len)``. Packing (TRL ``packing=True``): all tokens concatenated into
    ``seq_len`` blocks, no padding except the last block, nothing dropped.
    """
    truncated = sum(1 for c in counts if c > seq_len)
    if packing:
        total = sum(counts)
        blocks = math.ceil(total / seq_len)
        steps = math.ceil(blocks / micro_batch)
        processed = blocks * seq_len
        return Batching(seq_len=seq_len, micro_batch=micro_batch, packing=True, truncated=truncated,
                        tokens_trained=total, tokens_processed=processed,
                        padding_waste_pct=round(100.0 * (1 - total / processed), 2), micro_batches=steps,
                        batch_seq_len=seq_len)
    cut = [min(c, seq_len) for c in counts]
    processed, longest = 0, 0
    for start in range(0, len(cut), micro_batch):
        batch = cut[start:start + micro_batch]  # a short last batch is kept (dataloader_drop_last=False)
        longest = max(longest, max(batch))
        processed += len(batch) * max(batch)
    trained = sum(cut)
    return Batching(seq_len=seq_len, micro_batch=micro_batch, packing=False, truncated=truncated,
                    tokens_trained=trained, tokens_processed=processed,
                    padding_waste_pct=round(100.0 * (1 - trained / processed), 2),
                    micro_batches=math.ceil(len(cut) / micro_batch), batch_seq_len=longest)
