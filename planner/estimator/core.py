"""``estimate``: memory of one training step, by component and at the step's peak.

The peak is the maximum over the phases of a steady-state step (the second one: optimizer state
exists from the first ``step()`` on), not the sum of every component:

- ``forward``:   persistent + all saved activations + the loss forward (logits, fp32 copy, log_softmax)
- ``backward``:  persistent + saved activations + cross-entropy backward; then, per layer, the
                 recomputed layer (checkpointing) and its gradients in flight, with parameter
                 gradients accumulating (full fine-tuning)
- ``optimizer``: persistent + all gradients + the optimizer's step transient

where persistent = weights + adapters + optimizer state (+ gradients when accumulating over
several micro-batches, since ``zero_grad`` only runs after the optimizer step).
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.memory import terms as memory
from planner.model.architecture import architecture, lora_dropout
from planner.calibration import Calibration
from planner.catalog import load_gpu, load_model, runtime_constants
from planner.specs import GIB, GpuProfile, Method, ModelProfile, TrainSpec
from planner.results import Estimate, GpuRef, MemoryGiB, PeakGiB
from planner.model.params import param_counts


@dataclass(frozen=True)
class Phases:
    """Allocated bytes at the peak of each phase."""

    forward: float
    backward: float
    optimizer: float

    def peak(self) -> tuple[str, float]:
        return max(vars(self).items(), key=lambda kv: kv[1])


def _overhead(gpu: GpuProfile | None, calibration: Calibration | None) -> tuple[float, float]:
    """(cuBLAS workspace bytes in torch's allocator, CUDA context bytes outside it)."""
    rt = runtime_constants()
    cc = gpu.compute_capability if gpu else None
    ctx = rt["cuda_context_gib"]
    context_gib = ctx["by_compute_capability"].get(cc, ctx["default"]) if cc else ctx["default"]
    if calibration is not None:
        context_gib = calibration.cuda_context_gib
    ws = rt["cublas_workspace_gib"]
    workspace_gib = ws["hopper"] if cc and float(cc) >= 9.0 else ws["default"]
    return workspace_gib * GIB, context_gib * GIB


def estimate(
    model: ModelProfile | str,
    train: TrainSpec | None = None,
    gpu: GpuProfile | str | None = None,
    calibration: Calibration | None = None,
) -> Estimate:
    """Estimate the GPU memory of one fine-tuning step.

    Args:
        model: A :class:`ModelProfile` or anything :func:`planner.catalog.load_model` resolves.
        train: The training configuration (defaults: LoRA r=16 on all linear layers, bf16, micro-batch 1,
            seq 2048, checkpointing, AdamW).
        gpu: A :class:`GpuProfile` or GPU name; when given, ``fits`` and ``headroom_gib`` are set.
        calibration: Measured CUDA context / allocator reserve for this GPU (from a probe).

    Returns:
        An :class:`Estimate`; all sizes in GiB (2**30 bytes).

    Raises:
        PlannerError: unknown model/GPU or targets that match no module.
    """
    profile = load_model(model) if isinstance(model, str) else model
    gpu_profile = load_gpu(gpu) if isinstance(gpu, str) else gpu
    train = train or TrainSpec()
    cfg = profile.config
    if train.method is not Method.FULL:
        dropout = lora_dropout(cfg, train.targets, train.lora_dropout)
        if dropout != train.lora_dropout:
            train = train.model_copy(update={"lora_dropout": dropout})
    layers = cfg.num_hidden_layers

    weights = memory.weight_bytes(cfg, train)
    casts = memory.autocast_weight_copy_bytes(cfg, train)
    adapters = memory.adapter_bytes(cfg, train)
    grads = memory.gradient_bytes(cfg, train)
    optim = memory.optimizer_memory(cfg, train)
    acts = memory.activations(cfg, train)
    logits = memory.logits_memory(cfg, train)
    workspace, context = _overhead(gpu_profile, calibration)

    accumulate = train.grad_accum > 1
    persistent = weights + adapters + optim.state_bytes + workspace + (grads if accumulate else 0.0)
    saved = acts.saved_total(layers, train.grad_ckpt) + (0.0 if train.grad_ckpt else casts)
    # With checkpointing nothing keeps the casts for backward: trainable (full) weights' casts stay in
    # autocast's cache until the region ends; frozen (LoRA) weights' casts are per op and transient.
    forward_casts = casts if train.grad_ckpt and train.method is Method.FULL else 0.0
    dequant = memory.qlora_dequant_transient_bytes(cfg, train)
    grad_live = 0.0 if accumulate else grads  # gradients allocated during backward (already in persistent otherwise)

    forward = (
        persistent + saved + forward_casts + logits.saved_weight_bytes
        + max(logits.forward_bytes, acts.forward_transient_bytes + dequant)
    )
    ce_backward = persistent + saved + logits.saved_weight_bytes + logits.backward_bytes
    # Top layer's backward: every saved tensor is still alive; with checkpointing the layer is
    # recomputed on top of the saved layer inputs.
    recompute = acts.per_layer_bytes + casts / layers if train.grad_ckpt else 0.0
    in_flight = acts.layer_backward_transient_bytes + dequant
    first_grads = grad_live if train.method is not Method.FULL else memory.lm_head_grad_bytes(cfg, train)
    layer_backward = persistent + saved + recompute + in_flight + first_grads
    if train.method is Method.FULL:
        # Parameter gradients appear as backward proceeds while activations are freed: the bottom
        # layer holds all gradients plus its own activations. With tied embeddings the lm_head's
        # gradient is still waiting to be summed when the embedding backward creates its own
        # (autograd accumulates the two into the one .grad afterwards): one more vocab x hidden.
        tied_pending = memory.lm_head_grad_bytes(cfg, train) if cfg.tie_word_embeddings else 0.0
        layer_backward = max(
            layer_backward,
            persistent + grad_live + acts.per_layer_bytes + in_flight + acts.outside_layers_bytes + tied_pending,
        )
    backward = max(ce_backward, layer_backward)
    optimizer = persistent + grad_live + optim.step_transient_bytes
    phases = Phases(forward=forward, backward=backward, optimizer=optimizer)
    phase, allocated = phases.peak()

    reserved = allocated + _allocator_reserve(phase, train, logits, allocated, calibration)
    device = reserved + context + optim.paged_bytes

    counts = param_counts(cfg, train)
    breakdown = MemoryGiB(
        weights=(weights + casts) / GIB,
        adapters=adapters / GIB,
        gradients=grads / GIB,
        optimizer=(optim.state_bytes + optim.paged_bytes + optim.step_transient_bytes) / GIB,
        activations=(saved + recompute + in_flight + acts.forward_transient_bytes) / GIB,
        logits=(logits.saved_weight_bytes + max(logits.forward_bytes, logits.backward_bytes)) / GIB,
        overhead=(workspace + context + reserved - allocated) / GIB,
    )
    peak = PeakGiB(allocated=allocated / GIB, reserved=reserved / GIB, device=device / GIB)
    fits = headroom = None
    gpu_ref = None
    if gpu_profile is not None:
        gpu_ref = GpuRef(name=gpu_profile.name, memory_gib=gpu_profile.memory_gib)
        headroom = usable_gib(gpu_profile) - peak.device
        fits = headroom >= 0
    warnings = []
    if train.method is Method.QLORA and architecture(cfg).expert_params:
        warnings.append(
            "transformers 5 stores MoE experts as 3-D parameters, which bitsandbytes does not quantize: only the "
            "attention layers are 4-bit, the experts stay floating point"
            + (" (fp32 after prepare_model_for_kbit_training)" if train.kbit_prepare else "")
        )
    if train.method is Method.QLORA and not architecture(cfg).bnb_quantizable:
        warnings.append(
            f"transformers quantizes only exact nn.Linear modules; {cfg.model_type}'s linear layers are a subclass "
            "and stay unquantized, so QLoRA saves no weight memory here (prepare_model_for_kbit_training then "
            "upcasts them to fp32): use --method lora"
        )
    if train.seq_len > cfg.max_position_embeddings:
        warnings.append(
            f"seq_len {train.seq_len} exceeds the model's max_position_embeddings {cfg.max_position_embeddings}"
        )
    if optim.paged_bytes:
        warnings.append(
            f"paged optimizer state ({optim.paged_bytes / GIB:.2f} GiB) is CUDA managed memory: counted on the "
            "device, outside torch's counters, and can spill to host RAM under pressure (slower)"
        )
    return Estimate(
        model=profile.name,
        method=train.method,
        train=train,
        params=counts,
        memory_gib=breakdown,
        peak_gib=peak,
        peak_phase=phase,
        host_spillable_gib=optim.paged_bytes / GIB,
        gpu=gpu_ref,
        fits=fits,
        headroom_gib=headroom,
        advice=None,
        warnings=tuple(warnings),
    )


def usable_gib(gpu: GpuProfile) -> float:
    """Memory a process can use: nvidia-smi's total less what the driver reserves (profiles/runtime.json)."""
    reserved = runtime_constants()["driver_reserved_mib"]
    return gpu.memory_gib - reserved["by_gpu"].get(gpu.name, reserved["default"]) / 1024.0


def _allocator_reserve(
    phase: str, train: TrainSpec, logits: memory.LogitsMemory, allocated: float, calibration: Calibration | None
) -> float:
    """Bytes the CUDA caching allocator holds beyond the live tensors at the peak.

    c10/cuda/CUDACachingAllocator.cpp never returns freed blocks during a step, and a freed block
    serves only requests that fit in it. At the cross-entropy backward peak, the compute-dtype
    logits block (freed after the loss forward) is smaller than the fp32 gradients allocated
    there, so it stays cached and unused. Large requests are also rounded up to 2 MiB segments
    (kRoundLarge), about 1 MiB per live large tensor; that is folded into the measured fraction
    a probe provides via ``calibration``.
    """
    if calibration is not None:
        return allocated * calibration.allocator_reserve_fraction
    if phase == "backward" and logits.backward_bytes:
        d = memory.dtypes(train)
        n = logits.backward_bytes / (3 * memory.FP32_BYTES)
        return n * (d.compute if d.autocast else 0.0)
    return 0.0
