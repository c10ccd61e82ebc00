"""``recommend``: the search, the quality rules, the plans, the CLI contract, and the search speed."""

from __future__ import annotations

import ast
import json

import pytest
from click.testing import CliRunner

from planner import recommend
from planner.catalog import load_gpu, load_model
from planner.cli import cli
from planner.estimator import estimate, usable_gib
from planner.recommender.request import Request, make_request
from planner.recommender.search import Search, select
from planner.recommender.rules import Task, learning_rate, recommended_rank
from planner.specs import Method, Optim

if "recommend" not in cli.commands:  # cli._register() skips everything while planner.cli.probe is missing
    from planner.cli.recommend import instances as _instances_cmd
    from planner.cli.recommend import recommend as _recommend_cmd

    cli.add_command(_recommend_cmd)
    cli.add_command(_instances_cmd)


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


# --------------------------------------------------------------------------- search


def test_llama3_8b_on_4090() -> None:
    rec = recommend("llama-3-8b", "4090", dataset_tokens=20e6)
    assert rec.reason is None and len(rec.plans) == 3
    best = rec.plans[0]
    assert best.method is Method.LORA and best.targets == "all-linear"  # 16-bit LoRA fits: it comes first
    assert best.peak_gib.device <= rec.gpu.budget_gib
    assert best.micro_batch * best.grad_accum == 16
    assert best.hours == pytest.approx(20e6 * 3 / best.tokens_per_s / 3600, rel=1e-3)
    assert best.learning_rate == pytest.approx(2e-4)
    # Every plan really fits according to the estimator.
    for plan in rec.plans:
        assert plan.peak_gib.device <= rec.gpu.budget_gib


