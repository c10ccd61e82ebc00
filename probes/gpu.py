"""The real probe: build the model on the GPU with random weights and run training steps.

Memory is read from ``torch.cuda`` (allocated / reserved, peaks reset after load) and NVML
(process memory: the CUDA context and paged optimizer state included). Out of memory is a result:
the failing phase is recorded, everything is freed and the session can try again (smaller batch).
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from planner.errors import PlannerError
from planner.specs import Method, TrainSpec
from probes import build, detect

WARMUP_STEPS = 1


class ProbeEvents(Protocol):
    """Progress callbacks (rendered by ``planner.cli.render.probe``; no-ops by default)."""

    def phase(self, name: str) -> None: ...

    def step(self, done: int, total: int, seconds: float | None) -> None: ...


class NullEvents:
    def phase(self, name: str) -> None:
        return None

    def step(self, done: int, total: int, seconds: float | None) -> None:
        return None


def is_oom(err: BaseException) -> bool:
    """True for CUDA out-of-memory errors (torch's own type, or a RuntimeError from an extension)."""
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def free_cuda_memory() -> None:
    """Collect garbage and return cached blocks to the driver."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


@dataclass
class StepRun:
    """One micro-batch setting: warm-up plus measured steps (bytes, seconds)."""

    micro_batch: int
    fits: bool
    failed_phase: str | None = None
    error: str | None = None
    peak_allocated: float | None = None
    peak_reserved: float | None = None
    device_peak: float | None = None
    after_first_step: float | None = None
    step_seconds: list[float] = field(default_factory=list)
    tokens_per_s: float | None = None
    interrupted: bool = False


def bnb_config(spec: TrainSpec) -> Any:
    """The ``BitsAndBytesConfig`` QLoRA users pass (NF4 4-bit or LLM.int8 8-bit)."""
    from transformers import BitsAndBytesConfig

    dtype = build.compute_dtype(spec)
    if spec.quant_bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=spec.double_quant, bnb_4bit_compute_dtype=dtype)


def create_quantized_model(raw: dict[str, Any], spec: TrainSpec, device: torch.device) -> nn.Module:
    """QLoRA model as ``from_pretrained(quantization_config=BitsAndBytesConfig(...))`` builds it, with random weights.

    The architecture is created on the meta device, transformers' ``replace_with_bnb_linear``
    swaps in ``bnb.nn.Linear4bit`` / ``Linear8bitLt`` (same skip list as its quantizer), then each
    quantized weight is made from a random tensor on the GPU one layer at a time (an 8B model never
    needs its 16 GB dense copy), and everything else is allocated on the GPU and initialized.
    """
    import bitsandbytes as bnb
    from transformers import AutoModelForCausalLM
    from transformers.integrations.bitsandbytes import replace_with_bnb_linear
    from transformers.quantizers.base import HfQuantizer

    dtype = build.compute_dtype(spec)
    config = build.hf_config(raw, spec, trace=False)
    with build._quiet(), torch.device("meta"):
        model = AutoModelForCausalLM.from_config(
            config, dtype=dtype, attn_implementation=build.attn_implementation(spec, trace=False, config=config))
    skip = HfQuantizer.get_modules_to_not_convert(model, None, getattr(model, "_keep_in_fp32_modules", None))
    with build._quiet():
        replace_with_bnb_linear(model, modules_to_not_convert=skip, quantization_config=bnb_config(spec))
    std = getattr(config, "initializer_range", 0.02) or 0.02
    for module in model.modules():
        if not isinstance(module, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)):
            continue
        dense = torch.empty(module.out_features, module.in_features, dtype=dtype, device=device).normal_(0.0, std)
        if isinstance(module, bnb.nn.Linear4bit):
            weight = bnb.nn.Params4bit(dense, requires_grad=False, compress_statistics=spec.double_quant,
                                       quant_type="nf4", quant_storage=torch.uint8, module=module)
        else:
            weight = bnb.nn.Int8Params(dense, requires_grad=False, has_fp16_weights=False)
        module.weight = weight.to(device)
        del dense, weight
        if module.bias is not None:
            module.bias = nn.Parameter(torch.zeros(module.out_features, dtype=dtype, device=device),
                                       requires_grad=False)
        module._is_hf_initialized = True
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is not None and p.device.type == "meta":
                module._parameters[name] = nn.Parameter(torch.empty_like(p, device=device),
                                                        requires_grad=p.requires_grad)
        for name, b in list(module._buffers.items()):
            if b is not None and b.device.type == "meta":
                module._buffers[name] = torch.empty_like(b, device=device)
    with build._quiet():
        model.initialize_weights()
    if spec.quant_bits == 8:
        model.is_loaded_in_8bit = True
    else:
        model.is_loaded_in_4bit = True
    return model


class GpuSession:
    """A model and optimizer on GPU ``index``, reused across micro-batch sizes."""

    def __init__(self, raw: dict[str, Any], spec: TrainSpec, events: ProbeEvents | None = None, index: int = 0) -> None:
        self.raw = raw
        self.spec = spec
        self.events = events or NullEvents()
        self.index = index
        self.device = torch.device("cuda", index)
        # What everybody else held before this process created its CUDA context.
        self.baseline_device_used = detect.baseline_device_used_bytes(index)
        self.model: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.phase = "load"
        self.after_load: float | None = None
        self.after_optimizer_init: float | None = None
        self.context_bytes: float | None = None
        self.params_total = 0
        self.params_trainable = 0
        self.load_error: str | None = None
        self.load_seconds: float | None = None

    # ------------------------------------------------------------------ memory readings

    def process_used(self) -> float | None:
        """This process's device memory per NVML (pid match, else device used minus the baseline)."""
        used = detect.nvml_process_used_bytes(self.index)
        if used is not None:
            return used
        device = detect.nvml_device_used_bytes(self.index)
        if device is None or self.baseline_device_used is None:
            return None
        return device - self.baseline_device_used

    def _set_phase(self, name: str) -> None:
        self.phase = name
        self.events.phase(name)

    # ------------------------------------------------------------------ load

    def load(self) -> bool:
        """Build, prepare and wrap the model and create the optimizer; False on out of memory."""
        from probes.optim import build_optimizer

        started = time.perf_counter()
        try:
            torch.cuda.set_device(self.device)
            self._set_phase("load")
            self.model = self._build()
            torch.cuda.synchronize()
            free_cuda_memory()
            self.after_load = float(torch.cuda.memory_allocated(self.device))
            used = self.process_used()
            if used is not None:
                self.context_bytes = used - float(torch.cuda.memory_reserved(self.device))
            self._count_params()
            self._set_phase("optimizer_init")
            self.optimizer = build_optimizer(self.model, self.spec.optim)
            torch.cuda.synchronize()
            self.after_optimizer_init = float(torch.cuda.memory_allocated(self.device))
        except Exception as err:  # noqa: BLE001 - OOM is a result; anything else is re-raised
            if not is_oom(err):
                if isinstance(err, (ImportError, ValueError)) and "flash" in str(err).lower():
                    raise PlannerError(f"flash attention is not available: {str(err).splitlines()[0]}") from None
                raise
            self.load_error = _one_line(err)
        if self.load_error is not None:
            self.close()
            return False
        self.load_seconds = time.perf_counter() - started
        return True

    def _build(self) -> nn.Module:
        if self.spec.method is Method.QLORA:
            model = create_quantized_model(self.raw, self.spec, self.device)
        else:
            model = build.create_model(self.raw, self.spec, self.device, trace=False)
        return build.prepare(model, self.raw, self.spec)

    def _count_params(self) -> None:
        import bitsandbytes as bnb

        packed = {id(m.weight): m.in_features * m.out_features
                  for m in self.model.modules() if isinstance(m, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt))}
        self.params_total, self.params_trainable = build.count_params(self.model, packed, self.spec)

    # ------------------------------------------------------------------ steps

    def run(self, micro_batch: int, steps: int) -> StepRun:
        """Warm-up plus ``steps`` optimizer steps at ``micro_batch``; OOM gives ``fits=False``."""
        spec = self.spec.model_copy(update={"micro_batch": micro_batch})
        result = StepRun(micro_batch=micro_batch, fits=False)
        total = WARMUP_STEPS + max(2, steps)
        batch = None
        try:
            if self.model is None or self.optimizer is None:
                raise RuntimeError("GpuSession.run before a successful load()")
            free_cuda_memory()
            torch.cuda.reset_peak_memory_stats(self.device)
            device_peak = self.process_used()
            batch = build.random_batch(build.vocab_size(self.model), spec, self.device)
            self.events.step(0, total, None)
            for i in range(total):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                build.train_step(self.model, self.optimizer, batch, spec, self.device.type, self._on_phase)
                torch.cuda.synchronize()
                seconds = time.perf_counter() - t0
                if i >= WARMUP_STEPS:
                    result.step_seconds.append(seconds)
                if i == 0:
                    result.after_first_step = float(torch.cuda.memory_allocated(self.device))
                used = self.process_used()
                if used is not None:
                    device_peak = max(device_peak or 0.0, used)
                self.events.step(i + 1, total, seconds)
            result.fits = True
            result.peak_allocated = float(torch.cuda.max_memory_allocated(self.device))
            result.peak_reserved = float(torch.cuda.max_memory_reserved(self.device))
            result.device_peak = device_peak
            tokens = spec.micro_batch * spec.seq_len * build.micro_batches_per_step(spec)
            if result.step_seconds:
                result.tokens_per_s = tokens / (sum(result.step_seconds) / len(result.step_seconds))
        except KeyboardInterrupt:
            result.interrupted = True
            result.failed_phase = self.phase
        except Exception as err:  # noqa: BLE001 - OOM is a result; anything else is re-raised
            if not is_oom(err):
                raise
            result.failed_phase = self.phase
            result.error = _one_line(err)
            result.peak_allocated = float(torch.cuda.max_memory_allocated(self.device))
            result.peak_reserved = float(torch.cuda.max_memory_reserved(self.device))
        finally:
            del batch
            if self.optimizer is not None:
                self.optimizer.zero_grad(set_to_none=True)
            free_cuda_memory()
        return result

    def _on_phase(self, name: str) -> None:
        self._set_phase(name)

    def close(self) -> None:
        """Drop the model and optimizer and free the GPU memory."""
        self.model = None
        self.optimizer = None
        free_cuda_memory()


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]
