"""The joint search over training configurations that fit a GPU, and the ranking of what fits.

The search is joint over method (16-bit LoRA, then QLoRA), LoRA targets (all linear layers, attention,
q/v), rank (the rank the rules give for the dataset, smaller only when that does not fit), micro-batch
(divisors of the effective batch, so gradient accumulation reaches it exactly), gradient checkpointing
and optimizer. Every candidate's memory comes from :func:`planner.estimate` (the peak on the device must
stay under the GPU's usable memory less ``headroom``) and its speed from :mod:`planner.time`.

Pruning, all exact (memory only grows with micro-batch, and an optimizer later in
:data:`planner.recommender.rules.OPTIM_PREFERENCE` is only worth trying when the earlier ones do not fit):

- for each (method, targets, rank, checkpointing), micro-batches are tried in increasing order and the
  loop stops at the first that fits with no optimizer;
- per micro-batch the first optimizer that fits is kept (the later ones are dominated: less exact or
  paged, and no faster);
- a smaller rank is tried only when the recommended rank fits nowhere for those targets, and
  checkpointing off only when checkpointing on fits at micro-batch 1.

Plans are ordered by quality tier first (targets, then 16-bit before 4-bit, then rank), then by
estimated hours; one plan per (method, targets, rank, checkpointing) is shown.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

from planner.calibration import Calibration, cached_calibration
from planner.errors import PlannerError
from planner.estimator import estimate
from planner.estimator.fits import budget_gib
from planner.model.targets import dropout_allowed, peft_target_modules
from planner.model.params import total_params
from planner.recommender import rules
from planner.recommender.request import Request
from planner.results import Estimate
from planner.specs import Attn, DType, GpuProfile, Method, ModelProfile, Optim, TrainSpec
from planner.stack.optimizers import optimizer_info
from planner.stack.snippet_options import checkpointing_available, kbit_prepare_fixed
from planner.time import TimeBreakdown, time_breakdown, utilization

_LEANEST_RANK = 8
"""Smallest rank the rank fallbacks reach (:func:`rank_fallbacks`)."""


@dataclass
class Candidate:
    """One configuration that fits, with its estimate, time and ranking key."""

    train: TrainSpec
    estimate: Estimate
    time: TimeBreakdown
    hours: float | None
    key: tuple
    targets: str | None
    rank_tier: int
    parallel: object | None = None
    """Multi-GPU candidates: the :class:`~planner.parallel.spec.ParallelSpec` they run under."""
    comm: object | None = None
    """Multi-GPU candidates: their :class:`~planner.time.comm.CommBreakdown`."""


@dataclass
class Search:
    """One model x GPU x request search, with its estimate cache and counters."""

    profile: ModelProfile
    gpu: GpuProfile
    request: Request
    calibration: Calibration | None = None
    evaluated: int = 0
    budget: float = 0.0
    _cache: dict = field(default_factory=dict)
    leanest: dict = field(default_factory=dict)
    """(method, targets) -> device peak at micro-batch 1 with checkpointing (where the framework has it), best
    optimizer (for the 'why' lines)."""
    fitted: set = field(default_factory=set)
    """(method, targets) that have at least one fitting configuration."""

    def __post_init__(self) -> None:
        self.budget = budget_gib(self.gpu, self.request.headroom)
        self.model_name = self.profile.name
        self.dtype = DType.BF16 if self.gpu.bf16 else DType.FP16
        self.params_b = total_params(self.profile.config) / 1e9
        self.util = {m: utilization(self.gpu, m) for m in self.request.methods}

    def estimate(self, train: TrainSpec) -> Estimate:
        """The estimate of ``train`` (cached; counts toward ``evaluated``)."""
        est = self._cache.get(train)
        if est is None:
            est = estimate(self.profile, train, self.gpu, self.calibration, headroom=self.request.headroom,
                           stack=self.request.stack)
            self._cache[train] = est
            self.evaluated += 1
        return est

    def cached(self, train: TrainSpec) -> Estimate | None:
        """The estimate of ``train`` if the search evaluated it, else None (evaluates nothing)."""
        return self._cache.get(train)

    def fits(self, est: Estimate) -> bool:
        """The one fit rule (:mod:`planner.estimator.fits`), evaluated by the estimate itself."""
        return bool(est.fits)

    def spec(self, method: Method, targets: str | None, rank: int, mb: int, ckpt: bool, optim: Optim,
             kbit_prepare: bool = True) -> TrainSpec:
        """The training spec of one search point (``targets`` None: full fine-tuning).

        Full fine-tuning on a GPU without bf16 keeps fp32 master weights under fp16 autocast: fp16 weights
        with ``fp16=True`` fail in the GradScaler ("Attempting to unscale FP16 gradients").
        """
        full = method is Method.FULL
        return TrainSpec(
            method=method,
            rank=rank,
            alpha=rules.alpha_for(rank),
            targets=(targets or "all-linear",),
            lora_dropout=0.0 if full or not dropout_allowed(self.profile.config, (targets or "all-linear",))
            else rules.lora_dropout(self.params_b),
            micro_batch=mb,
            seq_len=self.request.seq_len,
            grad_accum=self.request.effective_batch // mb,
            grad_ckpt=ckpt,
            optim=optim,
            attn=Attn.SDPA,
            dtype=self.dtype,
            fp32_master=full and self.dtype is DType.FP16,
            kbit_prepare=kbit_prepare,
        )

    def timing(self, train: TrainSpec) -> tuple[TimeBreakdown, float | None]:
        """Time breakdown at the request's time sequence length, and hours for the dataset (None if unsized)."""
        timed = train.model_copy(update={"seq_len": self.request.time_seq_len()})
        t = time_breakdown(self.profile.config, timed, self.gpu, self.util[train.method], stack=self.request.stack)
        tokens = self.request.tokens()
        hours = tokens * self.request.epochs / t.tokens_per_s / 3600.0 if tokens is not None else None
        return t, hours

    def micro_batches(self) -> list[int]:
        """Divisors of the effective batch, ascending (gradient accumulation then reaches it exactly)."""
        return divisors(self.request.effective_batch)

    def run(self, rank: int, best_only: bool = False) -> list[Candidate]:
        """Candidates in preference order of targets, then method, then rank.

        ``best_only`` stops at the first (targets, method) that fits: nothing after it can rank higher.
        """
        out: list[Candidate] = []
        for t_index, targets in enumerate(rules.TARGET_PREFERENCE):
            if not self.targets_exist(targets):
                continue
            for method in self.request.methods:
                if not self.allows(method):
                    continue
                if method is Method.FULL:
                    found = self._group(method, None, rank, 0) if t_index == 0 else []
                else:
                    found = self._ranks(method, targets, rank)
                out += found
                if best_only and found:
                    return out
        return out

    def feasible(self) -> bool:
        """Whether the leanest configuration fits (smallest targets, rank 8, micro-batch 1, checkpointing,
        8-bit optimizer state): memory only grows from there, so False means no plan can fit."""
        eight_bit = [o for o in rules.OPTIM_PREFERENCE if optimizer_info(o).eight_bit]
        for method in self.request.methods:
            if not self.allows(method):
                continue
            if method is Method.FULL:
                targets = None
            else:
                targets = next((t for t in reversed(rules.TARGET_PREFERENCE) if self.targets_exist(t)), None)
                if targets is None:
                    continue
            for kbit, optim in itertools.product(kbit_prepare_choices(method, self.request), eight_bit):
                if self.fits(self.estimate(self.spec(method, targets, _LEANEST_RANK, 1, True, optim, kbit))):
                    return True
        return False

    def allows(self, method: Method) -> bool:
        """Whether this search plans ``method`` (a multi-GPU search only the methods its strategy suits)."""
        return True

    def targets_exist(self, targets: str) -> bool:
        """Whether the model has the modules of a target preset (e.g. separate q/v projections)."""
        try:
            peft_target_modules(self.profile.config, (targets,))
        except PlannerError:
            return False  # e.g. no separate q/v projections
        return True

    def _ranks(self, method: Method, targets: str, rank: int) -> list[Candidate]:
        """The first rank of the fallbacks that fits with these targets (empty when none does)."""
        for tier, r in enumerate(rank_fallbacks(rank)):
            found = self._group(method, targets, r, tier)
            if found:
                return found
        return []

    def _first_fitting(self, method: Method, targets: str | None, rank: int, mb: int, ckpt: bool,
                       rank_tier: int) -> Candidate | None:
        """The first optimizer in preference order that fits this point, as a candidate (QLoRA: with
        ``prepare_model_for_kbit_training`` first, then without it, as current TRL runs QLoRA)."""
        for kbit, optim in itertools.product(kbit_prepare_choices(method, self.request), rules.OPTIM_PREFERENCE):
            train = self.spec(method, targets, rank, mb, ckpt, optim, kbit)
            est = self.estimate(train)
            if mb == 1 and ckpt == checkpointing_available(self.request.framework):
                key = (method, targets)
                self.leanest[key] = min(self.leanest.get(key, math.inf), est.peak_gib.device)
            if self.fits(est):
                return self._candidate(train, est, targets, rank_tier)
        return None

    def _group(self, method: Method, targets: str | None, rank: int, rank_tier: int) -> list[Candidate]:
        found: list[Candidate] = []
        for ckpt in (True, False) if checkpointing_available(self.request.framework) else (False,):
            fitted_any = False
            for mb in self.micro_batches():
                cand = self._first_fitting(method, targets, rank, mb, ckpt, rank_tier)
                if cand is None:
                    break
                fitted_any = True
                self.fitted.add((method, targets))
                found.append(cand)
            if not fitted_any:
                break  # checkpointing on did not fit at micro-batch 1: off will not either
        return found

    def _candidate(self, train: TrainSpec, est: Estimate, targets: str | None, rank_tier: int) -> Candidate:
        t, hours = self.timing(train)
        target_tier = rules.TARGET_PREFERENCE.index(targets) if targets else 0
        method_tier = self.request.methods.index(train.method)
        key = (target_tier, method_tier, rank_tier, 1.0 / t.tokens_per_s, -train.micro_batch)
        return Candidate(train, est, t, hours, key, targets, rank_tier)


