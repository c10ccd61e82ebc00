"""LiveBytesTracker: each storage once, frees, peaks, the autograd gradient-sum correction."""

from __future__ import annotations

import pytest

from tests.conftest import needs_torch_stack

pytestmark = needs_torch_stack


@pytest.fixture()
def fake():
    from torch._subclasses.fake_tensor import FakeTensorMode

    from probes.memtrack import LiveBytesTracker

    tracker = LiveBytesTracker("cpu")
    with FakeTensorMode(), tracker:
        yield tracker


def test_views_share_one_storage(fake) -> None:
    import torch

    x = torch.empty(4, 256, dtype=torch.float32)
    views = [x[1:], x.view(1024), x.t(), x[:, :8]]
    assert fake.live_bytes == 4 * 256 * 4
    del views
    y = x + 1
    assert fake.live_bytes == 2 * 4 * 256 * 4
    del x, y
    assert fake.live_bytes == 0
    assert fake.peak_bytes == 2 * 4 * 256 * 4


def test_rounded_peak_uses_512_byte_blocks(fake) -> None:
    import torch

    tensors = [torch.empty((), dtype=torch.float32) for _ in range(10)]
    assert fake.live_bytes == 40
    assert fake.peak_rounded_bytes == 10 * 512
    del tensors


def test_paused_allocations_are_not_counted(fake) -> None:
    import torch

    with fake.paused():
        x = torch.empty(1000, dtype=torch.float32)
    assert fake.live_bytes == 0
    del x


def test_phase_peaks_and_reset(fake) -> None:
    import torch

    fake.set_phase("a")
    x = torch.empty(100, dtype=torch.uint8)
    fake.set_phase("b")
    y = torch.empty(300, dtype=torch.uint8)
    del y
    assert fake.phase_peak_bytes["a"] == 100 and fake.phase_peak_bytes["b"] == 400
    fake.reset_peak()
    assert fake.peak_bytes == 100 and fake.at_peak.phase == "b"
    del x


def test_gradient_sum_is_not_a_peak_when_old_is_freed(fake) -> None:
    """The engine's ``buffer = old + new`` on fake tensors stands for an in-place ``old.add_(new)``."""
    import torch

    fake.backward = True
    with torch.no_grad():
        old = torch.empty(1000, dtype=torch.float32)
        new = torch.empty(1000, dtype=torch.float32)
        peak = fake.peak_bytes
        total = old + new
        del old, new
        torch.empty(1, dtype=torch.uint8)  # next op settles the pending sum
    assert fake.peak_bytes == peak == 8000
    assert fake.live_bytes == 4000
    del total


def test_gradient_sum_counts_when_old_survives(fake) -> None:
    import torch

    fake.backward = True
    with torch.no_grad():
        old = torch.empty(1000, dtype=torch.float32)
        new = torch.empty(1000, dtype=torch.float32)
        total = old + new
        torch.empty(1, dtype=torch.uint8)
    assert fake.peak_bytes >= 12000
    del old, new, total
