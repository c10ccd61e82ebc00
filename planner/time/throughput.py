"""Time model: tokens per second of one training configuration on one GPU.

FLOPs per token (multiply-add = 2 FLOPs), for a decoder with N matmul parameters:

- forward: ``2N`` plus attention ``2 * layers * seq * (heads * head_dim)`` (QK^T and softmax(QK^T)V with a
  causal mask, which flash / memory-efficient SDPA kernels skip: Kaplan et al. 2020, "Scaling Laws for
  Neural Language Models", Table 1, ``C_forward = 2N + 2 n_layer n_ctx d_attn``). Eager attention computes
  the full square: twice that. PaLM's MFU definition (Chowdhery et al. 2022, Appendix B) counts
  ``6N + 12 L H Q T`` per token, i.e. the non-causal square; we count the work the kernels do.
- backward: activation gradients ``2N``; weight gradients another ``2N`` for trainable weights only
  (full fine-tuning: ``4N``; LoRA/QLoRA with a frozen base: ``2N`` plus the adapters' own ``4 * N_lora``);
  attention backward is twice its forward.
- gradient checkpointing: one more forward of the decoder layers (not of the lm_head).
- QLoRA: every pass (forward, backward, recompute) dequantizes each NF4 weight to 16 bits before its
  matmul (bitsandbytes ``MatMul4Bit``): a memory-bound kernel that reads the packed weight and writes a
  16-bit copy, once per micro-batch - so its cost per token falls with micro-batch x sequence length.
- DoRA: PEFT recomputes the column norm of ``W + s*BA`` every pass (``2 r in out`` per adapted module).

Time per micro-batch = max(compute, weight streaming) + dequantization + fixed per-layer overhead
(kernel launches and Python, fitted), and the optimizer step streams its state once per optimizer step.
Compute runs at the GPU's dense peak times a utilization (MFU) taken, in order, from probe measurements
in ``profiles/measurements/``, from published runs in ``profiles/throughput.json`` on the same GPU,
then the same GPU generation, then any GPU - each derived through this same FLOP model so the
definitions agree. Every figure used is reported in :class:`Utilization`.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from planner.model.architecture import architecture
from planner.model.targets import resolve_targets
from planner.catalog import _read_json, load_gpu, load_model, normalize_config, profiles_dir
from planner.memory.context import nf4_bytes_per_param
from planner.specs import Attn, DType, Frozen, GpuProfile, Method, ModelConfig, ModelProfile, Optim, TrainSpec

TFLOP = 1e12
GB = 1e9


# --------------------------------------------------------------------------- FLOPs


@dataclass(frozen=True)
class Flops:
    """FLOPs of one micro-batch, split by where they go."""

    per_token: float
    """Forward + backward + recompute FLOPs per token."""
    per_microbatch: float
    """FLOPs that do not scale with tokens (DoRA weight norms)."""
    forward_per_token: float


def _matmul_params(config: ModelConfig) -> tuple[float, float]:
    """(decoder-layer matmul params active per token, lm_head params)."""
    arch = architecture(config)
    per_layer = float(sum(lin.weight_params for lin in arch.linears))
    if arch.expert_params:
        k, e = config.num_experts_per_tok, config.num_local_experts
        per_layer += arch.expert_params * k / e + arch.router_params
    return config.num_hidden_layers * per_layer, float(config.vocab_size * config.hidden_size)


@cache
def _target_sums(config: ModelConfig, targets: tuple[str, ...]) -> tuple[float, float]:
    """(sum of in+out features, sum of in*out) over the adapted modules of one layer."""
    lins = resolve_targets(config, targets)
    return float(sum(t.in_features + t.out_features for t in lins)), float(sum(t.in_features * t.out_features for t in lins))


def flops(config: ModelConfig, train: TrainSpec) -> Flops:
    """FLOPs per token of one training step (see module docstring)."""
    layers_mm, head_mm = _matmul_params(config)
    q_dim = config.num_attention_heads * config.head_dim
    attn = 2.0 * config.num_hidden_layers * train.seq_len * q_dim
    if train.attn is Attn.EAGER:
        attn *= 2.0  # the full square, masked afterwards
    adapters = 0.0
    dora = 0.0
    if train.method is not Method.FULL:
        io_sum, io_prod = _target_sums(config, train.targets)
        adapters = config.num_hidden_layers * train.rank * io_sum
        if train.dora:
            dora = config.num_hidden_layers * 2.0 * train.rank * io_prod
    fwd = 2.0 * (layers_mm + head_mm + adapters) + attn
    if train.method is Method.FULL:
        bwd = 4.0 * (layers_mm + head_mm) + 2.0 * attn
    else:
        bwd = 2.0 * (layers_mm + head_mm) + 4.0 * adapters + 2.0 * attn
    recompute = 2.0 * (layers_mm + adapters) + attn if train.grad_ckpt else 0.0
    passes = 3.0 if train.grad_ckpt else 2.0
    return Flops(per_token=fwd + bwd + recompute, per_microbatch=dora * passes, forward_per_token=fwd)


def peak_tflops(gpu: GpuProfile, dtype: DType) -> float:
    """Dense tensor-core peak for the compute dtype (gpus.json)."""
    if dtype is DType.BF16 and gpu.bf16_tflops:
        return gpu.bf16_tflops
    if dtype is DType.FP32:
        # No fp32 tensor-core figure is stored; TF32 runs at about half the 16-bit rate on Ampere+.
        return gpu.fp16_tflops / 2.0
    return gpu.fp16_tflops


# --------------------------------------------------------------------------- constants and utilization


@cache
def throughput_profile() -> dict[str, Any]:
    """``profiles/throughput.json``: published runs to derive utilization from, and time-model constants."""
    return _read_json(profiles_dir() / "throughput.json")


def measurements_dir() -> Path:
    return profiles_dir() / "measurements"


class Utilization(Frozen):
    """The utilization assumption behind a tokens/s figure, stated in the output."""

    mfu: float
    """Fraction of the dense peak that matmul work reaches."""
    overhead_s_per_layer: float
    """Fixed time per decoder layer per micro-batch (kernel launches, Python), seconds."""
    basis: str
    """Where ``mfu`` comes from: ``measured``, ``published-gpu``, ``published-generation``, ``published-any``."""
    sources: tuple[str, ...]


class ReferencePoint(Frozen):
    """One published (or measured) training speed, normalized."""

    id: str
    gpu: str
    method: Method
    stack: str
    mfu: float
    source: str


@dataclass(frozen=True)
class _Point:
    id: str
    gpu: GpuProfile
    config: ModelConfig
    train: TrainSpec
    seconds_per_optimizer_step: float
    stack: str
    source: str


def _reference_model(spec: dict[str, Any]) -> ModelConfig:
    if "name" in spec:
        base = load_model(spec["name"]).config
        return base.model_copy(update=spec.get("override", {})) if spec.get("override") else base
    return normalize_config(spec["config"])


def _train_from(data: dict[str, Any]) -> TrainSpec:
    fields = dict(data)
    if "targets" in fields:
        fields["targets"] = tuple(fields["targets"])
    rank = fields.get("rank", 16)
    fields.setdefault("alpha", 2.0 * rank)
    return TrainSpec(**fields)


@cache
def _published_points() -> tuple[_Point, ...]:
    points = []
    for p in throughput_profile()["reference_points"]:
        train = _train_from(p["train"])
        if "seconds_per_step" in p:
            seconds = float(p["seconds_per_step"])
        else:  # tokens/s over the whole optimizer step
            seconds = train.micro_batch * train.seq_len * train.grad_accum / float(p["tokens_per_s"])
        points.append(
            _Point(p["id"], load_gpu(p["gpu"]), _reference_model(p["model"]), train, seconds, p["stack"], p["source"])
        )
    return tuple(points)


def _measured_points(directory: Path | None = None) -> tuple[_Point, ...]:
    """Probe results with a measured throughput under ``profiles/measurements/``.

    Reads ``loraplan probe --save`` results (:class:`probes.results.ProbeResult`): ``mode`` ``gpu``,
    ``tokens_per_s``, the configuration in ``estimate.train`` and the GPU profile in ``estimate.gpu.name``
    (or ``calibration.profile``). Files that are not such results (trace-mode probes, other JSON, models
    that are not shipped profiles) are skipped.
    """
    from planner.catalog import _model_index

    directory = directory or measurements_dir()
    points = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict) or data.get("mode", "gpu") != "gpu" or not data.get("tokens_per_s"):
                continue
            est = data.get("estimate") or {}
            train_data = est.get("train") or data.get("train")
            gpu_name = ((est.get("gpu") or {}).get("name") or (data.get("calibration") or {}).get("profile"))
            model = data.get("model") or est.get("model")
            if not train_data or not gpu_name or not isinstance(model, str) or model.lower() not in _model_index():
                continue  # never resolve a hub id here: no network from the planner's hot path
            train = _train_from(train_data)
            config = load_model(model).config
            seconds = train.micro_batch * train.seq_len * train.grad_accum / float(data["tokens_per_s"])
            points.append(_Point(path.stem, load_gpu(gpu_name), config, train, seconds, "transformers",
                                 f"loraplan probe measurement {path.name}"))
        except Exception:  # noqa: BLE001 - a malformed or foreign file is not a measurement
            continue
    return tuple(points)


def _known_seconds(point: _Point, consts: dict[str, Any]) -> tuple[float, float, float]:
    """(seconds not spent in matmuls or fixed overhead, matmul seconds at MFU 1, overhead seconds per s/layer)."""
    t = time_breakdown(point.config, point.train, point.gpu, Utilization(mfu=1.0, overhead_s_per_layer=0.0,
                                                                       basis="fit", sources=()), consts)
    ga = point.train.grad_accum
    known = ga * t.dequant_s + t.optimizer_s
    compute = ga * t.compute_s
    overhead = ga * point.config.num_hidden_layers
    return known, compute, overhead


def fit_overhead(points: tuple[_Point, ...], consts: dict[str, Any]) -> float:
    """Least-squares fit of ``seconds = known + compute / mfu + overhead * c`` over a series of one source."""
    rows = [_known_seconds(p, consts) for p in points]
    ys = [p.seconds_per_optimizer_step - r[0] for p, r in zip(points, rows)]
    # Normal equations for y = a * x1 + c * x2 (a = 1 / mfu).
    s11 = sum(r[1] * r[1] for r in rows)
    s12 = sum(r[1] * r[2] for r in rows)
    s22 = sum(r[2] * r[2] for r in rows)
    b1 = sum(r[1] * y for r, y in zip(rows, ys))
    b2 = sum(r[2] * y for r, y in zip(rows, ys))
    det = s11 * s22 - s12 * s12
    if abs(det) < 1e-30:
        return 0.0
    return max(0.0, (s11 * b2 - s12 * b1) / det)


@cache
def default_overhead() -> float:
    """Fixed seconds per decoder layer per micro-batch, fitted on the series named in throughput.json."""
    consts = throughput_profile()
    series = consts["overhead_fit"]["series"]
    points = tuple(p for p in _published_points() if p.id in series)
    return fit_overhead(points, consts)


def point_mfu(point: _Point, overhead: float, consts: dict[str, Any] | None = None) -> float:
    """The MFU that makes the time model reproduce ``point``'s measured seconds."""
    consts = consts or throughput_profile()
    known, compute, per = _known_seconds(point, consts)
    left = point.seconds_per_optimizer_step - known - per * overhead
    return compute / left if left > 0 else float("nan")