def test_plans_fit_and_the_next_micro_batch_does_not() -> None:
    rec = recommend("llama-3-8b", "4090", dataset_tokens=20e6, top=5)
    profile, gpu = load_model("llama-3-8b"), load_gpu("4090")
    budget = usable_gib(gpu) * 0.9
    for plan in rec.plans:
        if plan.micro_batch == 16:
            continue
        nxt = next(d for d in range(plan.micro_batch + 1, 17) if 16 % d == 0)
        from planner.specs import TrainSpec

        spec = TrainSpec(method=plan.method, rank=plan.rank, alpha=plan.alpha, targets=(plan.targets,),
                         lora_dropout=plan.lora_dropout, micro_batch=nxt, seq_len=plan.seq_len,
                         grad_accum=16 // nxt, grad_ckpt=plan.grad_ckpt, optim=Optim.PAGED_ADAMW_8BIT)
        assert estimate(profile, spec, gpu).peak_gib.device > budget


def test_qlora_when_16bit_lora_does_not_fit() -> None:
    rec = recommend("llama-3-70b", "a100-80gb", dataset_tokens=5e6)
    assert rec.plans and rec.plans[0].method is Method.QLORA
    assert rec.plans[0].targets == "all-linear"
    assert "16-bit LoRA does not fit" in rec.plans[0].reasons[0]
    assert rec.plans[0].learning_rate == pytest.approx(1e-4)  # >13B: half the 7B rate (QLoRA scripts)
    assert "bnb_4bit_quant_type=\"nf4\"" in rec.plans[0].code.bnb_config


def test_all_linear_ranks_above_faster_attention_only() -> None:
    rec = recommend("llama-3-8b", "4090", dataset_tokens=20e6, top=10)
    tiers = [("all-linear", "attn", "qv").index(p.targets) for p in rec.plans]
    assert tiers == sorted(tiers)


def test_nothing_fits_is_an_answer_with_alternatives() -> None:
    rec = recommend("llama-3-70b", "4090", dataset_tokens=20e6)
    assert rec.plans == ()
    assert "nothing fits RTX 4090" in rec.reason
    alts = rec.alternatives
    assert alts and alts.gpus and alts.instances
    assert all(g.memory_gib > 40 for g in alts.gpus)
    sizes = [g.memory_gib for g in alts.gpus]
    assert sizes == sorted(sizes)


def test_larger_gpu_is_not_slower() -> None:
    small = recommend("llama-3.1-8b", "4090", dataset_tokens=1e7).plans[0]
    big = recommend("llama-3.1-8b", "h100-sxm", dataset_tokens=1e7).plans[0]
    assert big.hours < small.hours


def test_without_dataset_size_hours_are_null() -> None:
    rec = recommend("qwen2.5-1.5b", "4090")
    assert rec.plans and all(p.hours is None and p.tokens_per_s > 0 for p in rec.plans)
    assert any("dataset size not given" in a for a in rec.assumptions)


def test_examples_and_avg_tokens() -> None:
    rec = recommend("qwen2.5-1.5b", "4090", examples=10_000, avg_tokens=500, seq_len=1024)
    assert rec.dataset.tokens == 5_000_000
    assert rec.plans[0].seq_len == 1024  # memory sized for max_length
    assert rec.plans[0].time.tokens_per_s > 0


def test_no_bf16_gpu_uses_fp16() -> None:
    rec = recommend("qwen2.5-0.5b", "t4", dataset_tokens=1e6)
    plan = rec.plans[0]
    assert plan.dtype.value == "fp16"
    assert "fp16=True" in plan.code.sft_config and "bf16=False" in plan.code.sft_config


def test_full_method_on_request() -> None:
    rec = recommend("qwen2.5-0.5b", "a100-80gb", dataset_tokens=1e7, methods=["full"])
    plan = rec.plans[0]
    assert plan.method is Method.FULL and plan.rank is None and plan.targets is None
    assert plan.learning_rate == pytest.approx(2e-5)
    assert plan.code.lora_config is None and "LoraConfig" not in plan.code.python


def test_bad_input_is_a_planner_error() -> None:
    from planner.errors import PlannerError

    with pytest.raises(PlannerError):
        make_request(dataset_tokens=1e6, examples=10, avg_tokens=5)
    with pytest.raises(PlannerError):
        make_request(examples=10)
    with pytest.raises(PlannerError):
        make_request(headroom=1.5)


def test_recommend_needs_a_gpu() -> None:
    """Detection is the CLI's job: the API takes a GPU name or profile."""
    from planner.errors import PlannerError

    with pytest.raises(PlannerError, match="recommend needs a GPU"):
        recommend("gpt2", None)  # type: ignore[arg-type]
    assert recommend("gpt2", load_gpu("4090"), dataset_tokens=1e6, gpu_detected=True).gpu.detected
    assert not recommend("gpt2", "4090", dataset_tokens=1e6).gpu.detected


def test_cli_without_gpu_and_no_detected_gpu_is_a_clear_error(monkeypatch) -> None:
    from planner.cli import gpu as G
    from planner.errors import PlannerError

    def no_gpu():
        raise PlannerError("no --gpu given and no GPU detected; pass --gpu (e.g. --gpu 4090)")

    monkeypatch.setattr(G, "detect_gpu_profile", no_gpu)
    res = run("recommend", "gpt2")
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "no GPU detected" in lines[0]


# --------------------------------------------------------------------------- rules and code


def test_rank_grows_with_dataset_and_task() -> None:
    assert recommended_rank(None, Task.CHAT)[0] == 16
    assert recommended_rank(1e6, Task.CHAT)[0] == 8
    assert recommended_rank(1e9, Task.CHAT)[0] == 128
    assert recommended_rank(1e7, Task.MATH)[0] > recommended_rank(1e7, Task.CHAT)[0]
    assert recommended_rank(1e7, Task.CLASSIFICATION)[0] < recommended_rank(1e7, Task.CHAT)[0]


def test_lora_learning_rate_is_ten_times_full() -> None:
    assert learning_rate(Method.LORA, 8.0)[0] == pytest.approx(10 * learning_rate(Method.FULL, 8.0)[0])
    assert "LoRA Without Regret" in learning_rate(Method.LORA, 8.0)[1]


def test_every_reason_cites_or_quantifies() -> None:
    plan = recommend("llama-3-8b", "4090", dataset_tokens=20e6).plans[0]
    text = " ".join(plan.reasons)
    for source in ("QLoRA", "LoRA Without Regret", "Alpaca"):
        assert source in text


def test_snippets_are_valid_python_with_current_option_names() -> None:
    for model, gpu in (("llama-3-8b", "4090"), ("llama-3-70b", "a100-80gb")):
        plan = recommend(model, gpu, dataset_tokens=20e6).plans[0]
        ast.parse(plan.code.python)
        sft = plan.code.sft_config
        assert "max_length=" in sft and "warmup_steps=0.03" in sft and 'lr_scheduler_type="cosine"' in sft
        assert f"per_device_train_batch_size={plan.micro_batch}," in sft
        assert f"gradient_accumulation_steps={plan.grad_accum}," in sft
        assert 'task_type="CAUSAL_LM"' in plan.code.lora_config
        assert f"r={plan.rank}," in plan.code.lora_config


def test_optimizer_names_are_transformers_optimizer_names() -> None:
    pytest.importorskip("transformers")
    from transformers.training_args import OptimizerNames

    from planner.stack.optimizers import optimizer_table

    valid = {o.value for o in OptimizerNames}
    assert {row.trainer_name for row in optimizer_table().values()} <= valid


# --------------------------------------------------------------------------- CLI


def test_cli_json_contract() -> None:
    res = run("recommend", "llama-3-8b", "--gpu", "4090", "--dataset-tokens", "20000000", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert {"model", "gpu", "plans", "reason"} <= set(data)
    assert data["model"] == "llama-3-8b" and data["reason"] is None
    assert isinstance(data["gpu"], dict) and data["gpu"]["name"] == "RTX 4090"
    keys = {"method", "rank", "alpha", "targets", "micro_batch", "grad_accum", "grad_ckpt", "optim",
            "learning_rate", "peak_gib", "tokens_per_s", "hours", "reasons"}
    for plan in data["plans"]:
        assert keys <= set(plan)
        assert set(plan["peak_gib"]) == {"allocated", "reserved", "device"}
        assert isinstance(plan["reasons"], list) and plan["reasons"]


def test_cli_nothing_fits_exits_0() -> None:
    res = run("recommend", "llama-3-70b", "--gpu", "4090", "--dataset-tokens", "20M", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["plans"] == [] and isinstance(data["reason"], str) and data["reason"]
    assert data["alternatives"]["gpus"] and data["alternatives"]["instances"]


def test_cli_text_output() -> None:
    res = run("recommend", "llama-3-8b", "--gpu", "4090", "--dataset-tokens", "2e7")
    assert res.exit_code == 0, res.output
    assert "Plan 1" in res.output and "LoraConfig(" in res.output and "tokens/s" in res.output


@pytest.mark.parametrize(
    "args",
    [
        ("recommend", "no-such-model", "--gpu", "4090"),
        ("recommend", "llama-3-8b", "--gpu", "no-such-gpu"),
        ("recommend", "llama-3-8b", "--gpu", "4090", "--examples", "100"),
        ("recommend", "llama-3-8b", "--gpu", "4090", "--dataset-tokens", "lots"),
        ("recommend", "llama-3-8b", "--gpu", "4090", "--headroom", "2"),
        ("recommend", "llama-3-8b", "--gpu", "4090", "--task", "poetry"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(args) -> None:
    res = run(*args)
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error") and "Traceback" not in res.output


# --------------------------------------------------------------------------- speed


def _search_all() -> int:
    """One full search (no pruning by best-only), returning how many configurations it evaluated."""
    search = Search(load_model("llama-3-8b"), load_gpu("4090"), Request(dataset_tokens=2e7))
    select(search.run(32), 3)
    return search.evaluated


def test_search_speed(benchmark) -> None:
    """Configurations evaluated per second by the search (estimate + time model per configuration)."""
    evaluated = benchmark(_search_all)
    assert evaluated > 20
    if benchmark.stats is not None:  # None under --benchmark-disable
        per_second = evaluated / benchmark.stats.stats.mean
        benchmark.extra_info["configs_per_second"] = round(per_second)
        benchmark.extra_info["configs_per_search"] = evaluated


def test_recommend_end_to_end_speed(benchmark) -> None:
    rec = benchmark(recommend, "llama-3-8b", "4090", dataset_tokens=2e7)
    assert rec.plans


def test_cli_detects_the_local_gpu_via_the_probe_detector(monkeypatch) -> None:
    import sys
    import types

    from planner.cli.gpu import detect_gpu_profile

    fake = types.ModuleType("probes.detect")
    fake.detect_gpus = lambda: [types.SimpleNamespace(name="NVIDIA GeForce RTX 4090", profile="RTX 4090")]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "probes.detect", fake)
    import probes

    monkeypatch.setattr(probes, "detect", fake, raising=False)
    assert detect_gpu_profile().name == "RTX 4090"
    res = run("recommend", "gpt2", "--dataset-tokens", "1e6", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["gpu"]["detected"] is True and data["gpu"]["name"] == "RTX 4090"


def test_recommend_and_instances_stay_import_light() -> None:
    import subprocess
    import sys

    heavy = ("torch", "transformers", "peft", "bitsandbytes", "accelerate")
    code = (
        "import sys\nfrom planner import recommend, plan_instances\n"
        "recommend('llama-3-70b', '4090', dataset_tokens=1e6)\nplan_instances('llama-3-8b')\n"
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1:] in ([], [""])
