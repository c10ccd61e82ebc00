"""Make the CPU trace allocate like the CUDA run it stands for.

The trace runs on fake *CPU* tensors: fake CUDA tensors cannot go through the autograd engine of a
CPU-only torch build (it asks for a CUDA stream). Three things differ between CPU and CUDA
dispatch in a training step, and all three change what is stored:

1. **Autocast op lists.** ``torch.autocast("cpu")`` casts a different set of ops than
   ``torch.autocast("cuda")``. :func:`cuda_autocast_policy` re-registers the ``AutocastCPU``
   kernels so that CPU autocast applies exactly the CUDA policy (``aten/src/ATen/autocast_mode.h``):
   the lower-precision list, the fp32 list (``layer_norm``, ``rms_norm``, ``softmax`` without a
   dtype, ``exp``, ``pow`` ...), the "fp32 unless a dtype is given" list (``sum``, ``cumsum``,
   ``log_softmax`` ...) and the promote list; CPU-only entries become fall-throughs. Ops that both
   lists cast to the lower precision keep torch's own kernel, including its cache of casted fp32
   leaf weights (alive until the autocast region exits, as on CUDA).
2. **Dropout.** On CUDA ``F.dropout`` runs the fused ``native_dropout`` and saves a 1-byte bool
   mask; the CPU path saves a mask in the input's dtype. :func:`cuda_dropout_patch` routes dropout
   to ``native_dropout``.
3. **Scaled-dot-product attention.** ``F.scaled_dot_product_attention`` picks its kernel per
   device: on CPU it takes PyTorch's CPU flash kernel, or the math path (which saves the
   seq x seq scores) when there is dropout. :func:`cuda_sdpa` picks the kernel the CUDA
   dispatcher would (``sdp_utils.cpp`` for sm80+: flash for fp16/bf16 without a mask, head dim
   <= 256, grouped-query k/v allowed; else memory-efficient when q and k/v have the same heads;
   else math) and calls that CUDA op (``_scaled_dot_product_flash_attention`` /
   ``_scaled_dot_product_efficient_attention``, whose shapes the fake tensors take from their meta
   functions). Both save q, k, v, the output and an fp32 logsumexp of batch x heads x seq (plus the
   dropout RNG state), never the scores. ``attn_implementation="flash_attention_2"`` saves the same
   tensors, so the trace accounts flash as sdpa.

Not visible to any trace: workspaces kernels allocate internally and free before returning (the
flash backward's fp32 ``dq_accum``, cuBLAS workspaces).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import torch

# --------------------------------------------------------------------------- CUDA autocast policy
# aten/src/ATen/autocast_mode.h (AT_FORALL_LOWER_PRECISION_FP / _FP32 / _FP32_SET_OPT_DTYPE /
# _DIFFERENT_REDISPATCH_SIGNATURE / _PROMOTE), as registered for AutocastCUDA in torch 2.13.

LOWER = "lower"
FP32 = "fp32"
FP32_SET_OPT_DTYPE = "fp32_set_opt_dtype"
FP32_APPEND_DTYPE = "fp32_append_dtype"
PROMOTE = "promote"

_LOWER_OPS = {
    "_convolution", "_convolution.deprecated", "conv1d", "conv2d", "conv3d", "conv_tbc", "conv_transpose1d",
    "conv_transpose2d.input", "conv_transpose3d.input", "convolution", "cudnn_convolution",
    "cudnn_convolution_transpose", "prelu", "addmm", "addmv", "addr", "matmul", "einsum", "mm", "mv",
    "linalg_vecdot", "linear", "addbmm", "baddbmm", "bmm", "chain_matmul", "linalg_multi_dot",
    "_thnn_fused_lstm_cell", "_thnn_fused_gru_cell", "lstm_cell", "gru_cell", "rnn_tanh_cell", "rnn_relu_cell",
    "_scaled_dot_product_flash_attention", "scaled_dot_product_attention",
}
_FP32_OPS = {
    "acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2", "log1p", "reciprocal", "rsqrt",
    "sinh", "tan", "pow.Tensor_Scalar", "pow.Tensor_Tensor", "pow.Scalar", "softplus", "layer_norm",
    "native_layer_norm", "group_norm", "rms_norm", "frobenius_norm.dim", "nuclear_norm", "nuclear_norm.dim",
    "cosine_similarity", "poisson_nll_loss", "cosine_embedding_loss", "nll_loss", "nll_loss2d",
    "hinge_embedding_loss", "kl_div", "l1_loss", "smooth_l1_loss", "huber_loss", "mse_loss",
    "margin_ranking_loss", "multilabel_margin_loss", "soft_margin_loss", "triplet_margin_loss",
    "multi_margin_loss", "binary_cross_entropy_with_logits", "dist", "pdist", "cdist", "renorm", "logsumexp",
    "upsample_nearest1d", "_upsample_nearest_exact1d", "upsample_nearest2d", "_upsample_nearest_exact2d",
    "upsample_nearest3d", "_upsample_nearest_exact3d", "upsample_linear1d", "upsample_bilinear2d",
    "_upsample_bilinear2d_aa", "upsample_trilinear3d", "upsample_bicubic2d", "_upsample_bicubic2d_aa",
}
_SET_OPT_DTYPE_OPS = {
    "prod", "prod.dim_int", "softmax.int", "log_softmax.int", "cumprod", "cumsum", "linalg_vector_norm",
    "linalg_matrix_norm", "linalg_matrix_norm.str_ord", "sum", "sum.dim_IntList",
}
_APPEND_DTYPE_OPS = {"norm.Scalar": "norm.ScalarOpt_dtype", "norm.ScalarOpt_dim": "norm.ScalarOpt_dim_dtype"}
_PROMOTE_OPS = {
    "addcdiv", "addcmul", "atan2", "bilinear", "cross", "dot", "vdot", "grid_sampler", "index_put", "tensordot",
    "scatter_add",
}
# CUDA autocast refuses binary_cross_entropy (it is unsafe to autocast); not used by causal LMs.
_BANNED_OPS = {"binary_cross_entropy"}


def cuda_policy(op_name: str) -> str | None:
    """CUDA autocast policy of ``op_name`` (``"mm"``, ``"sum.dim_IntList"``), or None if not autocast."""
    if op_name in _LOWER_OPS:
        return LOWER
    if op_name in _FP32_OPS:
        return FP32
    if op_name in _SET_OPT_DTYPE_OPS:
        return FP32_SET_OPT_DTYPE
    if op_name in _APPEND_DTYPE_OPS:
        return FP32_APPEND_DTYPE
    if op_name in _PROMOTE_OPS:
        return PROMOTE
    return None


def _registered(key: str) -> set[str]:
    names = set()
    for qualname in torch._C._dispatch_get_all_op_names():
        if qualname.startswith("aten::") and torch._C._dispatch_has_kernel_for_dispatch_key(qualname, key):
            names.add(qualname.removeprefix("aten::"))
    return names


def _resolve(op_name: str) -> torch._ops.OpOverload:
    name, _, overload = op_name.partition(".")
    return getattr(getattr(torch.ops.aten, name), overload or "default")


def _eligible(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.is_floating_point() and t.dtype != torch.float64


def _cast(value: Any, dtype: torch.dtype) -> Any:
    if _eligible(value) and value.dtype != dtype:
        return value.to(dtype)
    if isinstance(value, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in value):
        return type(value)(_cast(v, dtype) for v in value)
    return value


def _widest(values: list[Any], lower: torch.dtype) -> torch.dtype:
    out = lower
    for v in values:
        items = v if isinstance(v, (list, tuple)) else [v]
        for t in items:
            if _eligible(t) and t.dtype == torch.float32:
                out = torch.float32
    return out


def _kernel(op: torch._ops.OpOverload, policy: str, target: torch._ops.OpOverload | None = None
            ) -> Callable[..., Any]:
    """An ``AutocastCPU`` kernel applying CUDA's ``policy``, then redispatching below autocast."""
    schema_args = [a.name for a in op._schema.arguments]
    dtype_index = schema_args.index("dtype") if "dtype" in schema_args else None
    exclude = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCPU)

    def kernel(*args: Any, **kwargs: Any) -> Any:
        lower = torch.get_autocast_dtype("cpu")
        with torch._C._ExcludeDispatchKeyGuard(exclude):
            if policy == LOWER:
                return op(*(_cast(a, lower) for a in args), **{k: _cast(v, lower) for k, v in kwargs.items()})
            if policy == FP32:
                return op(*(_cast(a, torch.float32) for a in args),
                          **{k: _cast(v, torch.float32) for k, v in kwargs.items()})
            if policy == PROMOTE:
                dtype = _widest([*args, *kwargs.values()], lower)
                return op(*(_cast(a, dtype) for a in args), **{k: _cast(v, dtype) for k, v in kwargs.items()})
            if not (args and _eligible(args[0])):
                return op(*args, **kwargs)
            if policy == FP32_SET_OPT_DTYPE:
                if dtype_index is not None and dtype_index < len(args):
                    if args[dtype_index] is None:
                        args = (*args[:dtype_index], torch.float32, *args[dtype_index + 1:])
                elif kwargs.get("dtype") is None:
                    kwargs = {**kwargs, "dtype": torch.float32}
                return op(*args, **kwargs)
            # FP32_APPEND_DTYPE: norm(self, p[, dim, keepdim]) -> norm(..., dtype=float32)
            return target(*args, dtype=torch.float32)

    return kernel


