"""The "why" lines of a plan, and the reason when nothing fits. Each line cites a rule's source or a number."""

from __future__ import annotations

from planner.estimator import usable_gib
from planner.recommender import rules
from planner.recommender.search import Candidate, Search
from planner.specs import Method, Optim
from planner.stack.snippet_options import checkpointing_available


def _budget_text(search: Search) -> str:
    req = search.request
    return (f"{search.budget:.1f} GiB budget ({search.gpu.name} usable {usable_gib(search.gpu):.1f} GiB less "
            f"{req.headroom:.0%} headroom)")


def _qlora_lead(search: Search, c: Candidate) -> str:
    """How QLoRA relates to 16-bit LoRA on the same targets: alternative, or LoRA does not fit."""
    lora_key = (Method.LORA, c.targets)
    if Method.LORA not in search.request.methods:
        return ""
    if lora_key in search.fitted:
        return ("alternative to 16-bit LoRA (which fits and ranks first): the 4-bit base frees memory for "
                "larger micro-batches or no checkpointing; ")
    peak = search.leanest.get(lora_key)
    need = f" (at micro-batch 1 with checkpointing it peaks at {peak:.1f} GiB)" if peak else ""
    return f"16-bit LoRA does not fit{need}; "


def method_reason(search: Search, c: Candidate) -> str:
    """Why this method: it fits the budget, with the quality source."""
    budget = _budget_text(search)
    if c.train.method is Method.LORA:
        return (f"16-bit LoRA fits the {budget}: no quantization error or dequantization time "
                f"[{rules.SOURCES['lwr'].title}]")
    if c.train.method is Method.QLORA:
        prepare = ("" if c.train.kbit_prepare else
                   " without prepare_model_for_kbit_training (embeddings and norms stay 16-bit, as TRL's "
                   "SFTTrainer runs it: the fp32 upcast does not fit)")
        return (f"{_qlora_lead(search, c)}QLoRA (NF4 base + 16-bit adapters){prepare} fits the {budget}; NF4 QLoRA "
                f"with adapters on all linear layers matches 16-bit fine-tuning [{rules.SOURCES['qlora'].title}]")
    return f"full fine-tuning fits the {budget}"


def adapter_reasons(search: Search, c: Candidate, rank_why: str, recommended_rank: int) -> list[str]:
    """Targets, rank, alpha / dropout and the rsLoRA note (nothing for full fine-tuning)."""
    t = c.train
    if not c.targets:
        return []
    better = [x for x in rules.TARGET_PREFERENCE[: rules.TARGET_PREFERENCE.index(c.targets)]
              if (t.method, x) in search.fitted]
    out = [rules.target_reason(c.targets, alternative_to=better[0] if better else None)]
    if t.rank == recommended_rank:
        out.append(rank_why)
    else:
        out.append(f"rank {t.rank}: the recommended rank {recommended_rank} does not fit with these targets")
    out.append(f"lora_alpha = 2 x rank = {t.alpha:g} (scale alpha/r = 2); dropout {t.lora_dropout:g} "
               f"(0.1 up to 13B, 0.05 above [{rules.SOURCES['qlora-scripts'].title}])")
    note = rules.rslora_note(t.rank)
    if note:
        out.append(note)
    return out


def batch_reason(search: Search, c: Candidate) -> str:
    """Micro-batch x accumulation, and what stops the next larger micro-batch."""
    t = c.train
    e = search.request.effective_batch
    bigger = [mb for mb in search.micro_batches() if mb > t.micro_batch]
    world = c.parallel.world_size if c.parallel is not None else 1
    if world > 1:
        whole = t.micro_batch * world == e
        return (f"micro-batch {t.micro_batch} per GPU x grad-accum {t.grad_accum} x {world} GPUs = effective batch {e}"
                + ("; no accumulation" if whole else ""))
    if not bigger:
        return f"micro-batch {t.micro_batch} (the whole effective batch {e}) fits; no accumulation"
    est = search.cached(search.spec(t.method, c.targets, t.rank, bigger[0], t.grad_ckpt, t.optim))
    limit = f"micro-batch {bigger[0]} would peak at {est.peak_gib.device:.1f} GiB" if est and not search.fits(est) \
        else f"micro-batch {bigger[0]} is slower or less preferred"
    return f"micro-batch {t.micro_batch} x grad-accum {t.grad_accum} = effective batch {e}; {limit}"


def checkpointing_reason(search: Search, c: Candidate) -> str:
    """Why gradient checkpointing is on or off."""
    t = c.train
    if not t.grad_ckpt:
        return "gradient checkpointing off: the activations fit, saving the recompute (one extra forward)"
    e = search.request.effective_batch
    off = search.cached(t.model_copy(update={"grad_ckpt": False, "micro_batch": 1, "grad_accum": e}))
    if off is not None and not search.fits(off):
        return f"gradient checkpointing on: without it the peak is {off.peak_gib.device:.1f} GiB even at micro-batch 1"
    return "gradient checkpointing on: fewer, larger micro-batches beat skipping the recompute here"


def optimizer_reason(optim: Optim) -> str:
    """Why this optimizer: the preferred exact one, or the first of the preference order that fits."""
    if optim is Optim.ADAMW:
        return "AdamW with fp32 state (torch fused): exact and fastest; 8-bit/paged state is only used when needed"
    return f"{optim.value}: fp32 AdamW state does not fit alongside this configuration"


def speed_reason(search: Search, c: Candidate) -> str:
    """Tokens/s at the utilization used, and hours for the dataset when its size is known."""
    req = search.request
    u = c.time.mfu
    tokens = req.tokens()
    speed = f"{c.time.tokens_per_s:,.0f} tokens/s at {u:.0%} of {c.time.peak_tflops:g} TFLOPS"
    if c.hours is not None and tokens is not None:
        return f"{speed} -> {c.hours:.1f} h for {tokens / 1e6:,.1f}M tokens x {req.epochs:g} epochs"
    return speed


def plan_reasons(search: Search, c: Candidate, rank_why: str, lr_why: str, recommended_rank: int) -> list[str]:
    """Every "why" line of one plan, in the order they are printed."""
    return [
        method_reason(search, c),
        *adapter_reasons(search, c, rank_why, recommended_rank),
        batch_reason(search, c),
        checkpointing_reason(search, c),
        optimizer_reason(c.train.optim),
        lr_why,
        rules.schedule_reason(),
        rules.EFFECTIVE_BATCH_NOTE.format(batch=search.request.effective_batch),
        speed_reason(search, c),
    ]


def nothing_fits_reason(search: Search) -> str:
    """The leanest configuration's peak against the budget (``reason`` when no plan fits)."""
    if not search.leanest:
        return f"no configuration could be searched for {search.model_name} on {search.gpu.name}"
    (method, targets), smallest = min(search.leanest.items(), key=lambda kv: kv[1])
    what = method.value + (f" on {targets}" if targets else "")
    ckpt = ("checkpointing" if checkpointing_available(search.request.framework)
            else f"no checkpointing: {search.request.framework} has none")
    return (f"nothing fits {search.gpu.name}: the leanest configuration ({what}, smallest rank, micro-batch 1, "
            f"{ckpt}, best optimizer) peaks at {smallest:.1f} GiB against a {search.budget:.1f} GiB budget "
            f"({usable_gib(search.gpu):.1f} GiB usable less {search.request.headroom:.0%} headroom)")