@cache
def reference_points() -> tuple[ReferencePoint, ...]:
    """Every published point with the MFU derived from it (for docs and tests)."""
    consts = throughput_profile()
    c = default_overhead()
    out = []
    for p in _published_points():
        overhead = c if p.stack == "transformers" else 0.0
        out.append(ReferencePoint(id=p.id, gpu=p.gpu.name, method=p.train.method, stack=p.stack,
                                  mfu=point_mfu(p, overhead, consts), source=p.source))
    return tuple(out)


def _generation(gpu: GpuProfile) -> str:
    return gpu.compute_capability


def utilization(gpu: GpuProfile, method: Method, measurements: Path | None = None) -> Utilization:
    """MFU for ``gpu`` and ``method``: measured, else published on this GPU, its generation, or any GPU.

    QLoRA and full fine-tuning fall back to LoRA's figure (``method_fallback`` in throughput.json):
    their GEMMs are the same 16-bit matmuls, and QLoRA's dequantization is modeled separately.
    """
    return _utilization(gpu, method, measurements or measurements_dir())


@cache
def _utilization(gpu: GpuProfile, method: Method, measurements: Path) -> Utilization:
    consts = throughput_profile()
    c = default_overhead()
    fallback = consts["method_fallback"]
    measured = _measured_points(measurements)
    published = [p for p in _published_points() if p.stack == consts["stack"]]
    methods = [method] + ([Method(fallback[method.value])] if method.value in fallback else [])
    for m in methods:
        for basis, pool, match in (
            ("measured", measured, lambda p: p.gpu.name == gpu.name),
            ("published-gpu", published, lambda p: p.gpu.name == gpu.name),
            ("published-generation", published, lambda p: _generation(p.gpu) == _generation(gpu)),
            ("published-any", published, lambda p: True),
        ):
            hits = [p for p in pool if p.train.method is m and match(p)]
            mfus = [point_mfu(p, c, consts) for p in hits]
            mfus = [x for x in mfus if x == x and 0 < x < 1]
            if mfus:
                note = "" if m is method else f" ({m.value} figure used for {method.value})"
                return Utilization(
                    mfu=round(statistics.median(mfus), 4),
                    overhead_s_per_layer=c,
                    basis=basis,
                    sources=tuple(sorted({p.source + note for p in hits})),
                )
    default = consts["default_mfu"]
    return Utilization(mfu=default["value"], overhead_s_per_layer=c, basis="default", sources=(default["source"],))