@contextmanager
def cuda_autocast_policy() -> Iterator[None]:
    """Inside, ``torch.autocast("cpu")`` casts like ``torch.autocast("cuda")``.

    Raises:
        RuntimeError: this torch registers a CUDA autocast kernel whose policy is not in the tables
            above (a newer torch added one: extend the tables from its ``autocast_mode.h``).
    """
    cuda_ops = _registered("AutocastCUDA")
    cpu_ops = _registered("AutocastCPU")
    unknown = sorted(op for op in cuda_ops if cuda_policy(op) is None and op not in _BANNED_OPS)
    if unknown:
        raise RuntimeError(f"CUDA autocast policy unknown for: {', '.join(unknown)}")
    lib = torch.library.Library("aten", "IMPL")  # noqa: TOR901 - scoped, destroyed on exit
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"(?s).*previously registered kernel")
            _register(lib, cpu_ops, cuda_ops)
        yield
    finally:
        lib._destroy()


def _register(lib: torch.library.Library, cpu_ops: set[str], cuda_ops: set[str]) -> None:
    """CPU-only autocast entries fall through; CUDA entries get the CUDA policy on ``AutocastCPU``."""
    for name in sorted(cpu_ops - cuda_ops):
        lib.impl(name, torch.library.fallthrough_kernel, "AutocastCPU")
    for name in sorted(cuda_ops):
        policy = cuda_policy(name)
        if policy is None or (policy == LOWER and name in cpu_ops):
            continue  # banned on CUDA, or torch's own cached lower-precision cast (same on both)
        op = _resolve(name)
        target = _resolve(_APPEND_DTYPE_OPS[name]) if policy == FP32_APPEND_DTYPE else None
        lib.impl(name, _kernel(op, policy, target), "AutocastCPU")


