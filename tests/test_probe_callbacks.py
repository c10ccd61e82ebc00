"""``probes.callbacks.MemoryCallback`` against a fake Trainer state and monkeypatched ``torch.cuda``."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from planner.cli import cli  # noqa: E402
from planner.specs import GIB  # noqa: E402
from probes import callbacks, detect  # noqa: E402
from probes.results import ProbeResult  # noqa: E402

PEAKS_GIB = [(10.0, 11.0), (12.0, 12.5), (11.0, 12.5)]
"""(max allocated, max reserved) the fake CUDA reports for three steps."""


class FakeCuda:
    """The ``torch.cuda`` counters the callback reads; each step's peaks, reset counted."""

    def __init__(self) -> None:
        self.step = 0
        self.resets = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        cuda = torch.cuda
        monkeypatch.setattr(cuda, "current_device", lambda: 0)
        monkeypatch.setattr(cuda, "memory_allocated", lambda i=0: 8.0 * GIB)
        monkeypatch.setattr(cuda, "memory_reserved", lambda i=0: 8.5 * GIB)
        monkeypatch.setattr(cuda, "max_memory_allocated", lambda i=0: PEAKS_GIB[self.step][0] * GIB)
        monkeypatch.setattr(cuda, "max_memory_reserved", lambda i=0: PEAKS_GIB[self.step][1] * GIB)
        monkeypatch.setattr(cuda, "reset_peak_memory_stats", self._reset)
        monkeypatch.setattr(cuda, "get_device_name", lambda i=0: "NVIDIA GeForce RTX 4090")
        monkeypatch.setattr(cuda, "get_device_properties", lambda i=0: SimpleNamespace(total_memory=24 * GIB))
        monkeypatch.setattr(detect, "nvml_process_used_bytes", lambda i, pid=None: 9.0 * GIB)

    def _reset(self, i: int = 0) -> None:
        self.resets += 1


def _train(cb: callbacks.MemoryCallback, fake: FakeCuda) -> None:
    args, control = SimpleNamespace(), SimpleNamespace()
    state = SimpleNamespace(global_step=0, is_world_process_zero=True)
    model = SimpleNamespace(config=SimpleNamespace(_name_or_path="meta-llama/Meta-Llama-3-8B"))
    cb.on_train_begin(args, state, control, model=model)
    for step in range(len(PEAKS_GIB)):
        fake.step = step
        state.global_step = step + 1
        cb.on_step_end(args, state, control)
    cb.on_train_end(args, state, control)


def test_callback_records_steps_and_writes_a_probe_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCuda()
    fake.install(monkeypatch)
    out = tmp_path / "run.json"
    cb = callbacks.MemoryCallback(out)
    _train(cb, fake)
    assert fake.resets == 1 + len(PEAKS_GIB)  # at train begin and after every step
    result = ProbeResult.model_validate_json(out.read_text())
    assert [(s.step, s.allocated_gib, s.reserved_gib) for s in result.step_memory] == [
        (i + 1, a, r) for i, (a, r) in enumerate(PEAKS_GIB)]
    assert result.model == "meta-llama/Meta-Llama-3-8B" and result.mode == "gpu"
    assert result.measured_gib.peak_allocated == 12.0 and result.measured_gib.peak_reserved == 12.5
    assert result.measured_gib.after_load == 8.0 and result.measured_gib.device == 9.0
    cal = result.calibration
    assert cal is not None and cal.profile == "RTX 4090"
    assert cal.cuda_context_gib == pytest.approx(0.5)  # NVML 9.0 - reserved 8.5 at train begin
    assert cal.allocator_reserve_fraction == pytest.approx(0.5 / 12.0)


def test_estimate_calibrate_reads_the_callback_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCuda()
    fake.install(monkeypatch)
    out = tmp_path / "run.json"
    _train(callbacks.MemoryCallback(out), fake)
    res = CliRunner().invoke(cli, ["estimate", "llama-3-8b", "--gpu", "4090", "--calibrate", str(out), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    plain = json.loads(CliRunner().invoke(cli, ["estimate", "llama-3-8b", "--gpu", "4090", "--json"]).output)
    context = next(t for t in data["terms"] if t["name"] == "CUDA context")
    assert context["gib"] == pytest.approx(0.5) and "NVIDIA GeForce RTX 4090" in context["source"]
    reserve = data["peak_gib"]["reserved"] - data["peak_gib"]["allocated"]
    assert reserve == pytest.approx(data["peak_gib"]["allocated"] * 0.5 / 12.0, abs=0.01)
    assert data["peak_gib"] != plain["peak_gib"]
