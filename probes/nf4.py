"""NF4 emulation for the CPU trace: bitsandbytes' 4-bit storage and dataflow on fake tensors.

bitsandbytes quantizes with real kernels that cannot run on fake tensors, so the trace replaces
every ``nn.Linear`` that ``transformers``' bnb quantizer would convert (``replace_with_bnb_linear``
with ``get_modules_to_not_convert``: everything but the output embedding, tied weights and
``_keep_in_fp32_modules``) by :class:`EmulatedLinear4bit`. It subclasses ``bnb.nn.Linear4bit``
so PEFT wraps it with its bnb LoRA layer, exactly as on a GPU, and holds what a quantized
``Params4bit`` holds (``bitsandbytes.functional.quantize_4bit``):

* the packed weight: ``uint8`` of ``ceil(n / 2)`` bytes for ``n = out x in`` weights;
* without double quantization: ``absmax`` fp32, one per ``blocksize`` (64) weights;
* with double quantization: ``absmax`` uint8 per 64-block, ``state2.absmax`` fp32 per 256 absmax
  values, the 256-entry fp32 dynamic code (one tensor shared by every layer, cached by
  ``quantize_blockwise``) and a 0-d fp32 ``offset``;
* the 16-entry fp32 NF4 code per layer (``get_4bit_type``).

Its forward mirrors ``Linear4bit.forward`` + ``matmul_4bit`` + ``MatMul4Bit`` of bitsandbytes
0.50: cast the input to the compute dtype, dequantize (nested absmax to fp32, then the weight to a
temporary of the compute dtype), ``F.linear``, and save for backward only the packed weight; the
backward dequantizes again and multiplies. The output is cast back to the input dtype. The CUDA
``gemm_4bit`` op dequantizes like this for more than 1536 tokens per call and for most large
weights on sm90; for small calls on some GPUs it runs a fused kernel without the temporary, so
the emulation can over-count by at most one dequantized weight.
"""

from __future__ import annotations

import math
from typing import Any

import bitsandbytes as bnb
import torch
import torch.nn.functional as F
from torch import nn

from planner.catalog import runtime_constants

DYNAMIC_CODE_SIZE = 256
NF4_CODE_SIZE = 16


def quant_constants() -> tuple[int, int]:
    """(NF4 block size, nested block size): ``quantize_4bit``'s weights per absmax and ``quantize_blockwise``'s
    absmax values per fp32 absmax, from ``profiles/runtime.json`` (one source with the estimator)."""
    nf4 = runtime_constants()["nf4"]
    return int(nf4["blocksize"]), int(nf4["double_quant_blocksize"])


class _QuantState:
    """The tensors of a bitsandbytes ``QuantState`` (shapes and dtypes only matter here)."""

    def __init__(self, weight_numel: int, double_quant: bool, device: torch.device, shared: dict[str, Any]) -> None:
        block, nested_block = quant_constants()
        blocks = math.ceil(weight_numel / block)
        self.blocksize = block
        self.nested = double_quant
        self.code = torch.empty(NF4_CODE_SIZE, dtype=torch.float32, device=device)
        if double_quant:
            self.absmax = torch.empty(blocks, dtype=torch.uint8, device=device)
            self.nested_absmax = torch.empty(math.ceil(blocks / nested_block), dtype=torch.float32, device=device)
            if "dynamic_code" not in shared:
                shared["dynamic_code"] = torch.empty(DYNAMIC_CODE_SIZE, dtype=torch.float32, device=device)
            self.nested_code = shared["dynamic_code"]
            self.offset = torch.empty((), dtype=torch.float32, device=device)
        else:
            self.absmax = torch.empty(blocks, dtype=torch.float32, device=device)



def _gemm_4bit(A: torch.Tensor, state: _QuantState, shape: torch.Size, bias: torch.Tensor | None) -> torch.Tensor:  # noqa: N803
    """``_dequant_linear_fallback`` of the CUDA ``gemm_4bit`` op: nested absmax, dense temporary, ``F.linear``."""
    if state.nested:
        absmax_dq = torch.empty(state.absmax.shape, dtype=torch.float32, device=A.device)
        absmax = absmax_dq + state.offset  # noqa: F841 - alive during the matmul, as in bitsandbytes
    weight = torch.empty(shape, dtype=A.dtype, device=A.device)
    return F.linear(A, weight, bias)


