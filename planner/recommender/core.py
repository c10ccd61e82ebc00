"""``recommend``: search training configurations that fit a GPU and rank them by training time.

The search is joint over method (16-bit LoRA, then QLoRA), LoRA targets (all linear layers, attention,
q/v), rank (the rank the rules give for the dataset, smaller only when that does not fit), micro-batch
(divisors of the effective batch, so gradient accumulation reaches it exactly), gradient checkpointing
and optimizer. Every candidate's memory comes from :func:`planner.estimate` (the peak on the device must
stay under the GPU's usable memory less ``headroom``) and its speed from :mod:`planner.time.throughput`.

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

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from planner.recommender import rules, snippets
from planner.model.targets import dropout_allowed, peft_target_modules
from planner.calibration import Calibration, cached_calibration
from planner.catalog import gpu_profiles, load_gpu, load_model
from planner.errors import PlannerError
from planner.estimator import estimate, usable_gib
from planner.recommender.catalogue import Instance, load_instances
from planner.model.params import total_params
from planner.recommender.rules import Task
from planner.specs import Attn, DType, Frozen, GpuProfile, Method, ModelProfile, Optim, TrainSpec
from planner.results import Estimate, MemoryGiB, PeakGiB
from planner.time.throughput import TimeBreakdown, Utilization, time_breakdown, utilization

# --------------------------------------------------------------------------- result models


class Dataset(Frozen):
    """How much data the job trains on."""

    tokens: float | None
    """Training tokens per epoch (None: not given; hours are then null)."""
    examples: int | None = None
    avg_tokens: float | None = None
    epochs: float


class GpuBudget(Frozen):
    name: str
    memory_gib: float
    usable_gib: float
    """Memory a process can allocate (total less driver-reserved)."""
    budget_gib: float
    """What a plan's device peak must stay under: usable x (1 - headroom)."""
    headroom: float
    detected: bool = False


class Plan(Frozen):
    """One recommended configuration. The first fields are the ``--json`` contract."""

    method: Method
    rank: int | None
    alpha: float | None
    targets: str | None
    """Target preset (``all-linear``, ``attn``, ``qv``); None for full fine-tuning."""
    micro_batch: int
    grad_accum: int
    grad_ckpt: bool
    optim: Optim
    learning_rate: float
    peak_gib: PeakGiB
    tokens_per_s: float
    hours: float | None
    reasons: tuple[str, ...]
    # -- details
    target_modules: str | list[str] | None
    lora_dropout: float | None
    use_rslora: bool
    seq_len: int
    dtype: DType
    effective_batch: int
    lr_scheduler: str
    warmup_ratio: float
    epochs: float
    optimizer_steps: int | None
    memory_gib: MemoryGiB
    headroom_gib: float
    time: TimeBreakdown
    warnings: tuple[str, ...] = ()
    code: snippets.Code | None = None


class GpuOption(Frozen):
    name: str
    memory_gib: float
    method: Method
    targets: str | None
    hours: float | None
    tokens_per_s: float


class InstanceOption(Frozen):
    provider: str
    instance: str
    gpu: str
    gpus: int
    price_per_hour: float
    hours: float | None
    cost: float | None


class Alternatives(Frozen):
    """When nothing fits: the smallest GPU profiles and the cheapest instances that would."""

    gpus: tuple[GpuOption, ...]
    instances: tuple[InstanceOption, ...]


class Recommendation(Frozen):
    """Result of :func:`recommend`; field names are the ``recommend --json`` contract."""

    model: str
    gpu: GpuBudget
    plans: tuple[Plan, ...]
    reason: str | None
    dataset: Dataset
    task: Task
    utilization: Utilization
    assumptions: tuple[str, ...]
    searched: int
    """Configurations evaluated (estimate + time model)."""
    alternatives: Alternatives | None = None


# --------------------------------------------------------------------------- request