# --------------------------------------------------------------------------- time


class TimeBreakdown(Frozen):
    """Seconds per micro-batch by part, and the resulting throughput."""

    compute_s: float
    weights_s: float
    dequant_s: float
    overhead_s: float
    optimizer_s: float
    """Per optimizer step (once every ``grad_accum`` micro-batches)."""
    tokens_per_s: float
    mfu: float
    peak_tflops: float


def _optimizer_bytes_per_param(optim: Optim, trainable_bytes: float) -> float:
    """DRAM bytes one optimizer step moves per trainable parameter (read + write)."""
    if optim in (Optim.ADAMW_8BIT, Optim.PAGED_ADAMW_8BIT):
        state = 2 * (1 + 1)  # two uint8 moments, read and written
    elif optim is Optim.SGD:
        state = 0
    elif optim is Optim.ADAFACTOR:
        state = 4  # factored second moment: small
    else:
        state = 2 * (4 + 4)  # two fp32 moments, read and written
    return 3 * trainable_bytes + state  # param read + write, gradient read


@cache
def _trainable(config: ModelConfig, method: Method, targets: tuple[str, ...], rank: int, dora: bool) -> int:
    from planner.model.params import param_counts

    return param_counts(config, TrainSpec(method=method, targets=targets, rank=rank, alpha=2.0 * rank, dora=dora)).trainable


