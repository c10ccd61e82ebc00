"""Live-bytes accounting for the CPU trace: a ``TorchDispatchMode`` that sees every allocation.

Every op's output tensors are inspected after the op ran; each storage is counted once (views
share their base's storage) with ``untyped_storage().nbytes()``, and subtracted again when a weak
reference to the storage fires (torch keeps a storage's Python object alive exactly as long as the
C++ storage, so the callback fires when the last tensor, view, autograd saved-tensor or optimizer
state holding it is gone). The running sum is what ``torch.cuda.memory_allocated`` reads on a GPU,
without the caching allocator's rounding of each block to 512 bytes (tracked separately as
``peak_rounded_bytes``) and without kernel workspaces that never appear as tensors.

Tensor wrapper subclasses (FSDP2's ``DTensor`` parameters, gradients and optimizer state) own no
memory themselves: the tracker counts the plain tensors they wrap (``__tensor_flatten__``), e.g. a
sharded parameter's local shard, never the wrapper's global shape.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode, is_traceable_wrapper_subclass
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
        self._pending: tuple[int, float, str] | None = None
        self.backward = False
        """Set by the caller while ``loss.backward()`` runs (enables the gradient-sum correction)."""
        self.record_origin = False
        self.origin: dict[int, str] = {}
        """Op that created each live storage (only with ``record_origin``; for debugging)."""
        self._func = ""

    # ------------------------------------------------------------------ dispatch

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        self._settle()
        out = func(*args, **(kwargs or {}))
        self.ops += 1
        self._func = str(func)
        if self._paused:
            return out
        if self.backward and func is torch.ops.aten.add.Tensor and self._gradient_sum(args, kwargs):
            # The autograd engine sums two gradients for one input (a tensor used twice, tied weights)
            # with ``old.add_(new)`` when it holds the only reference to ``old``, but never in place for
            # tensor subclasses such as fake tensors, which get ``old + new``. Count the sum without
            # raising the peak; if ``old`` turns out to be still referenced elsewhere by the next op
            # (so CUDA would also have allocated), the peak is raised after all.
            before = self.live_bytes
            self.track(out, peak=False)
            if self.live_bytes > before:
                self._pending = (args[0].untyped_storage()._cdata, self.live_bytes, self.phase)
            return out
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.track(leaf)
        return out

    @staticmethod
    def _gradient_sum(args: tuple, kwargs: dict | None) -> bool:
        if len(args) != 2 or (kwargs and kwargs.get("alpha", 1) != 1) or torch.is_grad_enabled():
            return False
        a, b = args
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                and a.dtype == b.dtype and a.is_contiguous())

    def _settle(self) -> None:
        if self._pending is None:
            return
        key, live, phase = self._pending
        self._pending = None
        if key in self._sizes:  # ``old`` still referenced: CUDA would have added out of place too
            self._raise_peak(live, phase)

    def track(self, tensor: torch.Tensor, peak: bool = True) -> None:
        """Count ``tensor``'s storage if it is new (or grew, after ``resize_``); ``peak=False`` defers the peak."""
        if is_traceable_wrapper_subclass(tensor):
            for inner in _inner_tensors(tensor):
                self.track(inner, peak)
            return
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
            if self.record_origin:
                self.origin[key] = f"{self.phase}:{self._func}:{tuple(tensor.shape)}:{tensor.dtype}"
            old = 0
        self._sizes[key] = nbytes
        self.live_bytes += nbytes - old
        self.live_rounded_bytes += _rounded(nbytes) - _rounded(old)
        if peak:
            self._raise_peak(self.live_bytes, self.phase)

    def _raise_peak(self, live: float, phase: str) -> None:
        if live > self.phase_peak_bytes.get(phase, 0.0):
            self.phase_peak_bytes[phase] = live
        if self.live_rounded_bytes > self.peak_rounded_bytes:
            self.peak_rounded_bytes = self.live_rounded_bytes
        if live > self.peak_bytes:
            self.peak_bytes = live
            self.at_peak = PeakRecord(live, phase, self.grad_bytes, self.optimizer_bytes)

    def _release(self, key: int) -> None:
        nbytes = self._sizes.pop(key, None)
        self._refs.pop(key, None)
        self.origin.pop(key, None)
        if nbytes is not None:
            self.live_bytes -= nbytes
            self.live_rounded_bytes -= _rounded(nbytes)

    # ------------------------------------------------------------------ helpers for the caller

    def set_phase(self, phase: str) -> None:
        """Charge later allocations to ``phase`` (its peak starts at the current live bytes)."""
        self._settle()
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
        for t in [leaf for x in tensors for leaf in _plain(x)]:
            if t.device.type != self.device_type:
                continue
            key = t.untyped_storage()._cdata
            if key in seen or key not in self._sizes:
                continue
            seen.add(key)
            total += self._sizes[key]
        return total

    def live_storages(self) -> list[tuple[int, str]]:
        """(bytes, origin) of every live storage, largest first (origins need ``record_origin``)."""
        return sorted(((n, self.origin.get(k, "?")) for k, n in self._sizes.items()), reverse=True)

    def reset_peak(self) -> None:
        """Start peak tracking afresh from the current live bytes (like ``reset_peak_memory_stats``)."""
        self.peak_bytes = self.live_bytes
        self.peak_rounded_bytes = self.live_rounded_bytes
        self.at_peak = PeakRecord(self.live_bytes, self.phase, self.grad_bytes, self.optimizer_bytes)


def _inner_tensors(tensor: torch.Tensor) -> list[torch.Tensor]:
    """The tensors a wrapper subclass (``DTensor``) holds, per its ``__tensor_flatten__``."""
    names, _ = tensor.__tensor_flatten__()
    return [t for t in (getattr(tensor, name) for name in names) if isinstance(t, torch.Tensor)]


def _plain(x: object) -> list[torch.Tensor]:
    """``x`` if it is a plain tensor, the plain tensors inside a wrapper subclass, else nothing."""
    if not isinstance(x, torch.Tensor):
        return []
    if is_traceable_wrapper_subclass(x):
        return [leaf for inner in _inner_tensors(x) for leaf in _plain(inner)]
    return [x]