class Request(Frozen):
    """What the user asked for (everything but the model and GPU)."""

    dataset_tokens: float | None = None
    examples: int | None = None
    avg_tokens: float | None = None
    seq_len: int = 2048
    effective_batch: int = 16
    epochs: float = 3.0
    task: Task = Task.INSTRUCTION
    headroom: float = 0.1
    top: int = 3
    methods: tuple[Method, ...] = rules.METHOD_PREFERENCE

    def tokens(self) -> float | None:
        if self.dataset_tokens is not None:
            return self.dataset_tokens
        if self.examples is not None and self.avg_tokens is not None:
            return self.examples * min(self.avg_tokens, self.seq_len)
        return None

    def time_seq_len(self) -> int:
        """Sequence length the time model runs at: the average example when given (no padding), else seq_len."""
        if self.avg_tokens is not None:
            return max(1, min(self.seq_len, int(round(self.avg_tokens))))
        return self.seq_len


def make_request(
    *,
    dataset_tokens: float | None = None,
    examples: int | None = None,
    avg_tokens: float | None = None,
    seq_len: int = 2048,
    effective_batch: int = 16,
    epochs: float = 3.0,
    task: Task | str = Task.INSTRUCTION,
    headroom: float = 0.1,
    top: int = 3,
    methods: Iterable[Method | str] | None = None,
) -> Request:
    """Validate user input into a :class:`Request` (one-line :class:`PlannerError` on bad input)."""
    if dataset_tokens is not None and (examples is not None or avg_tokens is not None):
        raise PlannerError("give either --dataset-tokens or --examples with --avg-tokens, not both")
    if (examples is None) != (avg_tokens is None):
        raise PlannerError("--examples and --avg-tokens go together (dataset tokens = examples x avg tokens)")
    for name, value in (("dataset-tokens", dataset_tokens), ("examples", examples), ("avg-tokens", avg_tokens),
                        ("seq-len", seq_len), ("effective-batch", effective_batch), ("epochs", epochs), ("top", top)):
        if value is not None and value <= 0:
            raise PlannerError(f"--{name} must be > 0, got {value}")
    if not 0 <= headroom < 1:
        raise PlannerError(f"--headroom is a fraction of GPU memory in [0, 1), got {headroom}")
    try:
        task = Task(task)
    except ValueError:
        raise PlannerError(f"unknown task {task!r}; choose from {', '.join(t.value for t in Task)}") from None
    chosen = tuple(Method(m) for m in methods) if methods else rules.METHOD_PREFERENCE
    return Request(
        dataset_tokens=dataset_tokens, examples=examples, avg_tokens=avg_tokens, seq_len=seq_len,
        effective_batch=effective_batch, epochs=epochs, task=task, headroom=headroom, top=top, methods=chosen,
    )


# --------------------------------------------------------------------------- search


