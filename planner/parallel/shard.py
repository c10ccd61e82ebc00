"""What one rank holds: the single-process ledger divided as each engine divides it.

Per strategy (``N`` = world size; engine defaults from ``profiles/parallel.json``):

- ``ddp``: everything replicated; DDP's Reducer buckets are a second copy of the gradients
  (``gradient_as_bucket_view=False``), allocated at construction.
- ``zero1``: optimizer state partitioned (1/N). With 16-bit training ZeRO keeps an fp32 master partition
  and the optimizer state follows it (fp32); the fp32 gradient partition exists inside ``step()``.
  Gradients are whole; the updated 16-bit parameters are all-gathered in ``allgather_bucket_size`` pieces.
- ``zero2``: also gradients (1/N), reduced in ``reduce_bucket_size`` buckets.
- ``zero3`` / ``fsdp`` / ``fsdp2``: also parameters (1/N at rest); the unit(s) being computed are
  all-gathered (one decoder layer per unit with the transformer auto-wrap policy, plus the prefetched
  next; the root unit with embeddings and lm_head stays gathered from forward to backward), and one
  unit's unsharded gradients exist until its reduce-scatter.
- ``fsdp-shard-grad-op``: parameters unsharded from forward to the end of backward, sharded in the step.

LoRA: the frozen base shards with the adapters (``use_orig_params=True``); only the adapters have
gradients and optimizer state. QLoRA under FSDP stores the packed 4-bit weights in a 16-bit tensor
(``bnb_4bit_quant_storage``): the same bytes, sharded like any other parameter.

Activations and logits stay per GPU at the per-GPU micro-batch (the ledger's micro-batch is per GPU).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache
from typing import Any

from planner.catalog import profiles_dir
from planner.errors import PlannerError
from planner.memory import states
from planner.memory.context import FP32_BYTES, Context
from planner.memory.ledger import BACKWARD, Ledger, Phase, Term, alive
from planner.parallel.spec import Offload, ParallelSpec, QuantStorage, Strategy

PARAM_TERMS = ("base weights", "adapters")
GRAD_TERMS = ("gradients", "new lm_head gradient", "tied embedding gradient (pending sum)")
OPTIM_TERMS = ("optimizer state", "paged optimizer state", "optimizer step transient")
SRC = "profiles/parallel.json"


@cache
def engine_defaults() -> dict[str, Any]:
    """``profiles/parallel.json``: DDP, FSDP, FSDP2 and DeepSpeed ZeRO defaults with sources."""
    import json

    return json.loads((profiles_dir() / "parallel.json").read_text())


@dataclass(frozen=True)
class Sharded:
    """One rank's ledger and what it keeps in host RAM."""

    ledger: Ledger
    host_bytes: float
    """Offloaded state of one rank (bytes)."""
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Units:
    """Bytes of the FSDP / ZeRO-3 units of ``ctx``'s model (unsharded)."""

    layer_param_bytes: float
    """One decoder layer's parameters (base and adapters)."""
    layer_grad_bytes: float
    """One decoder layer's trainable parameters' gradients."""
    root_param_bytes: float
    """Embeddings, final norm and (untied) lm_head: the root unit."""


def units(ctx: Context) -> Units:
    arch, d = ctx.arch, ctx.d
    root = (arch.embed_params + arch.lm_head_params) * d.embedding + arch.final_norm_params * d.other_param
    layers = max(ctx.layers, 1)
    layer = (states.weight_bytes(ctx) - root) / layers + states.adapter_bytes(ctx) / layers
    grads = states.gradient_bytes(ctx)
    layer_grad = arch.layer_params * d.trainable if ctx.full else grads / layers
    return Units(layer_param_bytes=layer, layer_grad_bytes=layer_grad, root_param_bytes=root)


def _scale(term: Term, factor: float, phases: tuple[Phase, ...] | None = None, name: str | None = None) -> Term:
    """``term`` with its bytes times ``factor`` (in ``phases`` only, when given)."""
    by_phase = {p: b * (factor if phases is None or p in phases else 1.0) for p, b in term.bytes_by_phase.items()}
    return replace(term, bytes_by_phase=by_phase, name=name or term.name)


