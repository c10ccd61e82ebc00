"""Build the model and run one training step the way transformers' Trainer (+ accelerate, PEFT) does.

Shared by the CPU trace (fake tensors, NF4 and bitsandbytes optimizers emulated) and the GPU
probe (real bitsandbytes). The modeled run (transformers 5.x, PEFT 0.2x, accelerate 1.x):

* ``AutoModelForCausalLM.from_config`` with random weights in ``--dtype`` (fp32 for full
  fine-tuning with ``--fp32-master``), ``attn_implementation`` sdpa / flash_attention_2 / eager,
  ``config.use_cache = False`` (Trainer sets ``model.config.use_cache = args.use_cache``, False).
* QLoRA: linears quantized to NF4 (``bnb_4bit_use_double_quant=--double-quant``, compute dtype
  ``--dtype``), then ``prepare_model_for_kbit_training``, which freezes everything and casts every
  non-4-bit parameter (embeddings, lm_head, norms, biases) to fp32.
* LoRA / QLoRA: ``get_peft_model(LoraConfig(r, lora_alpha, lora_dropout, target_modules, use_dora,
  task_type="CAUSAL_LM"))``; PEFT keeps adapter weights in fp32 (``autocast_adapter_dtype=True``).
* Gradient checkpointing: ``gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs())``: the
  installed transformers' default (non-reentrant on 5.x, reentrant on 4.x, with ``enable_input_require_grads``
  as TRL and PEFT's kbit prepare call it).
* Step: forward under ``torch.autocast(dtype=--dtype)`` with the outputs converted to fp32
  (accelerate's ``convert_outputs_to_fp32`` for ``bf16=True``: a transient fp32 copy of the
  logits), ``labels=input_ids``, the outputs dropped before ``loss.backward()`` (Trainer's
  ``compute_loss`` returns only the loss), ``clip_grad_norm_(1.0)``, ``optimizer.step()``,
  ``zero_grad(set_to_none=True)``. With ``--grad-accum`` > 1 two micro-batches run per
  optimizer step (gradients live through the second forward; more micro-batches repeat it).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from packaging.version import Version
from torch import nn

from planner.catalog import normalize_config
from planner.errors import PlannerError
from planner.model.targets import lora_dropout, peft_target_modules
from planner.specs import Attn, DType, Method, TrainSpec


def gc_kwargs() -> dict[str, bool]:
    """The ``torch.utils.checkpoint`` kwargs the installed stack runs by default (stack ``checkpointing``):
    non-reentrant on transformers 5 (``modeling_utils.py`` ``gradient_checkpointing_enable``); reentrant on 4.x
    (v4.44.2: ``gradient_checkpointing_kwargs=None`` -> ``{"use_reentrant": True}``; PEFT's kbit prepare passes
    ``{}``, and torch v2.13 ``checkpoint`` then defaults to ``use_reentrant=True``)."""
    return {"use_reentrant": transformers_major() < 5}


MAX_GRAD_NORM = 1.0
"""``TrainingArguments.max_grad_norm`` default."""

_TORCH_DTYPE = {DType.BF16: torch.bfloat16, DType.FP16: torch.float16, DType.FP32: torch.float32}


def compute_dtype(spec: TrainSpec) -> torch.dtype:
    """The dtype matmuls run in (``--dtype``)."""
    return _TORCH_DTYPE[spec.dtype]


def load_dtype(spec: TrainSpec) -> torch.dtype:
    """The dtype weights are created in."""
    if spec.method is not Method.QLORA and spec.fp32_master:
        return torch.float32  # fp32 weights, bf16 autocast (Trainer bf16=True on an fp32 model)
    return compute_dtype(spec)


def autocast_dtype(spec: TrainSpec) -> torch.dtype | None:
    """Trainer's ``bf16=True`` / ``fp16=True`` autocast dtype, or None for fp32 training."""
    dtype = compute_dtype(spec)
    return None if dtype is torch.float32 else dtype


def attn_implementation(spec: TrainSpec, *, trace: bool, config: Any = None) -> str:
    """transformers ``attn_implementation``; the trace accounts flash as sdpa (same saved tensors).

    A model class without sdpa support (Gemma 2: logit soft-capping) gets eager, which is what
    transformers picks when no implementation is requested.
    """
    if spec.attn is Attn.EAGER:
        return "eager"
    if spec.attn is Attn.FLASH and not trace:
        return "flash_attention_2"
    if config is not None and not supports_sdpa(config):
        return "eager"
    return "sdpa"


def supports_sdpa(config: Any) -> bool:
    """Whether transformers' causal-LM class for ``config`` supports sdpa."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    try:
        cls = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    except KeyError:
        return True
    return bool(getattr(cls, "_supports_sdpa", True))


def hf_config(raw: dict[str, Any], spec: TrainSpec, *, trace: bool) -> Any:
    """``AutoConfig.for_model(**raw)`` with Trainer's ``use_cache=False``."""
    from transformers import AutoConfig

    raw = {k: v for k, v in raw.items() if k not in ("architectures", "auto_map", "quantization_config")}
    config = AutoConfig.for_model(**raw)
    config.use_cache = False
    return config


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            hf_logging.set_verbosity(level)


def create_model(raw: dict[str, Any], spec: TrainSpec, device: torch.device | str, *, trace: bool) -> nn.Module:
    """The bare transformers model with random weights on ``device``."""
    from transformers import AutoModelForCausalLM

    config = hf_config(raw, spec, trace=trace)
    with _quiet(), torch.device(device):
        kwargs = {dtype_kwarg(): load_dtype(spec),
                  "attn_implementation": attn_implementation(spec, trace=trace, config=config)}
        return AutoModelForCausalLM.from_config(config, **kwargs)


