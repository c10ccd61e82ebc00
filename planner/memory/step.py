"""Assemble one training step's ledger: each term, its component and the sub-phases it is alive in.

Where each term lives (``persistent`` = every sub-phase):

- weights, adapters, optimizer state: persistent; gradients too when accumulating over micro-batches
  (``zero_grad`` only runs after the optimizer step), else from the backward that creates them to the step.
- saved activations: from the forward until the bottom layer's backward frees them; with checkpointing
  only the layer inputs, and one layer is recomputed during backward.
- the loss: its forward peak, and cross-entropy backward.
- transients: a layer's forward (eager scores, DoRA's weight, 4-bit dequantization), a layer's backward
  (gradients in flight), ``optimizer.step()`` (Adafactor's fp32 copies).
"""

from __future__ import annotations

from planner.memory import states
from planner.memory.activations import activations, mlp_down_saved_bytes
from planner.memory.context import Context
from planner.memory.ledger import (
    BACKWARD,
    FORWARD,
    FORWARD_BACKWARD,
    Ledger,
    Phase,
    Pool,
    Term,
    alive,
)
from planner.memory.loss import logits_memory
from planner.memory.optimizer import optimizer_memory

PEFT = "peft v0.21.2 peft/tuners/lora/layer.py Linear.forward; tuners_utils.py _cast_adapter_dtype"
AUTOGRAD = "torch autograd saved tensors under CUDA autocast (planner/memory/activations.py)"
LOSS = "transformers v5.24.0 loss/loss_utils.py ForCausalLMLoss"
CASTS = "torch.amp autocast weight cast cache (planner/memory/states.py autocast_weight_copy_bytes)"


def step_phases(ctx: Context) -> tuple[Phase, ...]:
    """The sub-phases of ``ctx``'s step (the bottom-layer backward matters only when every weight has a gradient)."""
    phases = (Phase.LAYER_FORWARD, Phase.LOSS_FORWARD, Phase.LOSS_BACKWARD, Phase.LAYER_BACKWARD)
    return phases + ((Phase.BOTTOM_BACKWARD,) if ctx.full else ()) + (Phase.OPTIMIZER,)


def step_ledger(ctx: Context) -> Ledger:
    """Every memory term of one steady-state step of ``ctx`` (overhead terms are added by the estimator)."""
    phases = step_phases(ctx)
    terms = state_terms(ctx, phases) + _activation_terms(ctx) + _loss_terms(ctx)
    return Ledger(tuple(t for t in terms if t.bytes_by_phase), phases)


def state_terms(ctx: Context, phases: tuple[Phase, ...]) -> list[Term]:
    """Weights, adapters, gradients and optimizer terms of ``ctx``'s step (empty ones included)."""
    optim = optimizer_memory(ctx)
    grads = states.gradient_bytes(ctx)
    bottom = (Phase.BOTTOM_BACKWARD,) if ctx.full else ()
    transient = alive(optim.step_transient_bytes, (Phase.OPTIMIZER,))
    if ctx.train.optimizer_in_backward:
        # torchtune optimizer_in_bwd (v0.6.1 training/memory.py register_optim_in_bwd_hooks): each parameter's
        # optimizer steps in its post-accumulate-grad hook, then zero_grad frees the gradient: backward holds one
        # parameter's gradient and one step's temporaries at a time; there is no optimizer.step() after it.
        one = states.largest_param_bytes(ctx)
        grad_phases = alive(one, (Phase.LAYER_BACKWARD,) + bottom)
        share = one / grads if grads else 0.0
        transient = alive(optim.step_transient_bytes * share, (Phase.LAYER_BACKWARD,) + bottom)
    elif ctx.accumulating:
        grad_phases = alive(grads, phases)
    else:
        # Non-full: every adapter gradient exists from the top layer's backward on. Full: the top layer's
        # backward holds the first one (lm_head / tied embedding); all exist by the bottom layer.
        grad_phases = alive(grads, bottom + (Phase.OPTIMIZER,))
        grad_phases[Phase.LAYER_BACKWARD] = states.lm_head_grad_bytes(ctx) if ctx.full else grads
    terms = [
        Term("base weights", "weights", alive(states.weight_bytes(ctx), phases),
             source="planner/memory/states.py weight_bytes"),
        Term("adapters", "adapters", alive(states.adapter_bytes(ctx), phases), source=PEFT),
        Term("gradients", "gradients", grad_phases, source="one per trainable parameter, in its dtype"),
        Term("optimizer state", "optimizer", alive(optim.state_bytes, phases), source=ctx.optimizer.source),
        Term("paged optimizer state", "optimizer", alive(optim.paged_bytes, phases), pool=Pool.MANAGED,
             source=ctx.optimizer.source),
        Term("optimizer step transient", "optimizer", transient, source=ctx.optimizer.source),
    ]
    if ctx.full and ctx.accumulating:
        # The top layer's fresh lm_head gradient before autograd accumulates it into .grad.
        terms.append(Term("new lm_head gradient", "gradients",
                          alive(states.lm_head_grad_bytes(ctx), (Phase.LAYER_BACKWARD,))))
    if ctx.full and ctx.config.tie_word_embeddings and not ctx.train.optimizer_in_backward:
        # With tied embeddings the lm_head's gradient is still waiting to be summed when the embedding backward
        # creates its own (autograd accumulates the two into the one .grad afterwards).
        terms.append(Term("tied embedding gradient (pending sum)", "gradients",
                          alive(states.lm_head_grad_bytes(ctx), bottom)))
    return terms