def check_combination(parallel: ParallelSpec, ctx: Context) -> tuple[str, ...]:
    """Raise on combinations the engines reject; return warnings for legal but wasteful ones."""
    s, warnings = parallel.strategy, []
    if parallel.quant_storage is not None and not ctx.qlora:
        raise PlannerError("--quant-storage applies to --method qlora (bnb_4bit_quant_storage) only")
    if ctx.qlora and s.is_fsdp and parallel.quant_storage is QuantStorage.UINT8:
        raise PlannerError("FSDP cannot shard uint8 4-bit storage next to float params (torch "
                           "fsdp/_flat_param.py: uniform dtype per unit): use --quant-storage bf16")
    if ctx.qlora and (s.is_fsdp or s is Strategy.ZERO3) and parallel.quant_storage is None:
        warnings.append("QLoRA under sharding: set BitsAndBytesConfig(bnb_4bit_quant_storage=torch.bfloat16) "
                        "(--quant-storage bf16); bitsandbytes' uint8 default cannot be sharded next to float params")
    if ctx.qlora and s is Strategy.ZERO3 and parallel.quant_storage is QuantStorage.UINT8:
        warnings.append("QLoRA under ZeRO-3 needs bnb_4bit_quant_storage in the float dtype (PEFT's DeepSpeed "
                        "guide); uint8 storage is not partitioned")
    if s.is_zero and ctx.train.fp32_master:
        raise PlannerError("--fp32-master does not apply to DeepSpeed ZeRO: its bf16/fp16 engine casts the model to "
                           "16-bit and keeps its own fp32 master partition (deepspeed runtime/engine.py "
                           "_configure_distributed_model), which the zero estimate already counts")
    if parallel.world_size == 1 and s is not Strategy.NONE:
        warnings.append(f"--parallel {s.value} on one GPU shards nothing: it only adds the engine's overhead")
    return tuple(warnings)


def _state_terms(ledger: Ledger, ctx: Context, storage: Context | None) -> tuple[Ledger, tuple[str, ...]]:
    """``ledger`` (``ctx``'s step) with its parameter, gradient and optimizer terms taken from ``storage``'s
    step, where the shards are stored in other dtypes than the step computes in
    (:mod:`planner.parallel.precision`); and the warning that names why."""
    if storage is None:
        return ledger, ()
    from planner.memory.step import state_terms
    from planner.parallel.precision import upcast_note

    names = PARAM_TERMS + GRAD_TERMS + OPTIM_TERMS
    stored = {t.name: t for t in state_terms(storage, ledger.phases) if t.name in names and t.bytes_by_phase}
    terms = [stored.pop(t.name, t) if t.name in names else t for t in ledger.terms]
    terms += stored.values()
    note = upcast_note(ctx, storage)
    return Ledger(tuple(terms), ledger.phases), (note,) if note else ()


def shard(ledger: Ledger, parallel: ParallelSpec, ctx: Context, storage: Context | None = None) -> Sharded:
    """One rank's ledger under ``parallel`` (which must not be ``none``); ``storage``: the context whose
    dtypes the shards are stored in, when not ``ctx``'s (FSDP mixed precision)."""
    warnings = check_combination(parallel, ctx)
    compute_ledger = ledger  # the engine's own buffers (gathered units, unsharded gradients) are in compute dtypes
    ledger, notes = _state_terms(ledger, ctx, storage)
    warnings += notes
    s, n = parallel.strategy, float(parallel.world_size)
    offload = parallel.offload
    steps = (Phase.OPTIMIZER,)
    zero_fp32 = s.is_zero and ctx.d.trainable < FP32_BYTES
    out: list[Term] = []
    host = 0.0
    for t in ledger.terms:
        if t.name in PARAM_TERMS and s.shards_params:
            if s is Strategy.FSDP_SHARD_GRAD_OP:
                out.append(_scale(t, 1.0 / n, steps, name=f"{t.name} (sharded in step)"))
                continue
            shard_t = _scale(t, 1.0 / n, name=f"{t.name} (shard)")
            if offload is Offload.PARAMS:
                host += shard_t.size_bytes
                continue
            out.append(shard_t)
        elif t.name in GRAD_TERMS and s.shards_gradients:
            shard_t = _scale(t, 1.0 / n, name=f"{t.name} (shard)")
            # FSDP cpu_offload keeps gradient shards on the CPU. ZeRO-2 offload accumulates each reduced
            # gradient straight into the fp32 host partition (stage_1_and_2.py async_accumulate_grad_in_cpu_via_gpu,
            # counted as "fp32 gradient partition"); ZeRO-3's 16-bit partition (stage3.py
            # grad_partitions_flat_buffer) is pinned host memory under offload_optimizer.
            if offload is not Offload.NONE and s is Strategy.ZERO2:
                continue
            if offload is Offload.PARAMS and s.is_fsdp or offload is not Offload.NONE and s is Strategy.ZERO3:
                host += shard_t.size_bytes
                continue
            out.append(shard_t)
        elif t.name in OPTIM_TERMS and s.shards_optimizer:
            factor = (FP32_BYTES / ctx.d.trainable if zero_fp32 and t.name == "optimizer state" else 1.0) / n
            shard_t = _scale(t, factor, name=f"{t.name} (shard)")
            if offload is not Offload.NONE:
                host += shard_t.size_bytes
                continue
            out.append(shard_t)
        else:
            out.append(t)
    extra, extra_host = _engine_terms(compute_ledger, parallel, ctx, zero_fp32)
    out.extend(t for t in extra if t.bytes_by_phase)
    host += extra_host
    return Sharded(Ledger(tuple(out), ledger.phases), host, warnings)