def _dequantize_4bit(state: _QuantState, shape: torch.Size, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``bitsandbytes.functional.dequantize_4bit``: fp32 absmax (in place + offset), then the dense weight."""
    if state.nested:
        absmax = torch.empty(state.absmax.shape, dtype=torch.float32, device=device)
        absmax += state.offset
    return torch.empty(shape, dtype=dtype, device=device)


class _MatMul4Bit(torch.autograd.Function):
    """``bitsandbytes.autograd._functions.MatMul4Bit``: saves only the packed weight."""

    @staticmethod
    def forward(ctx, A, packed, bias, state, shape):  # noqa: ANN001, N803
        output = _gemm_4bit(A, state, shape, bias)
        ctx.state, ctx.shape, ctx.weight_dtype = state, shape, A.dtype
        ctx.dtype_bias = None if bias is None else bias.dtype
        ctx.tensors = (None, packed) if any(ctx.needs_input_grad[:2]) else (None, None)
        return output

    @staticmethod
    def backward(ctx, grad_output):  # noqa: ANN001
        req_grad_a, _, req_grad_bias, _, _ = ctx.needs_input_grad
        _, packed = ctx.tensors
        grad_a = grad_bias = None
        if req_grad_bias:
            grad_bias = grad_output.sum(0, dtype=ctx.dtype_bias)
        if req_grad_a:
            weight = _dequantize_4bit(ctx.state, ctx.shape, ctx.weight_dtype, packed.device)
            grad_a = torch.matmul(grad_output, weight.to(grad_output.dtype))
        return grad_a, None, grad_bias, None, None


class EmulatedLinear4bit(bnb.nn.Linear4bit):
    """A ``bnb.nn.Linear4bit`` whose storage and dataflow are emulated (see module docstring)."""

    def __init__(  # noqa: PLR0913 - mirrors Linear4bit
        self,
        in_features: int,
        out_features: int,
        bias: bool,
        compute_dtype: torch.dtype,
        double_quant: bool,
        device: torch.device,
        shared: dict[str, Any],
        quant_type: str = "nf4",
    ) -> None:
        nn.Module.__init__(self)  # skip Linear4bit/Linear init: no dense weight is ever allocated
        self.in_features = in_features
        self.out_features = out_features
        n = in_features * out_features
        weight = nn.Parameter(torch.empty(((n + 1) // 2, 1), dtype=torch.uint8, device=device), requires_grad=False)
        weight.compress_statistics = double_quant
        weight.quant_type = quant_type
        weight.quant_storage = torch.uint8
        self.weight = weight
        self.emulated_state = _QuantState(n, double_quant, device, shared)
        self.bias = (
            nn.Parameter(torch.empty(out_features, dtype=compute_dtype, device=device), requires_grad=False)
            if bias
            else None
        )
        self.compute_dtype = compute_dtype
        self.compute_type_is_set = True
        self.quant_state = None
        self.quant_storage = torch.uint8
        self.support_avx512bf16_for_cpu = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inp_dtype = x.dtype
        x = x.to(self.compute_dtype)
        bias = self.bias
        if bias is not None:
            if bias.dtype != x.dtype:
                bias.data = bias.data.to(x.dtype)
            bias = bias.to(self.compute_dtype)
        shape = torch.Size((self.out_features, self.in_features))
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or (bias is not None and bias.requires_grad))
        if needs_grad:
            out = _MatMul4Bit.apply(x, self.weight, bias, self.emulated_state, shape)
        else:
            out = _gemm_4bit(x, self.emulated_state, shape, bias)
        return out.to(inp_dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, NF4 emulated"


def quantizable_linears(model: nn.Module) -> list[str]:
    """Names of the modules transformers' bnb 4-bit quantizer would replace in ``model``."""
    from transformers.pytorch_utils import Conv1D

    from probes.build import transformers_major

    if transformers_major() < 5:
        return _quantizable_linears_v4(model)
    from transformers.quantizers.base import HfQuantizer
    from transformers.quantizers.quantizers_utils import should_convert_module

    skip = HfQuantizer.get_modules_to_not_convert(model, None, getattr(model, "_keep_in_fp32_modules", None))
    return [
        name
        for name, module in model.named_modules()
        if should_convert_module(name, skip) and (type(module) is nn.Linear or isinstance(module, Conv1D))
    ]


def _quantizable_linears_v4(model: nn.Module) -> list[str]:
    """transformers 4.x (v4.44.2 quantizers/quantizer_bnb_4bit.py ``_process_model_before_weight_loading`` and
    integrations/bitsandbytes.py ``_replace_with_bnb_linear``): ``get_keys_to_not_convert`` (the lm_head or
    the tied weights) plus ``_keep_in_fp32_modules`` are skipped, and every ``isinstance(module, nn.Linear)`` is
    replaced, subclasses included (FalconLinear, Mixtral's per-expert linears)."""
    from transformers.integrations.bitsandbytes import get_keys_to_not_convert
    from transformers.pytorch_utils import Conv1D

    skip = list(get_keys_to_not_convert(model)) + list(getattr(model, "_keep_in_fp32_modules", None) or [])
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, (nn.Linear, Conv1D)) and name.rsplit(".", 1)[-1] not in skip
        and not any(key + "." in name or key == name for key in skip)
    ]


def replace_with_emulated_nf4(model: nn.Module, compute_dtype: torch.dtype, double_quant: bool) -> int:
    """Swap every quantizable linear for :class:`EmulatedLinear4bit` (frees the dense weight).

    Returns:
        How many modules were replaced.
    """
    from transformers.pytorch_utils import Conv1D

    shared: dict[str, Any] = {}
    names = quantizable_linears(model)
    for name in names:
        module = model.get_submodule(name)
        if isinstance(module, Conv1D):
            in_features, out_features = module.weight.shape
        else:
            in_features, out_features = module.in_features, module.out_features
        new = EmulatedLinear4bit(
            in_features, out_features, module.bias is not None, compute_dtype, double_quant,
            module.weight.device, shared,
        )
        new.source_cls = type(module)
        model.set_submodule(name, new)
    model.is_loaded_in_4bit = True
    return len(names)
