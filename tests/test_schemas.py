"""The shipped JSON Schemas (``profiles/schemas``): regenerated they are unchanged, and real outputs validate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from planner.cli import schemas
from planner.cli import cli

jsonschema = pytest.importorskip("jsonschema")


def run_json(*args: str) -> dict:
    res = CliRunner().invoke(cli, list(args))
    assert res.exit_code in (0, 1), res.output
    return json.loads(res.output)


def _validator(name: str):
    schema = json.loads((schemas.schema_dir() / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("name", sorted(schemas.COMMANDS))
def test_shipped_schema_is_current(name: str) -> None:
    path = schemas.schema_dir() / f"{name}.schema.json"
    assert path.is_file(), f"missing {path}: python -m planner.cli.schemas --write"
    assert path.read_text() == schemas.render(name), f"{path.name} is stale: python -m planner.cli.schemas --write"


def test_no_stray_schema_files() -> None:
    assert sorted(p.name for p in schemas.schema_dir().glob("*.json")) == sorted(
        f"{n}.schema.json" for n in schemas.COMMANDS)


def test_check_command(tmp_path: Path) -> None:
    assert schemas.main([]) == 0


OUTPUTS = {
    "estimate": [
        ("estimate", "llama-3-8b", "--gpu", "4090", "--json"),
        ("estimate", "llama-3-70b", "--gpu", "4090", "--explain", "--json"),
        ("estimate", "mixtral-8x7b", "--method", "qlora", "--optim", "paged-adamw-8bit", "--json"),
    ],
    "recommend": [
        ("recommend", "llama-3-8b", "--gpu", "4090", "--dataset-tokens", "20M", "--json"),
        ("recommend", "llama-3-70b", "--gpu", "4090", "--json"),
    ],
    "instances": [("instances", "llama-3-8b", "--dataset-tokens", "20M", "--provider", "aws,lambda", "--json")],
    "sweep": [
        ("sweep", "llama-3-8b", "--gpu", "4090", "--seq-len", "512:8192", "--method", "lora,qlora", "--json"),
        ("sweep", "gpt2", "--rank", "8,16", "--micro-batch", "1:4", "--json"),
    ],
    "serve": [
        ("serve", "llama-3-8b", "--gpu", "4090", "--adapters", "4", "--json"),
        ("serve", "llama-3.1-8b", "--gpu", "3090", "--engine", "vllm", "--context", "20000", "--json"),
        ("serve", "gemma-2-9b", "--quant", "gptq", "--dtype", "fp16", "--json"),
    ],
}


@pytest.mark.parametrize(("name", "args"), [(n, a) for n, cases in OUTPUTS.items() for a in cases])
def test_outputs_validate(name: str, args: tuple[str, ...]) -> None:
    errors = list(_validator(name).iter_errors(run_json(*args)))
    assert not errors, "; ".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:5])


def test_schema_rejects_a_wrong_output() -> None:
    data = run_json("estimate", "llama-3-8b", "--json")
    data["peak_gib"]["device"] = "a lot"
    assert list(_validator("estimate").iter_errors(data))
    data = run_json("estimate", "llama-3-8b", "--json")
    data["surprise"] = 1
    assert list(_validator("estimate").iter_errors(data))


def test_probe_schemas_validate_their_models() -> None:
    """Probe outputs need torch to produce; a result built from the models validates (trace tests run the real one)."""
    from probes.results import Environment, GpuInfo, MeasuredGiB, ProbeResult

    result = ProbeResult(model="gpt2", mode="trace", estimate=run_json("estimate", "gpt2", "--json"),
                         measured_gib=MeasuredGiB(peak_allocated=1.0), environment=Environment(command=["loraplan", "probe"]),
                         fits=True)
    assert not list(_validator("probe").iter_errors(result.model_dump(mode="json")))
    detect = {"gpus": [GpuInfo(index=0, name="H100", total_gib=79.2, compute_capability="9.0", bf16=True)
                       .model_dump(mode="json")]}
    assert not list(_validator("probe-detect").iter_errors(detect))


@pytest.mark.trace
def test_real_trace_probe_validates(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from tests.test_probe_cli import TINY

    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY))
    data = run_json("probe", str(config), "--trace", "--json", "--seq-len", "32", "--rank", "4")
    errors = list(_validator("probe").iter_errors(data))
    assert not errors, "; ".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:5])
    assert not list(_validator("estimate").iter_errors(data["estimate"]))
