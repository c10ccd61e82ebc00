"""``loraplan estimate``: the JSON contract and bad input (one line, exit 2, no traceback)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from planner.catalog import raw_config
from planner.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_json_contract() -> None:
    res = run("estimate", "llama-3-8b", "--gpu", "4090", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["model"] == "llama-3-8b"
    assert data["method"] == "lora"
    assert data["params"] == {"total": 8_030_261_248, "trainable": 41_943_040}
    assert set(data["memory_gib"]) >= {"weights", "adapters", "gradients", "optimizer", "activations", "logits", "overhead"}
    assert set(data["peak_gib"]) >= {"allocated", "reserved", "device"}
    assert data["peak_gib"]["allocated"] <= data["peak_gib"]["reserved"] <= data["peak_gib"]["device"]
    assert data["gpu"]["name"] == "RTX 4090" and data["gpu"]["memory_gib"] > 23
    assert data["fits"] is True


def test_json_without_gpu_has_null_fits() -> None:
    data = json.loads(run("estimate", "llama-3.2-1b", "--json").output)
    assert data["gpu"] is None and data["fits"] is None


def test_table_output() -> None:
    res = run("estimate", "llama-3-8b", "--gpu", "4090")
    assert res.exit_code == 0
    assert "activations" in res.output and "fits" in res.output


def test_does_not_fit_gives_advice() -> None:
    res = run("estimate", "llama-3-70b", "--gpu", "4090", "--json")
    data = json.loads(res.output)
    assert data["fits"] is False
    assert data["advice"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("estimate", "llama-3-8bb"), "did you mean"),
        (("estimate", "llama-3-8b", "--gpu", "4091"), "did you mean"),
        (("estimate", "llama-3-8b", "--rank", "0"), "--rank"),
        (("estimate", "llama-3-8b", "--micro-batch", "-1"), "--micro-batch"),
        (("estimate", "llama-3-8b", "--seq-len", "0"), "--seq-len"),
        (("estimate", "llama-3-8b", "--alpha", "0"), "--alpha"),
        (("estimate", "llama-3-8b", "--targets", "c_attn"), "q_proj"),
        (("estimate", "llama-3-8b", "--method", "dpo"), "--method"),
    ],
)
def test_bad_input_is_one_line_exit_2(args: tuple[str, ...], needle: str) -> None:
    res = run(*args)
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.strip().splitlines() if line]
    assert len(lines) == 1, res.output
    assert needle in lines[0]
    assert "Traceback" not in res.output


def test_unknown_model_names_closest() -> None:
    res = run("estimate", "lama-3-8b")
    assert "llama-3-8b" in res.output


def test_seq_len_beyond_max_positions_warns() -> None:
    data = json.loads(run("estimate", "gpt2", "--seq-len", "4096", "--json").output)
    assert any("max_position_embeddings" in w for w in data["warnings"])


def test_local_config_file_and_folder(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(raw_config("llama-3.2-1b")))
    for target in (tmp_path, tmp_path / "config.json"):
        data = json.loads(run("estimate", str(target), "--json").output)
        assert data["params"]["total"] == 1_235_814_400


def test_malformed_config_names_missing_field(tmp_path: Path) -> None:
    raw = dict(raw_config("llama-3.2-1b"))
    del raw["intermediate_size"]
    (tmp_path / "config.json").write_text(json.dumps(raw))
    res = run("estimate", str(tmp_path / "config.json"))
    assert res.exit_code == 2
    assert "intermediate_size" in res.output


def test_hub_id_offline_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    res = run("estimate", "someorg/some-model-that-is-not-shipped")
    assert res.exit_code == 2
    assert "could not fetch config.json" in res.output


def test_hub_id_of_shipped_profile_resolves_offline() -> None:
    data = json.loads(run("estimate", "meta-llama/Meta-Llama-3-8B", "--json").output)
    assert data["model"] == "llama-3-8b"


def test_calibration_file(tmp_path: Path) -> None:
    cal = tmp_path / "probe.json"
    cal.write_text(json.dumps({"calibration": {"gpu": "RTX 4090", "cuda_context_gib": 1.0, "allocator_reserve_fraction": 0.1}}))
    base = json.loads(run("estimate", "llama-3-8b", "--gpu", "4090", "--json").output)
    calibrated = json.loads(run("estimate", "llama-3-8b", "--gpu", "4090", "--calibrate", str(cal), "--json").output)
    alloc = calibrated["peak_gib"]["allocated"]
    assert calibrated["peak_gib"]["reserved"] == pytest.approx(alloc * 1.1, rel=1e-3)
    assert calibrated["peak_gib"]["device"] == pytest.approx(alloc * 1.1 + 1.0, rel=1e-3)
    assert base["peak_gib"]["allocated"] == pytest.approx(alloc)


def test_hub_id_uses_cached_config_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub

    cached = tmp_path / "config.json"
    cached.write_text(json.dumps(raw_config("qwen2.5-0.5b")))
    calls = []

    def from_cache(repo_id, filename, local_files_only=False, **kwargs):
        calls.append(local_files_only)
        assert local_files_only, "a cached config must not trigger a download"
        return str(cached)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", from_cache)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = json.loads(run("estimate", "someorg/cached-model", "--json").output)
    assert data["model"] == "someorg/cached-model"
    assert data["params"]["total"] == 494_032_768
    assert calls == [True]


# --------------------------------------------------------------------------- GPU detection (the CLI's job)


def _fake_detector(monkeypatch: pytest.MonkeyPatch, detect_gpus) -> None:
    import sys
    import types

    fake = types.ModuleType("probes.detect")
    fake.detect_gpus = detect_gpus  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "probes.detect", fake)


def _device(name: str, profile: str | None):
    from types import SimpleNamespace

    return SimpleNamespace(name=name, profile=profile)


def test_detect_gpu_profile_reads_the_probe_detector(monkeypatch: pytest.MonkeyPatch) -> None:
    from planner.cli.gpu import detect_gpu_profile

    _fake_detector(monkeypatch, lambda: [_device("NVIDIA GeForce RTX 4090", "RTX 4090"), _device("other", None)])
    assert detect_gpu_profile().name == "RTX 4090"


def test_recommend_without_gpu_uses_the_detected_one(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_detector(monkeypatch, lambda: [_device("NVIDIA GeForce RTX 4090", "RTX 4090")])
    data = json.loads(run("recommend", "gpt2", "--dataset-tokens", "1M", "--json").output)
    assert data["gpu"]["name"] == "RTX 4090" and data["gpu"]["detected"] is True
    assert "(detected)" in run("recommend", "gpt2", "--dataset-tokens", "1M", "--no-code").output
    assert json.loads(run("recommend", "gpt2", "--gpu", "4090", "--json").output)["gpu"]["detected"] is False


def _raise() -> list:
    raise RuntimeError("NVML: driver not loaded")


@pytest.mark.parametrize(("detected", "needle"), [
    (lambda: [], "no GPU detected"),
    (_raise, "no GPU detected"),
    (lambda: [_device("NVIDIA Mystery 9000", None)], "has no shipped profile"),
])
def test_recommend_without_a_usable_gpu_is_one_line_exit_2(monkeypatch: pytest.MonkeyPatch, detected, needle) -> None:
    _fake_detector(monkeypatch, detected)
    res = run("recommend", "gpt2")
    assert res.exit_code == 2
    assert [line for line in res.output.splitlines() if line] == [res.output.strip()]
    assert needle in res.output and "--gpu" in res.output


# --------------------------------------------------------------------------- one way to print


def _calls(package: Path, attribute: str, owner: str) -> list[str]:
    import ast

    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            base = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else None
            if name == attribute and base in (owner, None):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_json_is_printed_in_one_place() -> None:
    """Every ``--json`` (and ``probe --save``) goes through :mod:`planner.cli.output`."""
    found = _calls(ROOT / "planner" / "cli", "dumps", "json") + _calls(ROOT / "probes", "dumps", "json")
    assert [f for f in found if not f.startswith("planner/cli/output.py")] == []


def test_every_renderer_uses_the_console_factory() -> None:
    found = _calls(ROOT / "planner" / "cli", "Console", "rich")
    assert [f for f in found if not f.startswith("planner/cli/render/console.py")] == []


def test_the_group_has_every_command() -> None:
    assert sorted(cli.commands) == ["estimate", "instances", "probe", "recommend", "serve", "sweep", "watch"]