def _engine_terms(ledger: Ledger, parallel: ParallelSpec, ctx: Context, zero_fp32: bool) -> tuple[list[Term], float]:
    """Terms the engine adds: gathered units, communication buckets, ZeRO's fp32 master (and what offload hosts)."""
    s, n = parallel.strategy, float(parallel.world_size)
    cfg = engine_defaults()
    u = units(ctx)
    phases = ledger.phases
    fwd_bwd = tuple(p for p in phases if p is not Phase.OPTIMIZER)
    layer_bwd = tuple(p for p in phases if p in (Phase.LAYER_BACKWARD, Phase.BOTTOM_BACKWARD))
    # A gathered unit is a new full-size buffer beside the rank's own shard, which stays allocated: torch
    # v2.13 fsdp/_flat_param.py FlatParamHandle._init_flat_param_attributes (_full_param_padded =
    # torch.empty(shard numel * world_size), in the mixed-precision param dtype) next to _local_shard;
    # deepspeed v0.19.8 runtime/zero/partition_parameters.py all_gather_coalesced (param_buffer of
    # ceil(ds_numel / world) * world elements) next to ds_tensor. FSDP2 likewise (_fsdp2_terms).
    grads = states.gradient_bytes(ctx)
    terms: list[Term] = []
    host = 0.0
    if s in (Strategy.FSDP, Strategy.FSDP_SHARD_GRAD_OP) and n == 1:
        # torch v2.13 fsdp/_init_utils.py _init_core_state clamps FSDP1 to NO_SHARD at world size 1: nothing is
        # gathered or reduce-scattered (the flat parameters and their gradients are whole).
        return terms, host
    if s is Strategy.DDP:
        terms.append(Term("DDP gradient buckets", "gradients", alive(grads, phases),
                          source=f"{SRC} ddp: {cfg['ddp']['source']}"))
    if s is Strategy.FSDP:
        key = "fsdp"
        fwd_units, bwd_units = cfg[key]["units_gathered_forward"], cfg[key]["units_gathered_backward"]
        gathered = {Phase.LAYER_FORWARD: fwd_units * u.layer_param_bytes}
        gathered.update(alive(bwd_units * u.layer_param_bytes, layer_bwd))
        terms.append(Term("all-gathered decoder-layer units", "weights", gathered,
                          source=f"{SRC} {key}: {cfg[key]['source']}"))
        terms.append(Term("all-gathered root unit (embeddings, lm_head)", "weights",
                          alive(u.root_param_bytes, fwd_bwd), source=f"{SRC} {key}"))
    if s is Strategy.FSDP2:
        return _fsdp2_terms(ledger, ctx, n, u), host
    if s is Strategy.ZERO3:
        z = cfg["deepspeed_zero"]
        prefetch = min(z["stage3_prefetch_bucket_size_elements"] * ctx.d.compute, u.layer_param_bytes)
        live = min(u.layer_param_bytes + prefetch, z["stage3_max_live_parameters_elements"] * ctx.d.compute)
        by_phase = alive(live, tuple(p for p in phases if p in (Phase.LAYER_FORWARD,) + layer_bwd))
        by_phase.update(alive(u.root_param_bytes, (Phase.LOSS_FORWARD, Phase.LOSS_BACKWARD)))
        terms.append(Term("all-gathered parameters (ZeRO-3 live + prefetch)", "weights", by_phase,
                          source=f"{SRC} deepspeed_zero: {z['source']}"))
    if s.shards_gradients and not s.is_zero:  # FSDP1 (FSDP2 returned above)
        # One unit's unsharded gradients until its reduce-scatter.
        terms.append(Term("unsharded gradients before reduce-scatter", "gradients",
                          alive(u.layer_grad_bytes, layer_bwd), source=f"{SRC}"))
    if s.is_zero:
        z = cfg["deepspeed_zero"]
        if z["contiguous_gradients"]:
            # Whole reduce_bucket_size buffers in the 16-bit dtype, however few the trainable params (LoRA
            # too): ZeRO-3 allocates one at init, ZeRO-1/2 one (two with overlap_comm) per micro-step.
            stage = {Strategy.ZERO1: "1", Strategy.ZERO2: "2", Strategy.ZERO3: "3"}[s]
            count = 2 if z["overlap_comm_default_by_stage"][stage] and s is not Strategy.ZERO3 else 1
            bucket = count * z["reduce_bucket_size_elements"] * ctx.d.compute
            terms.append(Term("ZeRO reduce bucket", "gradients", alive(bucket, phases),
                              source=f"{SRC} deepspeed_zero: {z['source']}"))
    if s in (Strategy.ZERO1, Strategy.ZERO2):
        z = cfg["deepspeed_zero"]
        gather = min(z["allgather_bucket_size_elements"] * ctx.d.trainable, grads)
        terms.append(Term("ZeRO all-gather bucket (updated params)", "optimizer", alive(gather, (Phase.OPTIMIZER,)),
                          source=f"{SRC} deepspeed_zero"))
    if zero_fp32:
        z = cfg["deepspeed_zero"]
        master = ctx.trainable_params * z["master_bytes_per_param"] / n
        master_t = Term("fp32 master weights (ZeRO shard)", "optimizer", alive(master, phases),
                        source=f"{SRC} deepspeed_zero: {z['source']}")
        grad_t = Term("fp32 gradient partition (ZeRO)", "optimizer", alive(master, (Phase.OPTIMIZER,)),
                      source=f"{SRC} deepspeed_zero")
        if parallel.offload is Offload.NONE:
            terms += [master_t, grad_t]
        else:
            host += 2 * master
    return terms, host


