"""The CPU trace's CUDA emulation matches CUDA dispatch.

The autocast check runs the real ``AutocastCUDA`` kernels of this torch build on fake CUDA tensors
(forward only: a CPU-only build has no CUDA stream for the autograd engine, which is why the trace
itself runs on fake CPU tensors) and compares output dtypes with the emulated CPU policy.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import needs_torch_stack

pytestmark = needs_torch_stack


@contextlib.contextmanager
def fake_cuda() -> Iterator[None]:
    """FakeTensorMode with CUDA tensors on a CPU-only build (test-only shim).

    ``THPVariable_getitem`` needs a CUDA device guard, which a CPU-only build lacks; the Meta
    no-op guard is borrowed for the duration. Autocast's "CUDA not available" check is patched.
    """
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    if torch.cuda.is_available():
        pytest.skip("a real CUDA device is present: use the GPU tests")
    try:
        lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libc10.so"))
        registry = (ctypes.c_void_p * 21).in_dll(lib, "_ZN3c104impl26device_guard_impl_registryE")
    except (OSError, ValueError):
        pytest.skip("cannot borrow a device guard for fake CUDA tensors on this build")
    cuda, meta = 1, 14  # c10::DeviceType::CUDA, c10::DeviceType::Meta
    saved = registry[cuda]
    registry[cuda] = registry[meta]
    import torch.cuda.amp.common as amp_common

    with contextlib.ExitStack() as stack:
        stack.callback(lambda: registry.__setitem__(cuda, saved))
        stack.enter_context(pytest.MonkeyPatch.context()).setattr(amp_common, "amp_definitely_not_available",
                                                                   lambda: False)
        mp = stack.enter_context(pytest.MonkeyPatch.context())
        mp.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
        stack.enter_context(FakeTensorMode(allow_non_fake_inputs=True))
        yield


def _cases() -> list[tuple[str, Callable]]:
    import torch
    import torch.nn.functional as F

    def t(dtype, *shape):
        return lambda dev: torch.empty(*shape, dtype=dtype, device=dev)

    f32, b16 = torch.float32, torch.bfloat16
    x32, x16, w32 = t(f32, 8, 16), t(b16, 8, 16), t(f32, 16, 16)
    return [
        ("mm", lambda d: x32(d) @ w32(d)),
        ("linear", lambda d: F.linear(x32(d), w32(d))),
        ("bmm", lambda d: torch.bmm(t(f32, 2, 8, 16)(d), t(f32, 2, 16, 4)(d))),
        ("einsum", lambda d: torch.einsum("ij,jk->ik", x32(d), w32(d))),
        ("mv", lambda d: torch.mv(w32(d), t(f32, 16)(d))),
        ("layer_norm", lambda d: F.layer_norm(x16(d), (16,))),
        ("rms_norm", lambda d: F.rms_norm(x16(d), (16,))),
        ("softmax", lambda d: torch.softmax(x16(d), -1)),
        ("softmax_dtype", lambda d: torch.softmax(x16(d), -1, dtype=b16)),
        ("log_softmax", lambda d: F.log_softmax(x16(d), -1)),
        ("sum", lambda d: x16(d).sum()),
        ("sum_dim", lambda d: x16(d).sum(-1)),
        ("cumsum", lambda d: x16(d).cumsum(-1)),
        ("exp", lambda d: x16(d).exp()),
        ("pow", lambda d: x16(d).pow(2)),
        ("rsqrt", lambda d: x16(d).rsqrt()),
        ("mean", lambda d: x16(d).mean(-1)),
        ("prod", lambda d: x16(d).prod()),
        ("addcmul", lambda d: torch.addcmul(x16(d), x32(d), x16(d))),
        ("cat", lambda d: torch.cat([x16(d), x32(d)])),
        ("nll_loss", lambda d: F.nll_loss(x16(d), torch.zeros(8, dtype=torch.long, device=d))),
        ("cross_entropy", lambda d: F.cross_entropy(x16(d), torch.zeros(8, dtype=torch.long, device=d))),
        ("silu", lambda d: F.silu(x16(d))),
        ("gelu", lambda d: F.gelu(x32(d))),
        ("norm", lambda d: torch.norm(x16(d))),
        ("vector_norm", lambda d: torch.linalg.vector_norm(x16(d))),
        ("sdpa", lambda d: F.scaled_dot_product_attention(*(t(f32, 1, 2, 8, 16)(d) for _ in range(3)))),
    ]


def test_emulated_cpu_autocast_matches_cuda_autocast() -> None:
    import torch

    from probes.cuda_emulation import cuda_autocast_policy

    cases = _cases()
    cuda_dtypes = {}
    with fake_cuda(), torch.autocast("cuda", dtype=torch.bfloat16):
        for name, fn in cases:
            cuda_dtypes[name] = fn("cuda").dtype
    from torch._subclasses.fake_tensor import FakeTensorMode

    cpu_dtypes = {}
    with cuda_autocast_policy(), FakeTensorMode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for name, fn in cases:
            cpu_dtypes[name] = fn("cpu").dtype
    assert cpu_dtypes == cuda_dtypes


def test_policy_is_restored_after_the_context() -> None:
    import torch

    from probes.cuda_emulation import cuda_autocast_policy

    x = torch.ones(4, 4, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        before = torch.softmax(x, -1).dtype
    with cuda_autocast_policy(), torch.autocast("cpu", dtype=torch.bfloat16):
        inside = torch.softmax(x, -1).dtype
    with torch.autocast("cpu", dtype=torch.bfloat16):
        after = torch.softmax(x, -1).dtype
    assert inside == torch.float32 and before == after == torch.bfloat16


def test_dropout_saves_a_bool_mask() -> None:
    import torch

    from probes.cuda_emulation import cuda_dropout_patch

    x = torch.randn(64, requires_grad=True)
    with cuda_dropout_patch():
        y = torch.nn.functional.dropout(x, 0.5, True)
    assert type(y.grad_fn).__name__ == "NativeDropoutBackward0"
    assert torch.nn.functional.dropout is not None and y.shape == x.shape


@pytest.mark.parametrize(
    ("q_heads", "kv_heads", "mask", "gqa", "dtype", "expected"),
    [
        (8, 8, False, False, "bf16", "flash"),
        (8, 2, False, True, "bf16", "flash"),
        (8, 8, True, False, "bf16", "efficient"),
        (8, 8, False, False, "fp32", "efficient"),
        (71, 1, False, False, "bf16", "math"),  # Falcon-7B multi-query without enable_gqa
        (8, 2, True, False, "bf16", "math"),
    ],
)
def test_sdpa_backend_choice(q_heads, kv_heads, mask, gqa, dtype, expected) -> None:
    import torch

    from probes.cuda_emulation import cuda_sdpa_backend

    dt = torch.bfloat16 if dtype == "bf16" else torch.float32
    q = torch.empty(1, q_heads, 16, 64, dtype=dt)
    k = torch.empty(1, kv_heads, 16, 64, dtype=dt)
    m = torch.empty(1, 1, 16, 16, dtype=dt) if mask else None
    assert cuda_sdpa_backend(q, k, k, m, not mask, gqa) == expected