def _transformers_version() -> Version:
    import transformers

    return Version(transformers.__version__)


def transformers_major() -> int:
    """The installed transformers' major version (the trace runs on 4.x and 5.x)."""
    return _transformers_version().major


def dtype_kwarg() -> str:
    """``from_pretrained``/``from_config``'s dtype keyword: ``torch_dtype`` before transformers 4.56, ``dtype``
    after (profiles/stacks/snippets.json has the same boundary for the recommend snippets)."""
    return "dtype" if _transformers_version() >= Version("4.56") else "torch_dtype"


def lora_config(raw: dict[str, Any], spec: TrainSpec) -> Any:
    """The ``peft.LoraConfig`` for ``spec``; targets resolved like the estimator's."""
    from peft import LoraConfig

    config = normalize_config(raw)
    return LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        lora_dropout=lora_dropout(config, spec.targets, spec.lora_dropout),
        target_modules=peft_target_modules(config, spec.targets),
        use_dora=spec.dora,
        bias="none",
        task_type="CAUSAL_LM",
    )


def prepare(model: nn.Module, raw: dict[str, Any], spec: TrainSpec) -> nn.Module:
    """kbit preparation, PEFT wrapping and gradient checkpointing, in TRL's order; returns the trained model."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    with _quiet():
        kbit = spec.method is Method.QLORA and spec.kbit_prepare
        if kbit:
            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=spec.grad_ckpt, gradient_checkpointing_kwargs=gc_kwargs()
            )
        if spec.method in (Method.LORA, Method.QLORA):
            try:
                model = get_peft_model(model, lora_config(raw, spec))
            except ValueError as err:
                hint = ""
                if "ParamWrapper" in str(err):
                    hint = (" (PEFT adapts the MoE expert tensors as parameters, which cannot take dropout: use "
                            "--lora-dropout 0, or --targets attn)")
                raise PlannerError(f"PEFT could not apply LoRA: {str(err).splitlines()[0]}{hint}") from None
        if spec.grad_ckpt and not kbit:
            kwargs = gc_kwargs()
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
            if kwargs["use_reentrant"] and spec.method is not Method.FULL:
                # Reentrant checkpointing needs a layer input that requires grad, or the adapters inside get no
                # gradient: TRL's SFTTrainer (v0.11.4 _prepare_peft_model) and PEFT's kbit prepare call this.
                model.enable_input_require_grads()
        model.train()
    return model


def random_batch(vocab_size: int, spec: TrainSpec, device: torch.device | str) -> torch.Tensor:
    """Token ids of exactly ``micro_batch x seq_len``."""
    return torch.randint(0, vocab_size, (spec.micro_batch, spec.seq_len), device=device)


def _to_fp32(outputs: Any) -> Any:
    """accelerate's ``convert_outputs_to_fp32``: every bf16/fp16 tensor in the outputs becomes fp32."""
    from accelerate.utils import convert_to_fp32

    return convert_to_fp32(outputs)


PhaseHook = Callable[[str], None]


LossFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]
"""A trainer's loss for one micro-batch of token ids (e.g. :func:`probes.trl_step.trl_loss`)."""


def forward_backward(model: nn.Module, input_ids: torch.Tensor, spec: TrainSpec, device_type: str,
                     on_phase: PhaseHook, loss_fn: LossFn | None = None) -> None:
    """One micro-batch: autocast forward, fp32 outputs, drop them, backward.

    Without ``loss_fn`` the loss is the model's own (``Trainer.compute_loss``: ``model(..., labels=...)``).
    """
    on_phase("forward")
    dtype = autocast_dtype(spec)
    ctx = torch.autocast(device_type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    if loss_fn is not None:
        with ctx:
            loss = loss_fn(model, input_ids)
        outputs = None
    else:
        with ctx:
            outputs = model(input_ids=input_ids, labels=input_ids)
        if dtype is not None:
            outputs = _to_fp32(outputs)
        loss = outputs["loss"]
    if spec.grad_accum > 1:
        loss = loss / spec.grad_accum
    del outputs
    on_phase("backward")
    loss.backward()
    del loss


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, on_phase: PhaseHook) -> None:
    """Clip, step, zero the gradients (``set_to_none``)."""
    on_phase("optimizer")
    params = [p for p in model.parameters() if p.requires_grad]
    torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def micro_batches_per_step(spec: TrainSpec) -> int:
    """Micro-batches run per optimizer step (2 stand for any ``grad_accum`` > 1)."""
    return min(spec.grad_accum, 2)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: torch.Tensor, spec: TrainSpec,
               device_type: str, on_phase: PhaseHook, loss_fn: LossFn | None = None) -> None:
    """One optimizer step (one or two micro-batches)."""
    for _ in range(micro_batches_per_step(spec)):
        forward_backward(model, batch, spec, device_type, on_phase, loss_fn)
    optimizer_step(model, optimizer, on_phase)


def count_params(model: nn.Module, packed: dict[int, int], spec: TrainSpec) -> tuple[int, int]:
    """(base-model parameters, trainable parameters), a 4-bit weight counted at its unpacked size.

    Like the estimator, ``total`` excludes LoRA adapters (everything trainable unless full fine-tuning).
    """
    total = trainable = 0
    for p in model.parameters():
        n = packed.get(id(p), p.numel())
        total += n
        trainable += n if p.requires_grad else 0
    return (total if spec.method is Method.FULL else total - trainable), trainable


def vocab_size(model: nn.Module) -> int:
    return int(model.get_input_embeddings().weight.shape[0])