def root_grad_bytes(ctx: Context) -> float:
    """Gradients of the root unit's trainable parameters (embeddings, final norm, lm_head), unsharded."""
    if not ctx.full:
        return 0.0
    arch = ctx.arch
    return (arch.embed_params + arch.final_norm_params + arch.lm_head_params) * ctx.d.trainable


def _fsdp2_terms(ledger: Ledger, ctx: Context, n: float, u: Units) -> list[Term]:
    """FSDP2 (``fully_shard`` per decoder layer, then the root), as its buffers live (``profiles/parallel.json``).

    FSDP2 all-gathers each unit into a new full-size flat buffer (the local shard stays allocated) and
    copies it out into per-parameter unsharded tensors. In forward the previous unit's flat buffer is
    kept until the next unit's copy-out (the first layer keeps the root's); the root is not resharded
    after forward. In backward the next unit is prefetched; each layer's unsharded gradients are copied
    into a full-size reduce-scatter input that lives until the next layer's reduce-scatter, and the
    root's gradients (lm_head first, embeddings last) stay unsharded until the root's reduce-scatter at
    the end of backward.
    """
    cfg = engine_defaults()["fsdp2"]
    src = f"{SRC} fsdp2: {cfg['source']}"
    phases = ledger.phases
    layer, root = u.layer_param_bytes, u.root_param_bytes
    fwd = cfg["layer_all_gather_buffers_forward"] * layer + cfg["kept_all_gather_outputs_forward"] * max(root, layer)
    by_phase = {Phase.LAYER_FORWARD: fwd, Phase.LOSS_FORWARD: layer, Phase.LOSS_BACKWARD: layer,
                Phase.LAYER_BACKWARD: cfg["layer_all_gather_buffers_backward"] * layer,
                Phase.BOTTOM_BACKWARD: cfg["layer_all_gather_buffers_bottom"] * layer}
    gathered = {p: b for p, b in by_phase.items() if p in phases and b}
    terms = [
        Term("all-gathered decoder-layer units", "weights", gathered, source=src),
        Term("all-gathered root unit (embeddings, lm_head)", "weights",
             alive(root, tuple(p for p in phases if p is not Phase.OPTIMIZER)), source=src),
    ]
    grads = {Phase.LAYER_BACKWARD: cfg["layer_gradient_buffers_backward"] * u.layer_grad_bytes,
             Phase.BOTTOM_BACKWARD: cfg["layer_gradient_buffers_bottom"] * u.layer_grad_bytes}
    terms.append(Term("unsharded gradients before reduce-scatter", "gradients",
                      {p: b for p, b in grads.items() if p in phases and b}, source=src))
    root_grads = root_grad_bytes(ctx)
    full = next((t for t in ledger.terms if t.name == "gradients"), None)
    if root_grads and full is not None:
        # Whatever part of the gradients exists in a backward phase is the root's first (lm_head's is
        # computed first, the embeddings' last), up to all of it; the sharded ledger counted it 1/n.
        # Under mixed precision ``ledger`` is the compute-dtype one, so the pending part is in compute bytes (the
        # fp32 shards' extra 1/n is not subtracted: traced within 5% at world 2-8, tests/test_trace_fsdp.py).
        pending = {p: min(b, root_grads) * (1.0 - 1.0 / n) for p, b in full.bytes_by_phase.items() if p in BACKWARD}
        terms.append(Term("unsharded root-unit gradients before reduce-scatter", "gradients",
                          {p: b for p, b in pending.items() if b}, source=src))
    return terms
