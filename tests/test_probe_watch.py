"""``probes.watch`` and ``loraplan watch`` against a fake NVML module (injected; no GPU needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from planner.cli import cli
from planner.specs import GIB
from probes import watch as watch_mod
from probes.watch_results import WatchResult

JOB_GIB = [0.0, 2.0, 6.0, 9.5, 4.0]
"""What the fake NVML reports for the command's process, sample after sample (then the last value)."""
OTHER_GIB = 1.0
"""Another process on GPU 0, there before and after."""


class FakeNvml:
    """The NVML calls watch makes: two GPUs; GPU 0 runs the job and another process, GPU 1 is idle."""

    def __init__(self) -> None:
        self.job_pid = -1
        self.reads = 0

    def nvmlInit(self) -> None: ...

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int) -> bytes:
        return b"NVIDIA H100 80GB HBM3"

    def _job(self) -> float:
        return JOB_GIB[min(self.reads, len(JOB_GIB) - 1)] * GIB if self.job_pid > 0 else 0.0

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        used = (OTHER_GIB * GIB + self._job()) if h == 0 else 0.25 * GIB
        return SimpleNamespace(total=80 * GIB, used=used, free=80 * GIB - used)

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[Any]:
        if h != 0:
            return []
        procs = [SimpleNamespace(pid=424242, usedGpuMemory=OTHER_GIB * GIB)]
        if self.job_pid > 0:
            procs.append(SimpleNamespace(pid=self.job_pid, usedGpuMemory=self._job()))
            self.reads += 1
        return procs


def _popen(fake: FakeNvml):
    def start(argv: list[str]) -> subprocess.Popen:
        child = subprocess.Popen(argv)
        fake.job_pid = child.pid
        return child
    return start


CHILD = [sys.executable, "-c", "import time; time.sleep(0.6); raise SystemExit(3)"]


def test_sampling_loop_peaks_and_exit_code() -> None:
    fake = FakeNvml()
    result = watch_mod.watch(CHILD, interval_s=0.02, nvml=fake, popen=_popen(fake))
    assert result.exit_code == 3 and result.samples >= len(JOB_GIB)
    gpu0, gpu1 = result.gpus
    assert gpu0.baseline_gib == OTHER_GIB and gpu0.peak_job_gib == 9.5 and gpu0.peak_device_gib == 10.5
    assert 0 < gpu0.peak_job_at_s == gpu0.peak_device_at_s < result.seconds
    assert {(p.pid == fake.job_pid, p.job, p.peak_gib) for p in gpu0.processes} == {(True, True, 9.5),
                                                                                     (False, False, 1.0)}
    assert gpu1.peak_job_gib == 0.0 and gpu1.peak_device_gib == 0.25 and result.peak_job_gib == 9.5


def test_descendants_follow_a_launcher() -> None:
    parent = subprocess.Popen([sys.executable, "-c",
                               "import subprocess,sys,time; c=subprocess.Popen([sys.executable,'-c','import time;"
                               "time.sleep(2)']); print(c.pid, flush=True); c.wait()"], stdout=subprocess.PIPE)
    try:
        grandchild = int(parent.stdout.readline())
        assert {parent.pid, grandchild} <= watch_mod.descendants(parent.pid)
        assert os.getpid() not in watch_mod.descendants(parent.pid)
    finally:
        parent.kill()
        os.kill(grandchild, 9)
        parent.wait()


def test_no_nvml_does_not_run_the_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    marker = tmp_path / "ran"
    res = CliRunner().invoke(cli, ["watch", "--", sys.executable, "-c", f"open({str(marker)!r}, 'w')"])
    assert res.exit_code == 1 and "watch cannot sample device memory" in res.output and not marker.exists()


def test_cli_json_estimate_and_exit_code(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = FakeNvml()
    real = watch_mod.watch
    monkeypatch.setattr(watch_mod, "watch", lambda cmd, interval: real(cmd, interval, nvml=fake, popen=_popen(fake)))
    out = tmp_path / "w.json"
    res = CliRunner().invoke(cli, ["watch", "--interval", "0.02", "--json", str(out), "--model", "llama-3-8b",
                                   "--gpu", "h100", "--", *CHILD], terminal_width=80)
    assert res.exit_code == 3, res.output
    data = WatchResult.model_validate_json(out.read_text())
    assert data.peak_job_gib == 9.5 and data.estimate is not None and data.estimate["model"] == "llama-3-8b"
    assert "exit status 3" in res.output and "9.50 measured" in res.output
    assert max(len(line) for line in res.output.splitlines()) <= 80
    jsonschema = pytest.importorskip("jsonschema")
    from planner.cli.schemas import schema

    jsonschema.Draft202012Validator(schema("watch")).validate(json.loads(out.read_text()))