@dataclass
class Candidate:
    train: TrainSpec
    estimate: Estimate
    time: TimeBreakdown
    hours: float | None
    key: tuple
    targets: str | None
    rank_tier: int


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
    """(method, targets) -> device peak at micro-batch 1 with checkpointing, best optimizer (for the 'why' lines)."""
    fitted: set = field(default_factory=set)
    """(method, targets) that have at least one fitting configuration."""

    def __post_init__(self) -> None:
        self.budget = usable_gib(self.gpu) * (1.0 - self.request.headroom)
        self.model_name = self.profile.name
        self.dtype = DType.BF16 if self.gpu.bf16 else DType.FP16
        self.params_b = total_params(self.profile.config) / 1e9
        self.util = {m: utilization(self.gpu, m) for m in self.request.methods}

    def estimate(self, train: TrainSpec) -> Estimate:
        est = self._cache.get(train)
        if est is None:
            est = estimate(self.profile, train, self.gpu, self.calibration)
            self._cache[train] = est
            self.evaluated += 1
        return est

    def fits(self, est: Estimate) -> bool:
        return est.peak_gib.device <= self.budget

    def spec(self, method: Method, targets: str | None, rank: int, mb: int, ckpt: bool, optim: Optim) -> TrainSpec:
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
        )

    def timing(self, train: TrainSpec) -> tuple[TimeBreakdown, float | None]:
        timed = train.model_copy(update={"seq_len": self.request.time_seq_len()})
        t = time_breakdown(self.profile.config, timed, self.gpu, self.util[train.method])
        tokens = self.request.tokens()
        hours = tokens * self.request.epochs / t.tokens_per_s / 3600.0 if tokens is not None else None
        return t, hours

    def micro_batches(self) -> list[int]:
        e = self.request.effective_batch
        return [d for d in range(1, e + 1) if e % d == 0]

    def run(self, rank: int, best_only: bool = False) -> list[Candidate]:
        """Candidates in preference order of targets, then method, then rank.

        ``best_only`` stops at the first (targets, method) that fits: nothing after it can rank higher.
        """
        out: list[Candidate] = []
        for t_index, targets in enumerate(rules.TARGET_PREFERENCE):
            if not self._targets_exist(targets):
                continue
            for method in self.request.methods:
                if method is Method.FULL:
                    found = self._group(method, None, rank, 0) if t_index == 0 else []
                else:
                    found = []
                    for tier, r in enumerate(_rank_fallbacks(rank)):
                        found = self._group(method, targets, r, tier)
                        if found:
                            break
                out += found
                if best_only and found:
                    return out
        return out

    def feasible(self) -> bool:
        """Whether the leanest configuration fits (smallest targets, rank 8, micro-batch 1, checkpointing,
        8-bit optimizer state): memory only grows from there, so False means no plan can fit."""
        for method in self.request.methods:
            if method is Method.FULL:
                targets = None
            else:
                targets = next((t for t in reversed(rules.TARGET_PREFERENCE) if self._targets_exist(t)), None)
                if targets is None:
                    continue
            for optim in (Optim.ADAMW_8BIT, Optim.PAGED_ADAMW_8BIT):
                if self.fits(self.estimate(self.spec(method, targets, _rank_fallbacks(8)[-1], 1, True, optim))):
                    return True
        return False

    def _targets_exist(self, targets: str) -> bool:
        try:
            peft_target_modules(self.profile.config, (targets,))
        except PlannerError:
            return False  # e.g. no separate q/v projections
        return True

    def _group(self, method: Method, targets: str | None, rank: int, rank_tier: int) -> list[Candidate]:
        found: list[Candidate] = []
        for ckpt in (True, False):
            fitted_any = False
            for mb in self.micro_batches():
                cand = None
                for optim in rules.OPTIM_PREFERENCE:
                    train = self.spec(method, targets, rank, mb, ckpt, optim)
                    est = self.estimate(train)
                    if ckpt and mb == 1:
                        key = (method, targets)
                        self.leanest[key] = min(self.leanest.get(key, math.inf), est.peak_gib.device)
                    if self.fits(est):
                        cand = self._candidate(train, est, targets, rank_tier)
                        break
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


