"""The ``dataset`` object of ``estimate``/``recommend``/``sweep --json``."""

from __future__ import annotations

from planner.dataset.stats import Batching, Bin, Lengths
from planner.specs import Frozen


class DatasetReport(Frozen):
    """What the user's dataset holds and what one epoch of it costs at the chosen ``--seq-len``."""

    path: str
    format: str
    field: str
    examples: int
    tokens_total: int
    """Tokens of every example before truncation (special tokens and chat template overhead included)."""
    tokenizer: str
    """Path of the ``tokenizer.json`` used, or ``"bytes-estimate"``."""
    bytes_per_token: float | None = None
    """The ratio used when no tokenizer was found (profiles/dataset.json)."""
    lengths: Lengths
    histogram: list[Bin]
    truncated: int
    seq_len: int
    packing: bool
    padding_waste_pct: float
    batching: Batching
    tokens_per_s: float | None = None
    """Training throughput of the time model at ``batching.batch_seq_len`` (needs --gpu)."""
    hours_per_epoch: float | None = None
    """``batching.tokens_processed / tokens_per_s`` (needs --gpu)."""
    assumptions: list[str]
    warnings: list[str]