# --------------------------------------------------------------------------- dropout


_TORCH_DROPOUT = torch.nn.functional.dropout


def cuda_dropout(input: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> torch.Tensor:  # noqa: A002
    """``F.dropout`` as ``at::dropout`` runs it on CUDA: the fused ``native_dropout`` (bool mask)."""
    if training and 0.0 < p < 1.0 and not inplace and input.numel() > 0:
        return torch.ops.aten.native_dropout(input, p, True)[0]
    return _TORCH_DROPOUT(input, p, training, inplace)


@contextmanager
def cuda_dropout_patch() -> Iterator[None]:
    """Route ``torch.nn.functional.dropout`` through :func:`cuda_dropout` (also during checkpoint recompute)."""
    with mock.patch.object(torch.nn.functional, "dropout", cuda_dropout):
        yield


# --------------------------------------------------------------------------- scaled dot-product attention

FLASH, EFFICIENT, MATH = "flash", "efficient", "math"
MEM_EFFICIENT_MASK_ALIGNMENT = 16
"""``preprocess_mask``: the memory-efficient kernel needs its bias padded to a multiple of 16 keys."""


def cuda_sdpa_backend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor | None,
                      is_causal: bool, enable_gqa: bool) -> str:
    """The kernel ``select_sdp_backend`` picks on an sm80+ GPU (priority flash, efficient, math)."""
    low = query.dtype in (torch.float16, torch.bfloat16)
    head_dim = query.shape[-1]
    dense4d = query.dim() == key.dim() == value.dim() == 4
    same_dim = key.shape[-1] == head_dim == value.shape[-1]
    gqa = dense4d and query.shape[-3] != key.shape[-3]
    square = query.shape[-2] == key.shape[-2]
    if (dense4d and low and same_dim and attn_mask is None and head_dim <= 256 and (square or not is_causal)
            and (not gqa or enable_gqa)):
        return FLASH
    alignment = 8 if low else 4
    if dense4d and not gqa and same_dim and head_dim % alignment == 0 and query.dtype != torch.float64:
        return EFFICIENT
    return MATH