def _activation_terms(ctx: Context) -> list[Term]:
    acts = activations(ctx)
    ckpt, layers = ctx.train.grad_ckpt, ctx.layers
    bottom = (Phase.BOTTOM_BACKWARD,) if ctx.full else ()
    layer_saved = alive(acts.layers_saved(layers, ckpt), FORWARD_BACKWARD)
    recompute: dict[Phase, float] = {}
    if ckpt:
        recompute = alive(acts.per_layer_bytes, (Phase.LAYER_BACKWARD,) + bottom)
    elif ctx.full:
        layer_saved[Phase.BOTTOM_BACKWARD] = acts.per_layer_bytes  # the bottom layer's own saved tensors
    return [
        _autocast_casts_term(ctx),
        Term("saved activations (decoder layers)", "activations", layer_saved, source=AUTOGRAD),
        Term("saved activations (outside layers)", "activations",
             alive(acts.outside_layers_bytes, FORWARD_BACKWARD + bottom), source=AUTOGRAD),
        Term("recomputed layer", "activations", recompute, source="torch.utils.checkpoint (non-reentrant)"),
        Term("layer backward in flight", "activations",
             alive(acts.layer_backward_transient_bytes, (Phase.LAYER_BACKWARD,) + bottom), source=AUTOGRAD),
        Term("layer forward transient", "activations", alive(acts.forward_transient_bytes, (Phase.LAYER_FORWARD,)),
             source=AUTOGRAD),
        Term("4-bit dequantized weight", "activations", _dequant_phases(ctx),
             source="bitsandbytes v0.50.2 autograd/_functions.py MatMul4Bit (dequantize_4bit per matmul)"),
    ]


def _autocast_casts_term(ctx: Context) -> Term:
    """16-bit autocast copies of fp32 weights (``--fp32-master``).

    Without checkpointing autograd saves every copy until its layer's backward. With it, trainable (full)
    weights' copies stay in autocast's cache until the forward region ends, and the recomputed layer makes
    its own; frozen (LoRA) weights' copies are per op, alive only inside the layer being recomputed.
    """
    casts = states.autocast_weight_copy_bytes(ctx)
    if not ctx.train.grad_ckpt:
        by_phase = alive(casts, FORWARD_BACKWARD)
    else:
        by_phase = alive(casts, FORWARD) if ctx.full else {}
        by_phase.update(alive(casts / ctx.layers, (Phase.LAYER_BACKWARD,)))
    return Term("autocast weight copies", "weights", by_phase, source=CASTS)


def _dequant_phases(ctx: Context) -> dict[Phase, float]:
    """The largest dequantized 4-bit weight, in a layer's forward and backward. In backward the gate/up
    weights are dequantized after the down projection's backward freed its saved tensors, so only what
    exceeds those adds to the layer-backward peak (never below the peak without a dequantized weight)."""
    dequant = states.qlora_dequant_transient_bytes(ctx)
    if not dequant:
        return {}
    return {Phase.LAYER_FORWARD: dequant, Phase.LAYER_BACKWARD: max(0.0, dequant - mlp_down_saved_bytes(ctx))}


def _loss_terms(ctx: Context) -> list[Term]:
    logits = logits_memory(ctx)
    return [
        Term("lm_head weight cast (saved)", "logits",
             alive(logits.saved_weight_bytes, (Phase.LAYER_FORWARD, Phase.LOSS_FORWARD, Phase.LOSS_BACKWARD)),
             source=LOSS),
        Term("lm_head dequantized (4-bit)", "logits",
             alive(states.lm_head_dequant_transient_bytes(ctx), (Phase.LOSS_FORWARD, Phase.LOSS_BACKWARD)),
             source=LOSS),
        Term("logits and loss", "logits",
             {Phase.LOSS_FORWARD: logits.forward_bytes, Phase.LOSS_BACKWARD: logits.backward_bytes}, source=LOSS),
    ]


def cached_logits_term(ctx: Context) -> Term:
    """The allocator's unusable cached logits block during backward (uncalibrated reserve)."""
    backward = tuple(p for p in step_phases(ctx) if p in BACKWARD)
    return Term("cached logits block", "overhead", alive(logits_memory(ctx).cached_block_bytes, backward),
                pool=Pool.CACHED, source="c10/cuda/CUDACachingAllocator.cpp (freed blocks are kept and split)")
