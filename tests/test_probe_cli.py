"""``loraplan probe``: no GPU -> exit 1 pointing to --trace; the --trace JSON contract; --save."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from planner.cli import cli
from tests.conftest import needs_torch_stack

pytestmark = needs_torch_stack

TINY = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256, "max_position_embeddings": 256,
        "tie_word_embeddings": False, "rms_norm_eps": 1e-5}


@pytest.fixture()
def no_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("probes.detect._nvml", lambda: None)


@pytest.fixture()
def tiny_config(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(TINY))
    return str(path)


def test_probe_without_gpu_exits_1_pointing_to_trace(no_gpu) -> None:
    res = CliRunner().invoke(cli, ["probe", "llama-3.2-1b"])
    assert res.exit_code == 1, res.output
    assert "no CUDA GPU" in res.output and "--trace" in res.output
    assert "Traceback" not in res.output


def test_detect_without_gpu_exits_1(no_gpu) -> None:
    res = CliRunner().invoke(cli, ["probe", "--detect"])
    assert res.exit_code == 1 and "--trace" in res.output


@needs_torch_stack
def test_detect_json_without_gpu_prints_an_empty_list(no_gpu) -> None:
    res = CliRunner().invoke(cli, ["probe", "--detect", "--json"])
    assert res.exit_code == 1
    data = json.loads(res.stdout)
    assert data["gpus"] == [] and "--trace" in data["error"]


def test_unwritable_save_fails_before_probing(tmp_path, monkeypatch) -> None:
    import probes.run

    monkeypatch.setattr(probes.run, "run_trace_probe", lambda *a, **k: pytest.fail("probed before checking --save"))
    for target in (tmp_path / "missing" / "x.json", tmp_path):
        res = CliRunner().invoke(cli, ["probe", "qwen2.5-0.5b", "--trace", "--save", str(target)])
        assert res.exit_code == 2, res.output
        assert res.output.count("error") == 1 and ("cannot write" in res.output or "is a directory" in res.output)


def test_missing_model_is_a_usage_error() -> None:
    res = CliRunner().invoke(cli, ["probe", "--trace"])
    assert res.exit_code == 2 and "MODEL" in res.output


@pytest.mark.trace
def test_trace_json_contract_and_save(tiny_config, tmp_path) -> None:
    save = tmp_path / "probe.json"
    args = ["probe", tiny_config, "--trace", "--json", "--seq-len", "32", "--rank", "4", "--save", str(save)]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["mode"] == "trace" and data["fits"] is True and data["failed_phase"] is None
    assert set(data["measured_gib"]) == {"after_load", "peak_allocated", "peak_reserved", "device"}
    assert data["measured_gib"]["peak_reserved"] is None and data["measured_gib"]["device"] is None
    assert data["measured_gib"]["peak_allocated"] > data["measured_gib"]["after_load"] > 0
    assert data["tokens_per_s"] is None
    est = data["estimate"]["peak_gib"]["allocated"]
    measured = data["measured_gib"]["peak_allocated"]
    assert data["error_pct"]["allocated"] == pytest.approx((est - measured) / measured * 100, rel=1e-3)
    assert data["error_pct"]["reserved"] is None
    env = data["environment"]
    assert env["torch"] and env["transformers"] and env["peft"] and isinstance(env["command"], list)
    assert data["trace"]["peak_phase"] in {"forward", "backward", "optimizer"}
    assert any("autocast" in note for note in data["trace"]["emulated"])
    assert json.loads(save.read_text()) == data


@pytest.mark.trace
def test_trace_table_output(tiny_config) -> None:
    res = CliRunner().invoke(cli, ["probe", tiny_config, "--trace", "--method", "qlora", "--seq-len", "32"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.stdout.split())
    assert "estimate vs measured" in text and "peak allocated" in text
    assert "NF4 emulated" in text


@pytest.mark.trace
def test_trace_find_max_batch_needs_a_gpu_profile(tiny_config) -> None:
    res = CliRunner().invoke(cli, ["probe", tiny_config, "--trace", "--find-max-batch"])
    assert res.exit_code == 2 and "--gpu" in res.output


def test_render_gpu_result_and_detected_gpus() -> None:
    from rich.console import Console

    from planner.calibration import Calibration
    from planner.cli.render.probe import render_gpus, render_result
    from probes.results import ComponentRow, Environment, GpuDetail, GpuInfo, MaxBatch, MeasuredGiB, ProbeResult

    console = Console(record=True, width=140)
    render_gpus([GpuInfo(index=0, name="NVIDIA H100 80GB HBM3", total_gib=79.6, free_gib=79.0,
                         compute_capability="9.0", bf16=True, driver="570.1", cuda="12.8", other_processes_gib=0.0,
                         source="nvml", profile="H100 SXM")], console)
    result = ProbeResult(
        model="llama-3-8b", mode="gpu", measured_gib=MeasuredGiB(after_load=15.1, peak_allocated=18.9,
                                                                 peak_reserved=19.5, device=20.1),
        tokens_per_s=9876.0, environment=Environment(gpu="NVIDIA H100 80GB HBM3"), fits=True,
        components=[ComponentRow(name="peak allocated", estimate_gib=18.9, measured_gib=18.8)],
        calibration=Calibration(gpu="NVIDIA H100 80GB HBM3", cuda_context_gib=0.5, allocator_reserve_gib=0.6,
                                allocator_reserve_fraction=0.03),
        gpu=GpuDetail(steps=2, step_seconds=[0.41, 0.40]), max_batch=MaxBatch(measured=6, estimated=5),
    )
    render_result(result, console)
    text = " ".join(console.export_text().split())
    assert "H100 SXM" in text and "9,876 tokens/s" in text and "+0.5%" in text
    assert "measured 6, estimator 5" in text and "CUDA context 0.50 GiB" in text


def test_render_out_of_memory_result() -> None:
    from rich.console import Console

    from planner.cli.render.probe import render_result
    from probes.results import Environment, MeasuredGiB, ProbeResult

    console = Console(record=True, width=140)
    render_result(ProbeResult(model="m", mode="gpu", measured_gib=MeasuredGiB(), environment=Environment(),
                              fits=False, failed_phase="backward", error="OutOfMemoryError: CUDA out of memory"),
                  console)
    assert "does not fit: out of memory in backward" in " ".join(console.export_text().split())
