"""TRL ``SFTTrainer``'s training step for the trace: its model preparation and its ``compute_loss``, run unmodified.

What ``SFTTrainer.__init__`` does to a model beyond the plain ``Trainer`` (trl 1.16.0
``trl/trainer/sft_trainer.py`` ``SFTTrainer.__init__``), applied by :func:`prepare_trl` after
:func:`probes.build.prepare` (which has already skipped ``prepare_model_for_kbit_training``, as TRL does):

- a quantized model's trainable parameters are cast to bf16 (``param.data = param.data.to(torch.bfloat16)``,
  DoRA magnitudes excepted);
- with PEFT and gradient checkpointing, ``model.enable_input_require_grads()``;
- ``add_fused_lm_head(base_model, outputs=("log_probs", "entropy", "is_top1"))`` (``trl/trainer/utils.py``):
  the forward called with ``fused_lm_head=True`` returns per-token log-probabilities computed in
  ``[4096, 32768]`` tiles (``trl/kernels/chunked_logprob.py`` ``ChunkedLogProbFunction``), never the logits.

:func:`trl_loss` calls ``SFTTrainer.compute_loss`` itself on a stand-in trainer (the attributes that method
reads; metrics gathered to a real scalar, since fake tensors have no values). :func:`cuda_fused_head` makes
the kernel module take its CUDA path on the fake CPU device: the Triton folds and the fp32-out ``addmm``
write in place into buffers TRL allocates, so they are replaced by in-place no-ops (their memory is exact;
only values are lost, and fake tensors have none). Without it the CPU fallback would allocate fp32 copies of
every tile that CUDA never makes. The head itself keeps its non-Triton token selection (``reshape`` of the
shifted hidden states instead of ``hidden_states[mask]``, whose output shape fake tensors cannot know): with
every label valid both copy the same ``N x hidden`` bf16 rows and ``N`` int64 labels.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any
from unittest import mock

import torch
from torch import nn

from planner.errors import PlannerError
from planner.specs import DType, Method, TrainSpec

TRL_OUTPUTS = ("log_probs", "entropy", "is_top1")
"""The per-token outputs ``SFTTrainer`` asks the fused head for (loss, entropy and accuracy metrics)."""


def _require_trl() -> Any:
    try:
        import trl
    except ImportError:  # pragma: no cover - the probe extra installs it
        raise PlannerError("the TRL trace needs trl (pip install -c constraints.txt -e '.[probe]')") from None
    return trl


LEGACY_BELOW = "0.15"
"""TRL releases before this have no ``SFTTrainer.compute_loss`` (``Trainer``'s runs) and prepare a 4-bit model
with ``prepare_model_for_kbit_training`` then ``peft_module_casting_to_bf16``; the trace runs them too."""
FUSED_FROM = "1.13"
"""The first TRL release with the fused LM head this module traces."""


def is_legacy_trl() -> bool:
    """Whether the installed TRL is one of the pre-0.15 releases (:data:`LEGACY_BELOW`).

    Raises:
        PlannerError: a TRL release between those and the fused head (0.15-1.12), whose own loss paths
            (accuracy metric, 256-token chunks) the trace does not run.
    """
    from packaging.version import Version

    version = Version(_require_trl().__version__)
    if version < Version(LEGACY_BELOW):
        return True
    if version < Version(FUSED_FROM):
        raise PlannerError(f"the TRL trace runs trl < {LEGACY_BELOW} and >= {FUSED_FROM}; trl {version} is not traced")
    return False


def prepare_trl(model: nn.Module, spec: TrainSpec) -> nn.Module:
    """What ``SFTTrainer.__init__`` does to an already PEFT-wrapped (or full) model (see the module docstring).

    TRL < 0.15 (v0.11.4 ``SFTTrainer.__init__``): :func:`probes.build.prepare` has run
    ``prepare_model_for_kbit_training`` and ``get_peft_model`` as it does; then, for a 4-bit model under
    ``args.bf16``, its own ``trl.trainer.utils.peft_module_casting_to_bf16`` (run unmodified): norms fp32,
    embeddings/lm_head back to bf16 (v0.8: the LoRA layers too).
    """
    if is_legacy_trl():
        if spec.method is Method.QLORA and spec.dtype is DType.BF16:
            from trl.trainer.utils import peft_module_casting_to_bf16

            peft_module_casting_to_bf16(model)
        return model
    from trl.trainer.utils import add_fused_lm_head

    peft = spec.method in (Method.LORA, Method.QLORA)
    if spec.method is Method.QLORA:
        for name, param in model.named_parameters():
            if param.requires_grad and "lora_magnitude_vector" not in name:
                param.data = param.data.to(torch.bfloat16)
    if peft and spec.grad_ckpt:
        model.enable_input_require_grads()
    add_fused_lm_head(model.get_base_model() if peft else model, outputs=TRL_OUTPUTS)
    return model


class _Gathered:
    """What ``accelerator.gather_for_metrics`` returns for a logged metric: a value the metrics code can read
    (``.sum()``, ``/``, ``> 0``, ``.item()``), since a fake tensor has none. Metrics hold no step memory."""

    def sum(self) -> _Gathered:
        return self

    mean = sum

    def __truediv__(self, other: object) -> _Gathered:
        return self

    def __gt__(self, other: object) -> bool:
        return True

    def __floordiv__(self, other: object) -> int:
        return 1

    def item(self) -> float:
        return 1.0


def _stand_in(model: nn.Module) -> Any:
    """The attributes ``SFTTrainer.compute_loss`` reads, as ``SFTTrainer.__init__`` sets them by default."""
    accelerator = SimpleNamespace(parallelism_config=None, num_processes=1,
                                  gather_for_metrics=lambda tensor: _Gathered())
    args = SimpleNamespace(loss_type="nll", average_tokens_across_devices=True)
    return SimpleNamespace(model=model, accelerator=accelerator, args=args, compute_loss_func=None,
                           label_smoother=None, aux_loss_enabled=False, _metrics=defaultdict(lambda: defaultdict(list)),
                           _total_train_tokens=0, _tp_size=1)


def trl_loss(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """``SFTTrainer.compute_loss`` on one unpadded micro-batch (labels = input ids, as the collator makes them).

    The batch carries ``position_ids`` rather than an all-ones ``attention_mask``: on real data transformers
    drops an all-ones mask (SDPA's causal path), which the fake tensors' unknown values would not allow.
    """
    from trl import SFTTrainer

    b, s = input_ids.shape
    inputs = {"input_ids": input_ids, "labels": input_ids,
              "position_ids": torch.arange(s, device=input_ids.device).expand(b, s)}
    return SFTTrainer.compute_loss(_stand_in(model), model, inputs)


class _NoOpKernel:
    """``kernel[grid](...)`` that writes nothing: the Triton folds update TRL's buffers in place."""

    def __getitem__(self, grid: Any) -> Any:
        return lambda *args, **kwargs: None


@contextmanager
def cuda_fused_head() -> Iterator[None]:
    """``trl.kernels.chunked_logprob`` on its CUDA path (Triton folds, fp32-out ``addmm``) for the fake CPU step."""
    _require_trl()
    from trl.kernels import chunked_logprob as kernels
    from trl.trainer import utils as trl_utils

    cdiv = SimpleNamespace(cdiv=lambda a, b: -(-a // b))
    with mock.patch.object(kernels, "_use_triton", lambda device: True), \
            mock.patch.object(trl_utils, "_use_triton", lambda device: False), \
            mock.patch.object(kernels, "_forward_kernel", _NoOpKernel(), create=True), \
            mock.patch.object(kernels, "_backward_kernel", _NoOpKernel(), create=True), \
            mock.patch.object(kernels, "_addmm_fp32", lambda acc, a, b: None), \
            mock.patch.object(kernels, "triton", cdiv, create=True):
        yield