def _mem_efficient_mask(mask: torch.Tensor, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """``convert_boolean_attn_mask`` + ``preprocess_mask`` of aten/native/transformers/attention.cpp."""
    if mask.dtype == torch.bool:
        mask = torch.where(mask.logical_not(), float("-inf"), 0.0).to(query.dtype)
    mask = mask.expand(query.shape[0], query.shape[1], query.shape[2], key.shape[2])
    size = mask.shape[-1]
    pad = MEM_EFFICIENT_MASK_ALIGNMENT - size % MEM_EFFICIENT_MASK_ALIGNMENT
    return torch.nn.functional.pad(mask, (0, pad))[..., :size]


def cuda_sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor | None = None,
              dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
              enable_gqa: bool = False) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` running the kernel CUDA would pick (see module docstring).

    Like CUDA autocast's kernel for ``scaled_dot_product_attention``, the inputs are cast to the
    lower precision and the op then runs with autocast excluded (the math path's own fp32 upcast
    and matmuls are not cast back).
    """
    if torch.is_autocast_enabled("cpu"):
        lower = torch.get_autocast_dtype("cpu")
        query, key, value = (_cast(t, lower) for t in (query, key, value))
        attn_mask = _cast(attn_mask, lower)
    with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCPU)):
        return _sdpa_kernel(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)


def _sdpa_kernel(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor | None,
                 dropout_p: float, is_causal: bool, scale: float | None, enable_gqa: bool) -> torch.Tensor:
    backend = cuda_sdpa_backend(query, key, value, attn_mask, is_causal, enable_gqa)
    if backend == FLASH:
        return torch.ops.aten._scaled_dot_product_flash_attention(
            query, key, value, dropout_p, is_causal, False, scale=scale)[0]
    if backend == EFFICIENT:
        mask = _mem_efficient_mask(attn_mask, query, key) if attn_mask is not None else None
        needs_lse = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
        return torch.ops.aten._scaled_dot_product_efficient_attention(
            query, key, value, mask, needs_lse, dropout_p, is_causal, scale=scale)[0]
    # The math path is the same composite on every device (fp16/bf16 upcast to fp32 unless
    # allow_fp16_bf16_reduction_math_sdp); only a dropout inside it would take the CPU mask path.
    return torch.ops.aten._scaled_dot_product_attention_math(
        query, key, value, attn_mask, dropout_p, is_causal, None, scale=scale, enable_gqa=enable_gqa)[0]


@contextmanager
def cuda_sdpa_patch() -> Iterator[None]:
    """Route ``torch.nn.functional.scaled_dot_product_attention`` through :func:`cuda_sdpa`."""
    with mock.patch.object(torch.nn.functional, "scaled_dot_product_attention", cuda_sdpa):
        yield
