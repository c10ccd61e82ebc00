"""Instance catalogue, user price overrides, ``plan_instances`` and ``loraplan instances``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from planner import load_instances, plan_instances
from planner.catalog import load_gpu
from planner.cli import cli
from planner.errors import PlannerError
from planner.recommender.catalogue import ENV_VAR

if "instances" not in cli.commands:  # cli._register() skips everything while planner.cli.probe is missing
    from planner.cli.recommend import instances as _instances_cmd
    from planner.cli.recommend import recommend as _recommend_cmd

    cli.add_command(_recommend_cmd)
    cli.add_command(_instances_cmd)


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, list(args), env=env)


def test_catalogue_is_dated_and_sourced() -> None:
    instances = load_instances()
    assert len(instances) >= 20
    assert {i.provider for i in instances} >= {"aws", "gcp", "azure", "lambda", "runpod"}
    for inst in instances:
        assert inst.date and inst.source and inst.price_per_hour > 0
        assert load_gpu(inst.gpu).memory_gib == pytest.approx(inst.gpu_memory_gib, abs=0.5)


def test_user_file_overrides_and_adds(tmp_path: Path, monkeypatch) -> None:
    first = load_instances()[0]
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"instances": [
        {"provider": first.provider, "instance": first.instance, "price_per_hour": 0.01, "date": "2030-01-01"},
        {"provider": "mycloud", "instance": "box-4090", "gpu": "RTX 4090", "gpus": 1, "gpu_memory_gib": 23.99,
         "price_per_hour": 0.2, "region": "home", "date": "2030-01-01", "source": "my invoice"},
    ]}))
    merged = {(i.provider, i.instance): i for i in load_instances(prices)}
    changed = merged[(first.provider, first.instance)]
    assert changed.price_per_hour == 0.01 and changed.date == "2030-01-01" and changed.gpu == first.gpu
    assert "user price file" in changed.source
    assert merged[("mycloud", "box-4090")].source == "my invoice"
    # The environment variable works the same way.
    monkeypatch.setenv(ENV_VAR, str(prices))
    assert ("mycloud", "box-4090") in {(i.provider, i.instance) for i in load_instances()}


def test_bad_user_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"instances": [{"provider": "x", "instance": "y", "price_per_hour": 1}]}))
    with pytest.raises(PlannerError, match="instance x/y"):
        load_instances(bad)
    with pytest.raises(PlannerError, match="does not exist"):
        load_instances(tmp_path / "missing.json")


def test_sorted_by_cost_with_fastest_marked() -> None:
    report = plan_instances("llama-3-8b", dataset_tokens=2e7)
    fitting = [r for r in report.instances if r.fits]
    assert fitting and all(r.plan is not None and r.hours and r.cost for r in fitting)
    costs = [r.cost for r in fitting]
    assert costs == sorted(costs) or all(  # ties in rounding only
        a <= b + 0.01 for a, b in zip(costs, costs[1:])
    )
    assert sum(r.fastest for r in report.instances) == 1
    fastest = next(r for r in report.instances if r.fastest)
    assert fastest.hours == min(r.hours for r in fitting)
    for r in fitting:
        assert r.cost == pytest.approx(r.hours * r.price_per_hour, abs=0.01)
    # Non-fitting instances come last.
    flags = [r.fits for r in report.instances]
    assert flags == sorted(flags, reverse=True)


def test_multi_gpu_instances_use_every_gpu() -> None:
    report = plan_instances("llama-3-8b", dataset_tokens=2e7)
    multi = [r for r in report.instances if r.gpus > 1 and r.fits]
    single = {r.gpu: r for r in report.instances if r.gpus == 1 and r.fits}
    assert multi
    for r in multi:
        assert r.plan.parallel is not None and r.plan.parallel.world_size == r.gpus
        assert "scaling efficiency" in r.note
        if r.gpu in single:  # faster than one GPU; about linearly at best (sharded optimizer steps, other plans)
            assert single[r.gpu].hours / r.gpus * 0.9 <= r.hours < single[r.gpu].hours


def test_filters() -> None:
    report = plan_instances("llama-3-8b", dataset_tokens=2e7, providers=["aws"], max_price_per_hour=5)
    assert report.instances and all(r.provider == "aws" and r.price_per_hour <= 5 for r in report.instances)
    with pytest.raises(PlannerError, match="unknown provider"):
        plan_instances("llama-3-8b", providers=["nope"])


def test_big_model_fits_only_on_big_gpus() -> None:
    report = plan_instances("llama-3-70b", dataset_tokens=5e6)
    for r in report.instances:
        if r.fits:  # per-GPU memory, or enough of them to shard the 4-bit base (~40 GB)
            assert load_gpu(r.gpu).memory_gib * r.gpus > 40


def test_cli_json_contract() -> None:
    res = run("instances", "llama-3-8b", "--dataset-tokens", "20M", "--provider", "aws,gcp", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    rows = data["instances"]
    assert rows
    for row in rows:
        assert {"provider", "instance", "gpu", "gpus", "price_per_hour", "fits", "plan", "hours", "cost"} <= set(row)
        assert row["provider"] in {"aws", "gcp"}
    costs = [r["cost"] for r in rows if r["fits"]]
    assert costs == sorted(costs)


def test_cli_text_and_price_file(tmp_path: Path) -> None:
    prices = tmp_path / "p.json"
    prices.write_text(json.dumps({"instances": [
        {"provider": "mycloud", "instance": "cheap-4090", "gpu": "RTX 4090", "gpus": 1, "gpu_memory_gib": 23.99,
         "price_per_hour": 0.01, "region": "home", "date": "2030-01-01", "source": "test"}]}))
    res = run("instances", "llama-3-8b", "--dataset-tokens", "2e7", "--prices", str(prices), env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "cheap-4090" in res.output and "fastest" in res.output
    res = run("instances", "llama-3-8b", "--dataset-tokens", "2e7", "--json", env={ENV_VAR: str(prices)})
    assert json.loads(res.output)["instances"][0]["instance"] == "cheap-4090"


def test_cli_bad_provider_exits_2() -> None:
    res = run("instances", "llama-3-8b", "--provider", "nope")
    assert res.exit_code == 2
    assert len([x for x in res.output.splitlines() if x.strip()]) == 1