def _rank_fallbacks(rank: int) -> list[int]:
    ranks = [rank]
    while ranks[-1] > 8:
        ranks.append(ranks[-1] // 2)
    return ranks


def select(candidates: list[Candidate], top: int) -> list[Candidate]:
    """Best candidate per (method, targets, rank, checkpointing), ordered by key; first ``top``."""
    best: dict[tuple, Candidate] = {}
    for c in sorted(candidates, key=lambda c: c.key):
        shape = (c.train.method, c.targets, c.train.rank, c.train.grad_ckpt)
        best.setdefault(shape, c)
    return sorted(best.values(), key=lambda c: c.key)[:top]


# --------------------------------------------------------------------------- plans


def _hub_id(profile: ModelProfile) -> str:
    return profile.hub_id or profile.name


def _reasons(search: Search, c: Candidate, rank_why: str, lr_why: str, recommended_rank: int) -> list[str]:
    t = c.train
    req = search.request
    reasons: list[str] = []
    budget = f"{search.budget:.1f} GiB budget ({search.gpu.name} usable {usable_gib(search.gpu):.1f} GiB less {req.headroom:.0%} headroom)"
    if t.method is Method.LORA:
        reasons.append(f"16-bit LoRA fits the {budget}: no quantization error or dequantization time "
                       f"[{rules.SOURCES['lwr'].title}]")
    elif t.method is Method.QLORA:
        lora_key = (Method.LORA, c.targets)
        if Method.LORA not in req.methods:
            lead = ""
        elif lora_key in search.fitted:
            lead = ("alternative to 16-bit LoRA (which fits and ranks first): the 4-bit base frees memory for "
                    "larger micro-batches or no checkpointing; ")
        else:
            peak = search.leanest.get(lora_key)
            need = f" (at micro-batch 1 with checkpointing it peaks at {peak:.1f} GiB)" if peak else ""
            lead = f"16-bit LoRA does not fit{need}; "
        reasons.append(f"{lead}QLoRA (NF4 base + 16-bit adapters) fits the {budget}; NF4 QLoRA with adapters on "
                       f"all linear layers matches 16-bit fine-tuning [{rules.SOURCES['qlora'].title}]")
    else:
        reasons.append(f"full fine-tuning fits the {budget}")
    if c.targets:
        better = [x for x in rules.TARGET_PREFERENCE[: rules.TARGET_PREFERENCE.index(c.targets)]
                  if (t.method, x) in search.fitted]
        reasons.append(rules.target_reason(c.targets, alternative_to=better[0] if better else None))
        if t.rank == recommended_rank:
            reasons.append(rank_why)
        else:
            reasons.append(f"rank {t.rank}: the recommended rank {recommended_rank} does not fit with these targets")
        reasons.append(f"lora_alpha = 2 x rank = {t.alpha:g} (scale alpha/r = 2); dropout {t.lora_dropout:g} "
                       f"(0.1 up to 13B, 0.05 above [{rules.SOURCES['qlora-scripts'].title}])")
        note = rules.rslora_note(t.rank)
        if note:
            reasons.append(note)
    e = req.effective_batch
    bigger = [mb for mb in search.micro_batches() if mb > t.micro_batch]
    if bigger:
        nxt = search.spec(t.method, c.targets, t.rank, bigger[0], t.grad_ckpt, t.optim)
        est = search._cache.get(nxt)
        limit = f"micro-batch {bigger[0]} would peak at {est.peak_gib.device:.1f} GiB" if est and not search.fits(est) \
            else f"micro-batch {bigger[0]} is slower or less preferred"
        reasons.append(f"micro-batch {t.micro_batch} x grad-accum {t.grad_accum} = effective batch {e}; {limit}")
    else:
        reasons.append(f"micro-batch {t.micro_batch} (the whole effective batch {e}) fits; no accumulation")
    if t.grad_ckpt:
        off = search._cache.get(t.model_copy(update={"grad_ckpt": False, "micro_batch": 1,
                                                   "grad_accum": e}))
        if off is not None and not search.fits(off):
            reasons.append(f"gradient checkpointing on: without it the peak is {off.peak_gib.device:.1f} GiB even at micro-batch 1")
        else:
            reasons.append("gradient checkpointing on: fewer, larger micro-batches beat skipping the recompute here")
    else:
        reasons.append("gradient checkpointing off: the activations fit, saving the recompute (one extra forward)")
    if t.optim is Optim.ADAMW:
        reasons.append("AdamW with fp32 state (torch fused): exact and fastest; 8-bit/paged state is only used when needed")
    else:
        reasons.append(f"{t.optim.value}: fp32 AdamW state does not fit alongside this configuration")
    reasons.append(lr_why)
    reasons.append(rules.schedule_reason())
    reasons.append(rules.EFFECTIVE_BATCH_NOTE.format(batch=e))
    u = c.time.mfu
    tokens = req.tokens()
    if c.hours is not None and tokens is not None:
        reasons.append(f"{c.time.tokens_per_s:,.0f} tokens/s at {u:.0%} of {c.time.peak_tflops:g} TFLOPS "
                       f"-> {c.hours:.1f} h for {tokens / 1e6:,.1f}M tokens x {req.epochs:g} epochs")
    else:
        reasons.append(f"{c.time.tokens_per_s:,.0f} tokens/s at {u:.0%} of {c.time.peak_tflops:g} TFLOPS")
    return reasons


def build_plan(search: Search, c: Candidate, with_code: bool = True) -> Plan:
    req = search.request
    t = c.train
    full = t.method is Method.FULL
    recommended, rank_why = rules.recommended_rank(req.tokens(), req.task)
    lr, lr_why = rules.learning_rate(t.method, search.params_b)
    modules = None if full else peft_target_modules(search.profile.config, t.targets)
    tokens = req.tokens()
    steps = None
    if tokens is not None:
        steps = math.ceil(tokens * req.epochs / (req.effective_batch * req.time_seq_len()))
    code = None
    if with_code:
        lora = None if full else snippets.lora_config(t.rank, t.alpha, modules, t.lora_dropout, False)
        bnb = snippets.bnb_config(t.dtype, t.double_quant) if t.method is Method.QLORA else None
        sft = snippets.sft_config(
            micro_batch=t.micro_batch, grad_accum=t.grad_accum, grad_ckpt=t.grad_ckpt, optim=t.optim,
            learning_rate=lr, scheduler=rules.SCHEDULER, warmup=rules.WARMUP_RATIO, epochs=req.epochs,
            dtype=t.dtype, max_length=t.seq_len,
        )
        code = snippets.Code(lora_config=lora, bnb_config=bnb, sft_config=sft,
                             python=snippets.script(hub_id=_hub_id(search.profile), dtype=t.dtype, lora=lora,
                                                    bnb=bnb, sft=sft))
    warnings = list(c.estimate.warnings)
    if req.avg_tokens is not None and req.avg_tokens > req.seq_len:
        warnings.append(f"average example ({req.avg_tokens:g} tokens) is longer than --seq-len {req.seq_len}: "
                        "examples are truncated to max_length")
    return Plan(
        method=t.method,
        rank=None if full else t.rank,
        alpha=None if full else t.alpha,
        targets=c.targets,
        micro_batch=t.micro_batch,
        grad_accum=t.grad_accum,
        grad_ckpt=t.grad_ckpt,
        optim=t.optim,
        learning_rate=lr,
        peak_gib=c.estimate.peak_gib,
        tokens_per_s=round(c.time.tokens_per_s, 1),
        hours=None if c.hours is None else round(c.hours, 3),
        reasons=tuple(_reasons(search, c, rank_why, lr_why, recommended)),
        target_modules=modules,
        lora_dropout=None if full else t.lora_dropout,
        use_rslora=False,
        seq_len=t.seq_len,
        dtype=t.dtype,
        effective_batch=req.effective_batch,
        lr_scheduler=rules.SCHEDULER,
        warmup_ratio=rules.WARMUP_RATIO,
        epochs=req.epochs,
        optimizer_steps=steps,
        memory_gib=c.estimate.memory_gib,
        headroom_gib=round(search.budget - c.estimate.peak_gib.device, 3),
        time=c.time,
        warnings=tuple(warnings),
        code=code,
    )


def _assumptions(search: Search) -> list[str]:
    req = search.request
    u = search.util[req.methods[0]]
    out = []
    tokens = req.tokens()
    if tokens is None:
        out.append("dataset size not given (--dataset-tokens or --examples/--avg-tokens): tokens/s only, hours null, "
                   "rank r=16")
    elif req.avg_tokens is not None:
        out.append(f"time runs at the average example length ({req.time_seq_len()} tokens) with no padding; memory at "
                   f"--seq-len {req.seq_len} (the longest batch); padding adds time")
    else:
        out.append(f"every sequence is {req.seq_len} tokens (packed, no padding); padding adds time")
    out.append(
        f"utilization {u.mfu:.0%} of the dense {'bf16' if search.dtype is DType.BF16 else 'fp16'} peak "
        f"({u.basis}: {'; '.join(u.sources[:1])}{' ...' if len(u.sources) > 1 else ''}) plus "
        f"{u.overhead_s_per_layer * 1e3:.2f} ms per layer per micro-batch of fixed overhead; FLOPs per token from "
        "Kaplan et al. 2020 (2N forward, 2N backward with a frozen base, 4N full, + a forward with checkpointing, "
        "causal attention 2*L*s*d); QLoRA adds NF4 dequantization at memory bandwidth"
    )
    if u.basis not in ("measured", "published-gpu"):
        out.append(f"no published or measured run on a {search.gpu.name}: its utilization is borrowed ({u.basis}); "
                   "run `loraplan probe` on it to measure")
    out.append("single GPU, transformers Trainer / TRL SFTTrainer + PEFT + bitsandbytes, SDPA attention, "
               "standard (unchunked) loss")
    return out


def detect_gpu() -> GpuProfile:
    """The local CUDA GPU's profile, via ``probes.detect`` when it is installed (device 0).

    Accepts what the detector returns: a :class:`GpuProfile`, an object or dict with ``profile``
    (a shipped profile name) or ``name`` (a device name such as ``NVIDIA GeForce RTX 4090``), or a
    list of those.

    Raises:
        PlannerError: no GPU detected (or no matching profile).
    """
    err = PlannerError("no --gpu given and no GPU detected; pass --gpu (e.g. --gpu 4090)")
    try:
        from probes import detect  # lazy: may import torch / pynvml
    except ImportError:
        raise err from None
    fn = next((getattr(detect, n) for n in ("detect_gpus", "detect_gpu", "detect", "local_gpu")
               if callable(getattr(detect, n, None))), None)
    if fn is None:
        raise err
    try:
        found = fn()
    except Exception:  # noqa: BLE001 - any driver / library failure means "no GPU"
        raise err from None
    if isinstance(found, (list, tuple)):
        found = found[0] if found else None
    if found is None:
        raise err
    if isinstance(found, GpuProfile):
        return found
    get = found.get if isinstance(found, dict) else (lambda k: getattr(found, k, None))
    profile, name = get("profile"), get("name") if not isinstance(found, str) else found
    if isinstance(profile, GpuProfile):
        return profile
    for candidate in (profile, name):
        if isinstance(candidate, str) and candidate:
            try:
                return load_gpu(candidate)
            except PlannerError:
                continue
    raise PlannerError(f"detected GPU {name!r} has no shipped profile; pass --gpu with the closest one")


def _search(profile: ModelProfile, gpu: GpuProfile, request: Request) -> tuple[Search, list[Candidate]]:
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


def _nothing_fits_reason(search: Search) -> str:
    if not search.leanest:
        return f"no configuration could be searched for {search.model_name} on {search.gpu.name}"
    (method, targets), smallest = min(search.leanest.items(), key=lambda kv: kv[1])
    what = method.value + (f" on {targets}" if targets else "")
    return (f"nothing fits {search.gpu.name}: the leanest configuration ({what}, smallest rank, micro-batch 1, "
            f"checkpointing, best optimizer) peaks at {smallest:.1f} GiB against a {search.budget:.1f} GiB budget "
            f"({usable_gib(search.gpu):.1f} GiB usable less {search.request.headroom:.0%} headroom)")


def alternatives(profile: ModelProfile, request: Request, limit: int = 3, prices: str | None = None) -> Alternatives:
    """The smallest GPU profiles, and the instances with the cheapest job, on which some plan fits."""
    fits: dict[str, Candidate | None] = {}

    def best(gpu: GpuProfile) -> Candidate | None:
        if gpu.name not in fits:
            fits[gpu.name] = best_plan(profile, gpu, request)[1]
        return fits[gpu.name]

    gpus: list[GpuOption] = []
    for gpu in sorted(gpu_profiles(), key=lambda g: (g.memory_gib, g.name)):
        c = best(gpu)
        if c is not None:
            gpus.append(GpuOption(name=gpu.name, memory_gib=gpu.memory_gib, method=c.train.method, targets=c.targets,
                                  hours=c.hours, tokens_per_s=round(c.time.tokens_per_s, 1)))
        if len(gpus) >= limit:
            break
    insts: list[tuple[float, InstanceOption]] = []
    for inst in load_instances(prices):
        try:
            gpu = load_gpu(inst.gpu)
        except PlannerError:
            continue
        c = best(gpu)
        if c is None:
            continue
        per_token = inst.price_per_hour / c.time.tokens_per_s  # orders like the job's cost
        insts.append((per_token, InstanceOption(
            provider=inst.provider, instance=inst.instance, gpu=inst.gpu, gpus=inst.gpus,
            price_per_hour=inst.price_per_hour, hours=c.hours,
            cost=None if c.hours is None else round(c.hours * inst.price_per_hour, 2))))
    insts.sort(key=lambda x: (x[0], x[1].price_per_hour))
    return Alternatives(gpus=tuple(gpus), instances=tuple(o for _, o in insts[:limit]))


def recommend(
    model: ModelProfile | str,
    gpu: GpuProfile | str | None = None,
    *,
    request: Request | None = None,
    with_alternatives: bool = True,
    with_code: bool = True,
    prices: str | None = None,
    **options: object,
) -> Recommendation:
    """Recommend training plans for ``model`` on ``gpu``, fastest first within quality tiers.

    Args:
        model: profile or name (anything :func:`planner.load_model` resolves).
        gpu: profile or name; None detects the local GPU (``probes.detect``).
        request: a :class:`Request`; or pass its fields as keyword arguments (``dataset_tokens=20e6``,
            ``examples=..., avg_tokens=...``, ``seq_len``, ``effective_batch``, ``epochs``, ``task``,
            ``headroom``, ``top``, ``methods``) - validated by :func:`make_request`.
        with_alternatives: when nothing fits, also search the smallest GPUs and cheapest instances that fit.
        with_code: attach ready-to-paste snippets to each plan.
        prices: user price file merged over the instance catalogue (alternatives only).

    Returns:
        A :class:`Recommendation`; ``plans`` is empty and ``reason`` says why when nothing fits.
    """
    profile = load_model(model) if isinstance(model, str) else model
    detected = gpu is None
    gpu_profile = detect_gpu() if gpu is None else (load_gpu(gpu) if isinstance(gpu, str) else gpu)
    request = request or make_request(**options)  # type: ignore[arg-type]
    search, cands = _search(profile, gpu_profile, request)
    chosen = select(cands, request.top)
    plans = tuple(build_plan(search, c, with_code) for c in chosen)
    reason = None
    alts = None
    if not plans:
        reason = _nothing_fits_reason(search)
        if with_alternatives:
            alts = alternatives(profile, request, prices=prices)
    budget = GpuBudget(name=gpu_profile.name, memory_gib=gpu_profile.memory_gib, usable_gib=round(usable_gib(gpu_profile), 3),
                       budget_gib=round(search.budget, 3), headroom=request.headroom, detected=detected)
    return Recommendation(
        model=profile.name,
        gpu=budget,
        plans=plans,
        reason=reason,
        dataset=Dataset(tokens=request.tokens(), examples=request.examples, avg_tokens=request.avg_tokens,
                        epochs=request.epochs),
        task=request.task,
        utilization=search.util[request.methods[0]],
        assumptions=tuple(_assumptions(search)),
        searched=search.evaluated,
        alternatives=alts,
    )


# --------------------------------------------------------------------------- instances


class InstanceResult(Frozen):
    """One instance: does a plan fit on one of its GPUs, how long, how much. First fields: the JSON contract."""

    provider: str
    instance: str
    gpu: str
    gpus: int
    price_per_hour: float
    fits: bool
    plan: Plan | None
    hours: float | None
    cost: float | None
    # -- details
    fastest: bool = False
    cost_per_mtok: float | None = None
    """USD per million training tokens (defined even without a dataset size)."""
    region: str
    price_date: str
    price_source: str
    note: str | None = None


class InstancesReport(Frozen):
    instances: tuple[InstanceResult, ...]
    model: str
    dataset: Dataset
    assumptions: tuple[str, ...]
    searched: int


def plan_instances(
    model: ModelProfile | str,
    *,
    request: Request | None = None,
    prices: str | None = None,
    providers: Iterable[str] | None = None,
    max_price_per_hour: float | None = None,
    **options: object,
) -> InstancesReport:
    """For each catalogue instance: the best single-GPU plan, its time and cost; sorted by cost.

    Multi-GPU instances count as one GPU (no sharded or data-parallel plan is modeled), so their cost is
    the whole instance's price for a one-GPU job. ``fastest`` marks the shortest job among fitting ones.
    """
    profile = load_model(model) if isinstance(model, str) else model
    request = request or make_request(**options)  # type: ignore[arg-type]
    catalogue = load_instances(prices)
    known = {i.provider.lower() for i in catalogue}
    wanted = None
    if providers:
        wanted = {p.strip().lower() for p in providers if p.strip()}
        unknown = sorted(wanted - known)
        if unknown:
            raise PlannerError(f"unknown provider {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if max_price_per_hour is not None and max_price_per_hour <= 0:
        raise PlannerError(f"--max-price-per-hour must be > 0, got {max_price_per_hour}")
    chosen: list[Instance] = [
        i for i in catalogue
        if (wanted is None or i.provider.lower() in wanted)
        and (max_price_per_hour is None or i.price_per_hour <= max_price_per_hour)
    ]
    per_gpu: dict[str, tuple[Search, Plan | None] | None] = {}
    searched = 0
    results: list[InstanceResult] = []
    for inst in chosen:
        if inst.gpu not in per_gpu:
            try:
                gpu = load_gpu(inst.gpu)
            except PlannerError:
                per_gpu[inst.gpu] = None
            else:
                search, cand = best_plan(profile, gpu, request)
                searched += search.evaluated
                per_gpu[inst.gpu] = (search, build_plan(search, cand, with_code=False) if cand else None)
        entry = per_gpu[inst.gpu]
        plan = entry[1] if entry else None
        hours = plan.hours if plan else None
        cost = round(hours * inst.price_per_hour, 2) if hours is not None else None
        per_mtok = round(inst.price_per_hour / (plan.tokens_per_s * 3600.0) * 1e6, 6) if plan else None
        note = None
        if entry is None:
            note = f"no GPU profile named {inst.gpu!r}"
        elif inst.gpus > 1:
            note = f"{inst.gpus} GPUs: counted as one (single-GPU plan; data-parallel/sharded plans not modeled)"
        results.append(InstanceResult(
            provider=inst.provider, instance=inst.instance, gpu=inst.gpu, gpus=inst.gpus,
            price_per_hour=inst.price_per_hour, fits=plan is not None, plan=plan, hours=hours, cost=cost,
            cost_per_mtok=per_mtok, region=inst.region, price_date=inst.date, price_source=inst.source, note=note,
        ))
    results.sort(key=lambda r: (not r.fits, r.cost_per_mtok if r.cost_per_mtok is not None else r.price_per_hour,
                                r.price_per_hour, r.provider, r.instance))
    fitting = [r for r in results if r.fits]
    if fitting:
        fastest = min(fitting, key=lambda r: (-(r.plan.tokens_per_s if r.plan else 0), r.price_per_hour))
        results = [r.model_copy(update={"fastest": True}) if r is fastest else r for r in results]
    assumptions = [
        "sorted by cost for the job (by USD per million tokens when no dataset size is given: the same order)",
        "on-demand list prices as dated per entry; override with --prices FILE or $LORAPLAN_INSTANCES",
        "multi-GPU instances run the single-GPU plan on one GPU",
    ]
    return InstancesReport(
        instances=tuple(results), model=profile.name,
        dataset=Dataset(tokens=request.tokens(), examples=request.examples, avg_tokens=request.avg_tokens,
                        epochs=request.epochs),
        assumptions=tuple(assumptions), searched=searched,
    )