def divisors(n: int) -> list[int]:
    """Divisors of ``n`` ascending, in O(sqrt(n)) (``--effective-batch 1000000007`` must not enumerate 1e9)."""
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return small + [n // d for d in reversed(small) if d * d != n]


def kbit_prepare_choices(method: Method, request: Request | None = None) -> tuple[bool, ...]:
    """QLoRA is tried with ``prepare_model_for_kbit_training`` (fp32 non-quantized params), then without (16-bit,
    what current TRL ``SFTTrainer`` does); the flag means nothing for the other methods.

    A named framework whose trainer decides the casts (``profiles/stacks/snippets.json`` ``kbit_prepare_fixed``:
    TRL, Unsloth, axolotl, ...) is searched only at its stack's choice.
    """
    if method is not Method.QLORA:
        return (True,)
    if request is not None and kbit_prepare_fixed(request.framework):
        return (request.resolved_stack().kbit_prepare.calls_prepare,)
    return (True, False)


def rank_fallbacks(rank: int) -> list[int]:
    """``rank``, then halvings down to the leanest rank (8)."""
    ranks = [rank]
    while ranks[-1] > _LEANEST_RANK:
        ranks.append(ranks[-1] // 2)
    return ranks


def select(candidates: list[Candidate], top: int) -> list[Candidate]:
    """Best candidate per (method, targets, rank, checkpointing), ordered by key; first ``top``."""
    best: dict[tuple, Candidate] = {}
    for c in sorted(candidates, key=lambda c: c.key):
        shape = (c.train.method, c.targets, c.train.rank, c.train.grad_ckpt)
        best.setdefault(shape, c)
    return sorted(best.values(), key=lambda c: c.key)[:top]


def full_search(profile: ModelProfile, gpu: GpuProfile, request: Request) -> tuple[Search, list[Candidate]]:
    """Every fitting candidate (unpruned by quality tier) at the request's recommended rank."""
    search = Search(profile, gpu, request, calibration=cached_calibration(gpu.name))
    rank, _ = rules.recommended_rank(request.tokens(), request.task)
    return search, search.run(rank)


def best_plan(profile: ModelProfile, gpu: GpuProfile, request: Request) -> tuple[Search, Candidate | None]:
    """The single best plan (the first quality tier that fits, fastest in it), or None."""
    search = Search(profile, gpu, request, calibration=cached_calibration(gpu.name))
    if not search.feasible():
        return search, None
    rank, _ = rules.recommended_rank(request.tokens(), request.task)
    chosen = select(search.run(rank, best_only=True), 1)
    return search, (chosen[0] if chosen else None)