def time_breakdown(
    config: ModelConfig, train: TrainSpec, gpu: GpuProfile, util: Utilization, consts: dict[str, Any] | None = None
) -> TimeBreakdown:
    """Seconds per micro-batch (and per optimizer step) of ``train`` on ``gpu`` at ``util``."""
    consts = consts or throughput_profile()
    f = flops(config, train)
    tokens = train.micro_batch * train.seq_len
    peak = peak_tflops(gpu, train.dtype)
    compute = (f.per_token * tokens + f.per_microbatch) / (peak * TFLOP * util.mfu)
    bandwidth = gpu.memory_bandwidth_gbps * GB * consts["memory_bandwidth_efficiency"]["value"]
    passes = 3 if train.grad_ckpt else 2
    layers_mm, head_mm = _matmul_params(config)
    c = train.dtype.bytes_per_element
    weights = passes * (layers_mm + head_mm) * c / bandwidth
    dequant = 0.0
    if train.method is Method.QLORA:
        # Read the packed NF4 weight (+ constants), write the 16-bit copy the matmul then reads.
        dequant = passes * layers_mm * (nf4_bytes_per_param(train.double_quant) + c) / bandwidth
    overhead = util.overhead_s_per_layer * config.num_hidden_layers
    trainable = _trainable(config, train.method, train.targets, train.rank, train.dora)
    train_bytes = 4.0 if train.method is not Method.FULL or train.fp32_master else c
    optimizer = trainable * _optimizer_bytes_per_param(train.optim, train_bytes) / bandwidth
    per_micro = max(compute, weights) + dequant + overhead
    seconds = per_micro + optimizer / train.grad_accum
    return TimeBreakdown(
        compute_s=compute,
        weights_s=weights,
        dequant_s=dequant,
        overhead_s=overhead,
        optimizer_s=optimizer,
        tokens_per_s=tokens / seconds,
        mfu=util.mfu,
        peak_tflops=peak,
    )


def tokens_per_second(
    model: ModelProfile | str, train: TrainSpec, gpu: GpuProfile | str, util: Utilization | None = None
) -> float:
    """Training tokens per second of ``train`` on ``gpu`` (single GPU)."""
    profile = load_model(model) if isinstance(model, str) else model
    gpu_profile = load_gpu(gpu) if isinstance(gpu, str) else gpu
    util = util or utilization(gpu_profile, train.method)
    return time_breakdown(profile.config, train, gpu_profile, util).tokens_per_s
