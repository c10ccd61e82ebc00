"""Live-bytes accounting for the CPU trace: a ``TorchDispatchMode`` that sees every allocation.

Every op's output tensors are inspected after the op ran; each storage is counted once (views
share their base's storage) with ``untyped_storage().nbytes()``, and subtracted again when a weak
reference to the storage fires (torch keeps a storage's Python object alive exactly as long as the
C++ storage, so the callback fires when the last tensor, view, autograd saved-tensor or optimizer
state holding it is gone). The running sum is what ``torch.cuda.memory_allocated`` reads on a GPU,
without the caching allocator's rounding of each block to 512 bytes (tracked separately as
``peak_rounded_bytes``) and without kernel workspaces that never appear as tensors.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

ALLOCATOR_BLOCK_BYTES = 512
"""The CUDA caching allocator rounds every allocation up to a multiple of 512 bytes."""


def _rounded(nbytes: int) -> int:
    return -(-nbytes // ALLOCATOR_BLOCK_BYTES) * ALLOCATOR_BLOCK_BYTES


@dataclass
class PeakRecord:
    """Counters at the moment of a new peak."""

    live_bytes: float = 0.0
    phase: str = ""
    grad_bytes: float = 0.0
    optimizer_bytes: float = 0.0


class LiveBytesTracker(TorchDispatchMode):
    """Counts live bytes of every storage on ``device_type`` created while the mode is active.

    Attributes:
        live_bytes: Bytes held right now.
        peak_bytes: Highest ``live_bytes`` seen since the last :meth:`reset_peak`.
        peak_rounded_bytes: The same with every storage rounded up to 512 bytes (CUDA allocator blocks).
        phase: Label charged with new allocations (set by the caller at phase boundaries).
        phase_peak_bytes: Highest ``live_bytes`` reached while each phase was current.
        grad_bytes: Bytes of ``.grad`` tensors, maintained by the caller (gradient hooks).
        optimizer_bytes: Bytes of optimizer state, maintained by the caller.
        at_peak: Counters at the moment of ``peak_bytes``.
    """

    def __init__(self, device_type: str = "cpu") -> None:
        super().__init__()
        self.device_type = device_type
        self.live_bytes = 0.0
        self.live_rounded_bytes = 0.0
        self.peak_bytes = 0.0
        self.peak_rounded_bytes = 0.0
        self.phase = "load"
        self.phase_peak_bytes: dict[str, float] = {}
        self.grad_bytes = 0.0
        self.optimizer_bytes = 0.0
        self.at_peak = PeakRecord()
        self.ops = 0
        self._sizes: dict[int, int] = {}
        self._refs: dict[int, weakref.ref] = {}
        self._paused = 0

    # ------------------------------------------------------------------ dispatch

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        self.ops += 1
        if not self._paused:
            for leaf in tree_leaves(out):
                if isinstance(leaf, torch.Tensor):
                    self.track(leaf)
        return out

    def track(self, tensor: torch.Tensor) -> None:
        """Count ``tensor``'s storage if it is new (or grew, after ``resize_``)."""
        if tensor.device.type != self.device_type or tensor.is_sparse:
            return
        storage = tensor.untyped_storage()
        key = storage._cdata
        nbytes = storage.nbytes()
        old = self._sizes.get(key)
        if old == nbytes:
            return
        if old is None:
            self._refs[key] = weakref.ref(storage, lambda _ref, key=key: self._release(key))
            old = 0
        self._sizes[key] = nbytes
        self.live_bytes += nbytes - old
        self.live_rounded_bytes += _rounded(nbytes) - _rounded(old)
        if self.live_bytes > self.phase_peak_bytes.get(self.phase, 0.0):
            self.phase_peak_bytes[self.phase] = self.live_bytes
        if self.live_rounded_bytes > self.peak_rounded_bytes:
            self.peak_rounded_bytes = self.live_rounded_bytes
        if self.live_bytes > self.peak_bytes:
            self.peak_bytes = self.live_bytes
            self.at_peak = PeakRecord(self.live_bytes, self.phase, self.grad_bytes, self.optimizer_bytes)

    def _release(self, key: int) -> None:
        nbytes = self._sizes.pop(key, None)
        self._refs.pop(key, None)
        if nbytes is not None:
            self.live_bytes -= nbytes
            self.live_rounded_bytes -= _rounded(nbytes)

    # ------------------------------------------------------------------ helpers for the caller

    def set_phase(self, phase: str) -> None:
        """Charge later allocations to ``phase`` (its peak starts at the current live bytes)."""
        self.phase = phase
        self.phase_peak_bytes[phase] = max(self.phase_peak_bytes.get(phase, 0.0), self.live_bytes)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Allocations inside are not counted (for memory that lives outside torch's counters)."""
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    def storage_bytes(self, tensors: list[torch.Tensor]) -> float:
        """Bytes of the distinct tracked storages behind ``tensors``."""
        seen: set[int] = set()
        total = 0.0
        for t in tensors:
            if not isinstance(t, torch.Tensor) or t.device.type != self.device_type:
                continue
            key = t.untyped_storage()._cdata
            if key in seen or key not in self._sizes:
                continue
            seen.add(key)
            total += self._sizes[key]
        return total

    def reset_peak(self) -> None:
        """Start peak tracking afresh from the current live bytes (like ``reset_peak_memory_stats``)."""
        self.peak_bytes = self.live_bytes
        self.peak_rounded_bytes = self.live_rounded_bytes
        self.at_peak = PeakRecord(self.live_bytes, self.phase, self.grad_bytes, self.optimizer_bytes)
