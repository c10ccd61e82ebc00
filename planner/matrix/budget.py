"""GPU-time budget of a matrix: each row's estimated seconds, and which rows fit ``budget_s``.

A row costs ``startup_s`` (fresh process, imports, random-weight model build) plus the tokens it
trains divided by the time model's tokens/s for the matrix GPU (:func:`planner.time.tokens_per_second`):
``(steps + 1 warm-up) * micro_batch * grad_accum * seq_len`` tokens, and for ``find_max_batch`` two steps
at every micro-batch :func:`planner.matrix.budget.search_batches` expects the search to try.
"""

from __future__ import annotations

from planner.catalog import load_gpu
from planner.estimator import estimate
from planner.matrix.spec import Matrix, MatrixRow, row_profile
from planner.specs import Frozen, GpuProfile
from planner.time import tokens_per_second

WARMUP_STEPS = 1
"""``probes.gpu.GpuSession.run`` runs one unmeasured warm-up step before the measured ones."""
SEARCH_STEPS = 2
"""Steps per try of ``--find-max-batch`` (``probes.run.run_gpu_probe``)."""
MAX_SEARCH_BATCH = 1024
DEFAULT_BUDGET_S = 420.0
"""Well under the 8 minutes issue 10 allows on one H200 (the machine's own start-up not included)."""
DEFAULT_TIMEOUT_S = 240.0
"""Per-row process limit (the largest planned row, Llama-3-8B --find-max-batch, is ~85 s)."""


class PlannedRow(Frozen):
    id: str
    priority: int
    tokens: int
    tokens_per_s: float
    seconds: float
    keep: bool


class Plan(Frozen):
    budget_s: float
    rows: list[PlannedRow]

    @property
    def kept_s(self) -> float:
        return sum(r.seconds for r in self.rows if r.keep)

    @property
    def total_s(self) -> float:
        return sum(r.seconds for r in self.rows)


def search_batches(estimated_max: int) -> list[int]:
    """Micro-batches the doubling + bisection search tries when the true limit is near ``estimated_max``."""
    tried = [1]
    b = 1
    while b <= max(1, estimated_max) and b < MAX_SEARCH_BATCH:
        b *= 2
        tried.append(b)
    lo, hi = b // 2, b
    while hi - lo > 1:
        mid = (lo + hi) // 2
        tried.append(mid)
        lo, hi = (mid, hi) if mid <= estimated_max else (lo, mid)
    return tried


def row_seconds(row: MatrixRow, gpu: GpuProfile, startup_s: float) -> PlannedRow:
    """Estimated wall seconds of one row on ``gpu`` (see the module docstring)."""
    profile = row_profile(row)
    spec = row.train
    per_seq = spec.seq_len * spec.grad_accum
    tps = tokens_per_second(profile, spec, gpu)
    tokens = (row.steps + WARMUP_STEPS) * spec.micro_batch * per_seq
    seconds = tokens / tps
    if row.find_max_batch:
        est_max = max((b for b in search_batches(MAX_SEARCH_BATCH)
                       if estimate(profile, spec.model_copy(update={"micro_batch": b}), gpu).fits), default=1)
        for b in search_batches(est_max):
            t = SEARCH_STEPS * b * per_seq
            tokens += t
            seconds += t / tokens_per_second(profile, spec.model_copy(update={"micro_batch": b}), gpu)
    return PlannedRow(id=row.id, priority=row.priority, tokens=tokens, tokens_per_s=tps,
                      seconds=startup_s + seconds, keep=True)


def plan(matrix: Matrix, budget_s: float) -> Plan:
    """Every row's estimate; rows are dropped lowest priority first (later rows first on ties) until the rest fit."""
    gpu = load_gpu(matrix.gpu)
    rows = [row_seconds(r, gpu, matrix.startup_s) for r in matrix.rows]
    order = sorted(range(len(rows)), key=lambda i: (rows[i].priority, -i))
    total = sum(r.seconds for r in rows)
    dropped: set[int] = set()
    for i in order:
        if total <= budget_s:
            break
        dropped.add(i)
        total -= rows[i].seconds
    return Plan(budget_s=budget_s,
                rows=[r.model_copy(update={"keep": i not in dropped}) for i, r in enumerate(rows)])
