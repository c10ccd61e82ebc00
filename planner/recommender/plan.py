"""A fitting candidate as a :class:`Plan`: hyperparameters, code snippets, warnings; and the stated assumptions."""

from __future__ import annotations

import math

from planner.memory.context import effective_attn
from planner.model.targets import peft_target_modules, resolve_targets
from planner.recommender import launch, rules, snippets
from planner.recommender.reasons import plan_reasons
from planner.recommender.snippet_frameworks import PlanCode, code_for
from planner.recommender.request import Request
from planner.recommender.schemas import Plan
from planner.recommender.search import Candidate, Search
from planner.specs import DType, Method, ModelProfile, TrainSpec
from planner.stack.resolve import newest_versions
from planner.stack.snippet_options import snippet_options
from planner.stack.stack import default_stack
from planner.time.comm import comm_constants


def _hub_id(profile: ModelProfile) -> str:
    return profile.hub_id or profile.name


def _code(search: Search, t: TrainSpec, modules: str | list[str] | None, learning_rate: float,
          c: Candidate | None = None) -> snippets.Code:
    """Ready-to-paste code for the request's framework at its stack's versions (LoraConfig / SFTConfig / ...)."""
    req = search.request
    stack = req.resolved_stack()
    versions = {**newest_versions(), **stack.versions, **req.code_versions}
    explicit = [] if t.method is Method.FULL else _explicit_modules(search.profile, t)
    plan = PlanCode(hub_id=_hub_id(search.profile), modules=modules, explicit_modules=explicit,
                    learning_rate=learning_rate, scheduler=rules.SCHEDULER, warmup=rules.WARMUP_RATIO,
                    epochs=req.epochs, model=search.profile.name, optimizer_steps=_optimizer_steps(req),
                    world=1 if c is None or c.parallel is None else c.parallel.world_size,
                    attn_implementation=effective_attn(search.profile.config, t, stack).transformers_name)
    return code_for(req.framework, t, plan, snippet_options(versions))


def _explicit_modules(profile: ModelProfile, t: TrainSpec) -> list[str]:
    """The LoRA target modules by name (``all-linear`` expanded), for APIs without PEFT's preset."""
    out: list[str] = []
    for lin in resolve_targets(profile.config, t.targets):
        for name in lin.aliases or (lin.name,):
            if name not in out:
                out.append(name)
    return out


def _optimizer_steps(req: Request) -> int | None:
    """Optimizer steps for the whole job (None without a dataset size)."""
    tokens = req.tokens()
    if tokens is None:
        return None
    return math.ceil(tokens * req.epochs / (req.effective_batch * req.time_seq_len()))


def _warnings(req: Request, c: Candidate) -> tuple[str, ...]:
    warnings = list(c.estimate.warnings)
    if c.parallel is not None and c.parallel.offload.value != "none" and c.estimate.host_gib is not None:
        checked = "within --host-ram" if req.host_ram_gib is not None else "not checked: give --host-ram"
        warnings.append(f"offloads {c.estimate.host_gib:.0f} GiB per node to host RAM ({checked}); the CPU runs "
                        "the optimizer step")
    if req.avg_tokens is not None and req.avg_tokens > req.seq_len:
        warnings.append(f"average example ({req.avg_tokens:g} tokens) is longer than --seq-len {req.seq_len}: "
                        "examples are truncated to max_length")
    return tuple(warnings)


def _hours_range(c: Candidate) -> tuple[float, float] | None:
    """Hours at the top and bottom of the time model's error band (None without a dataset size)."""
    if c.hours is None:
        return None
    t = c.time
    return (round(c.hours * t.tokens_per_s / t.tokens_per_s_high, 3), round(c.hours * t.tokens_per_s / t.tokens_per_s_low, 3))


def build_plan(search: Search, c: Candidate, with_code: bool = True) -> Plan:
    """The plan for candidate ``c`` of ``search``, with its reasons (and code when ``with_code``)."""
    req = search.request
    t = c.train
    full = t.method is Method.FULL
    recommended, rank_why = rules.recommended_rank(req.tokens(), req.task)
    lr, lr_why = rules.learning_rate(t.method, search.params_b)
    modules = None if full else peft_target_modules(search.profile.config, t.targets)
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
        hours_range=_hours_range(c),
        reasons=tuple(plan_reasons(search, c, rank_why, lr_why, recommended)),
        target_modules=modules,
        lora_dropout=None if full else t.lora_dropout,
        use_rslora=False,
        seq_len=t.seq_len,
        dtype=t.dtype,
        effective_batch=req.effective_batch,
        lr_scheduler=rules.SCHEDULER,
        warmup_ratio=rules.WARMUP_RATIO,
        epochs=req.epochs,
        optimizer_steps=_optimizer_steps(req),
        memory_gib=c.estimate.memory_gib,
        headroom_gib=round(search.budget - c.estimate.peak_gib.device, 3),
        time=c.time,
        warnings=_warnings(req, c),
        code=_code(search, t, modules, lr, c) if with_code else None,
        **_parallel_fields(c),
    )


def _parallel_fields(c: Candidate) -> dict[str, object]:
    """A multi-GPU candidate's ``parallel``, ``comm``, accelerate config and launch command (else nothing)."""
    if c.parallel is None:
        return {}
    t = c.train
    return {
        "parallel": c.estimate.parallel,
        "comm": c.comm,
        "accelerate_config_yaml": launch.accelerate_config(c.parallel, grad_accum=t.grad_accum, grad_ckpt=t.grad_ckpt,
                                                           dtype=t.dtype),
        "launch_command": launch.launch_command(c.parallel),
        **({"deepspeed_config_json": launch.deepspeed_json(c.parallel, micro_batch=t.micro_batch,
                                                           grad_accum=t.grad_accum, dtype=t.dtype),
            "torchrun_command": launch.torchrun_command(c.parallel)} if c.parallel.strategy.is_zero else {}),
        "host_gib": None if c.estimate.host_gib is None or c.parallel.offload.value == "none"
        else round(c.estimate.host_gib, 3),
    }


def parallel_assumption(world: int, nodes: int, link: str | None) -> str:
    """The multi-GPU stack line of ``assumptions`` (replaces the single-GPU one)."""
    c = comm_constants()
    where = f"{world} GPUs" + (f" on {nodes} nodes" if nodes > 1 else " in one node")
    return (f"{where}, launched with accelerate (torch DDP / FSDP or DeepSpeed ZeRO), transformers Trainer / TRL "
            "SFTTrainer + PEFT + bitsandbytes, SDPA attention; micro-batch per GPU, effective batch across all; "
            f"time = per-GPU compute + the communication not hidden behind it ({link or 'interconnect'}; ring "
            f"collectives at {c['bus_efficiency']:.0%} of the link, {c['overlap_fraction']:.0%} of the compute "
            "overlappable, both assumed: profiles/parallel.json comm)")


def _dataset_assumption(req: Request) -> str:
    if req.tokens() is None:
        return ("dataset size not given (--dataset-tokens or --examples/--avg-tokens): tokens/s only, hours null, "
                "rank r=16")
    if req.avg_tokens is not None:
        return (f"time runs at the average example length ({req.time_seq_len()} tokens) with no padding; memory at "
                f"--seq-len {req.seq_len} (the longest batch); padding adds time")
    return f"every sequence is {req.seq_len} tokens (packed, no padding); padding adds time"


def assumptions(search: Search) -> list[str]:
    """What the plans assume: sequence lengths, the utilization and its source, the modeled stack."""
    u = search.util[search.request.methods[0]]
    out = [_dataset_assumption(search.request)]
    out.append(
        f"matmuls at {u.mfu:.0%} of the dense {'bf16' if search.dtype is DType.BF16 else 'fp16'} peak for a "
        f"2048x4096 GEMM, less for smaller ones ({u.provenance.value}"
        f"{' from ' + u.from_gpu + ' runs' if u.from_gpu else ''}: {'; '.join(u.sources[:1])}"
        f"{' ...' if len(u.sources) > 1 else ''}); memory-bound norms, activations, LoRA path, loss, DoRA norms and "
        "QLoRA dequantization at memory bandwidth; optimizer and clipping passes per step; "
        f"{u.overhead_s_per_layer * 1e3:.2f} ms CPU dispatch per layer per pass; time range = held-out error band"
    )
    if u.provenance.value != "measured" and u.from_gpu != search.gpu.name:
        out.append(f"no published or measured run on a {search.gpu.name}: its utilization is {u.provenance.value} "
                   f"from {u.from_gpu} runs; run `loraplan probe` on it to measure")
    out += stack_assumptions(search.request)
    return out


def stack_assumptions(req: Request) -> list[str]:
    """The modelled stack (the default: one fixed line) and what resolving a named one warned."""
    stack = req.resolved_stack()
    if stack.name == default_stack().name:
        return ["single GPU, transformers Trainer / TRL SFTTrainer + PEFT + bitsandbytes, SDPA attention, "
                "standard (unchunked) loss"] + list(req.stack_warnings)
    out = [f"single GPU, SDPA attention, stack {stack.framework}: {stack.description}"]
    untraced = stack.untraced_note()
    if untraced:
        out.append(untraced)
    return out + list(req.stack_warnings)
