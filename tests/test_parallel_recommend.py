"""Multi-GPU ``recommend`` / ``instances``: GPU-count search, communication time, accelerate artefacts.

Closed-form checks of the communication volumes (ring collectives), the bus bandwidth (intra-node link vs
network per GPU), the search preferring fewer GPUs, per-GPU peaks, the accelerate config YAML (parsed with
PyYAML and loaded by accelerate's own ``ClusterConfig.from_yaml_file`` when installed), instances using
all their GPUs, and the bad inputs.
"""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from planner.catalog import load_gpu, load_model
from planner.cli import cli
from planner.errors import PlannerError
from planner.memory import states
from planner.memory.context import build_context
from planner.parallel.spec import ParallelSpec, Strategy
from planner.recommender import make_request, plan_instances, recommend
from planner.recommender.catalogue import load_instances
from planner.recommender.launch import accelerate_config, launch_command
from planner.recommender.counts import gpu_counts
from planner.recommender.parallel import parallel_spec
from planner.specs import DType, Method, TrainSpec
from planner.time import time_breakdown, utilization
from planner.time.comm import bus_bandwidth, comm_constants, data_parallel_time, volumes

FULL = TrainSpec(method=Method.FULL, micro_batch=1, grad_accum=2, seq_len=1024)


def _ctx(train: TrainSpec = FULL, model: str = "llama-3-8b"):
    return build_context(load_model(model).config, train)


# --------------------------------------------------------------------------- profiles


def test_every_gpu_has_an_interconnect_with_a_source() -> None:
    from planner.catalog import gpu_profiles

    for gpu in gpu_profiles():
        link = gpu.interconnect
        assert link is not None and link.source and link.date, gpu.name
        assert (link.kind == "nvlink") == ("NVLink" in link.generation)
    assert load_gpu("h100").interconnect.gb_per_s == 450.0  # 900 GB/s both directions
    assert load_gpu("a100-80gb").interconnect.gb_per_s == 300.0
    assert load_gpu("4090").interconnect.kind == "pcie"


def test_multi_gpu_instances_have_a_network_with_a_source() -> None:
    by_name = {i.instance: i for i in load_instances()}
    assert by_name["p4d.24xlarge"].network_gbps == 400 and by_name["p5.48xlarge"].network_gbps == 3200
    for inst in by_name.values():
        assert (inst.network_gbps is None) == (inst.network_source is None)


# --------------------------------------------------------------------------- communication model


@pytest.mark.parametrize("n", [2, 8])
def test_ring_volumes_per_strategy(n: int) -> None:
    ctx = _ctx()
    r = (n - 1) / n
    params = states.weight_bytes(ctx) + states.adapter_bytes(ctx)
    grads = states.gradient_bytes(ctx)
    ddp = volumes(ctx, ParallelSpec(strategy=Strategy.DDP, gpus=n))
    assert ddp.step_overlapped_bytes == pytest.approx(2 * r * grads) and ddp.micro_bytes == 0
    fsdp = volumes(ctx, ParallelSpec(strategy=Strategy.FSDP, gpus=n))
    assert fsdp.micro_bytes == pytest.approx(2 * r * params + r * grads)  # gather fwd + bwd, reduce-scatter
    grad_op = volumes(ctx, ParallelSpec(strategy=Strategy.FSDP_SHARD_GRAD_OP, gpus=n))
    assert grad_op.micro_bytes == pytest.approx(r * params + r * grads)
    z2 = volumes(ctx, ParallelSpec(strategy=Strategy.ZERO2, gpus=n))
    assert z2.micro_bytes == pytest.approx(r * grads) and z2.step_exposed_bytes > 0


def test_lora_reduces_only_adapter_grads_but_gathers_the_base() -> None:
    lora = _ctx(TrainSpec(micro_batch=1, seq_len=1024))
    ddp = volumes(lora, ParallelSpec(strategy=Strategy.DDP, gpus=8))
    fsdp = volumes(lora, ParallelSpec(strategy=Strategy.FSDP, gpus=8))
    assert ddp.step_overlapped_bytes < 0.03 * states.weight_bytes(lora)  # fp32 adapter grads only
    assert fsdp.micro_bytes > 1.5 * states.weight_bytes(lora)


def test_bus_is_the_slower_of_link_and_network_per_gpu() -> None:
    h100 = load_gpu("h100")
    eff = comm_constants()["bus_efficiency"]
    one_node, link = bus_bandwidth(h100, ParallelSpec(strategy=Strategy.FSDP, gpus=8), 3200)
    assert one_node == pytest.approx(450e9 * eff) and "NVLink" in link
    two_nodes, link = bus_bandwidth(h100, ParallelSpec(strategy=Strategy.FSDP, gpus=8, nodes=2), 3200)
    assert two_nodes == pytest.approx(3200 / 8 * 1e9 / 8 * eff) and link.startswith("network")


def test_step_is_compute_plus_exposed_comm_and_multi_node_scales_worse() -> None:
    model, gpu = load_model("llama-3-8b"), load_gpu("h100")
    single = time_breakdown(model.config, FULL, gpu, utilization(gpu, Method.FULL))
    ctx = _ctx()
    t8, c8 = data_parallel_time(ctx, ParallelSpec(strategy=Strategy.FSDP, gpus=8), gpu, single, 2, 3200)
    t16, c16 = data_parallel_time(ctx, ParallelSpec(strategy=Strategy.FSDP, gpus=8, nodes=2), gpu, single, 2, 400)
    assert 0 <= c8.exposed_comm_s <= c8.comm_s and 0 < c8.scaling_efficiency <= 1
    assert c16.scaling_efficiency < c8.scaling_efficiency
    assert t8.tokens_per_s == pytest.approx(8 * c8.tokens_per_s_per_gpu, rel=1e-3)
    assert t8.tokens_per_s < 8 * single.tokens_per_s * 1.2  # optimizer sharding helps a little, never 20%


# --------------------------------------------------------------------------- search


def test_gpu_counts_ladder() -> None:
    assert gpu_counts(1) == [1]
    assert gpu_counts(6) == [1, 2, 4]
    assert gpu_counts(16) == [1, 2, 4, 8, 16]
    assert gpu_counts(40) == [1, 2, 4, 8, 16, 24, 32, 40]
    assert parallel_spec(16, Strategy.FSDP).nodes == 2 and parallel_spec(4, Strategy.FSDP).gpus == 4


def test_single_gpu_request_is_unchanged() -> None:
    plain = recommend("llama-3-8b", "4090").model_dump(mode="json")
    explicit = recommend("llama-3-8b", "4090", gpus=1).model_dump(mode="json")
    assert plain == explicit
    assert all(p["parallel"] is None and p["accelerate_config_yaml"] is None for p in plain["plans"])


def test_max_gpus_finds_the_fewest_gpus_for_70b_full() -> None:
    rec = recommend("llama-3-70b", "h100", methods=["full"], max_gpus=16, examples=10000, avg_tokens=1024)
    assert rec.plans, rec.reason
    p = rec.plans[0]
    # 16 GPUs on 2 nodes: under accelerate's FSDP mixed precision the trainable params are fp32 (16 B/param of
    # states, 70 GiB per GPU on 16), as PEFT's FSDP guide says ("what took 16X80GB GPUs for full finetuning").
    assert p.parallel is not None and p.parallel.world_size == 16 and p.parallel.nodes == 2
    assert p.parallel.strategy in {s.value for s in (Strategy.FSDP, Strategy.FSDP2, Strategy.ZERO1, Strategy.ZERO2,
                                                       Strategy.ZERO3)}
    assert p.peak_gib.device <= rec.gpu.budget_gib  # per GPU
    assert p.micro_batch * p.grad_accum * p.parallel.world_size == 16
    assert p.comm is not None and p.launch_command.startswith("accelerate launch --config_file accelerate.yaml")
    on4 = recommend("llama-3-70b", "h100", methods=["full"], gpus=4, host_ram_gib=100)
    assert not on4.plans and "4 x H100 SXM" in on4.reason
    assert on4.alternatives.more_gpus.gpus == 16


def test_offload_only_when_nothing_else_fits_and_host_ram_allows() -> None:
    rec = recommend("llama-3-70b", "h100", methods=["full"], gpus=4, examples=10000, avg_tokens=1024)
    assert rec.plans and all(p.parallel.offload != "none" and p.host_gib > 100 for p in rec.plans)
    assert any("host RAM" in w for w in rec.plans[0].warnings)
    on8 = recommend("llama-3-8b", "h100", methods=["full"], gpus=8)
    assert on8.plans and all(p.parallel.offload == "none" for p in on8.plans)
    assert recommend("llama-3-70b", "h100", methods=["full"], gpus=4, host_ram_gib=100).plans == ()


def test_lora_fits_on_one_gpu_so_max_gpus_keeps_one() -> None:
    rec = recommend("llama-3-8b", "h100", max_gpus=8)
    assert rec.plans and rec.plans[0].parallel is None


def test_gpus_given_plans_on_all_of_them() -> None:
    rec = recommend("llama-3-8b", "h100", gpus=4, examples=10000, avg_tokens=1024)
    assert rec.plans and all(p.parallel.world_size == 4 for p in rec.plans)
    assert rec.plans[0].parallel.strategy in ("ddp", "fsdp", "zero2", "zero3")
    single = recommend("llama-3-8b", "h100", examples=10000, avg_tokens=1024)
    assert rec.plans[0].hours < single.plans[0].hours


@pytest.mark.parametrize("kw, text", [
    ({"gpus": 0}, "--gpus"), ({"gpus": 9}, "more GPUs than one node has"), ({"max_gpus": 0}, "--max-gpus"),
    ({"gpus": 4, "max_gpus": 2}, "fewer than --gpus"),
])
def test_bad_gpu_counts(kw: dict, text: str) -> None:
    with pytest.raises(PlannerError, match=text):
        make_request(**kw)


@pytest.mark.parametrize("argv", [["--gpus", "0"], ["--gpus", "9"], ["--max-gpus", "0"]])
def test_cli_bad_gpu_counts_exit_2(argv: list[str]) -> None:
    res = CliRunner().invoke(cli, ["recommend", "gpt2", "--gpu", "h100", *argv])
    assert res.exit_code == 2 and "Traceback" not in res.output


def test_recommend_speed_with_the_count_search() -> None:
    start = time.perf_counter()
    recommend("llama-3-70b", "h100", methods=["full"], max_gpus=16, examples=10000, avg_tokens=1024)
    assert time.perf_counter() - start < 2.0  # the benchmark (test_benchmark.py) reports the real number


# --------------------------------------------------------------------------- artefacts


def _parse(text: str) -> dict:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load(text)


@pytest.mark.parametrize("strategy", [s for s in Strategy if s is not Strategy.NONE])
@pytest.mark.parametrize("nodes", [1, 2])
def test_accelerate_config_parses_and_loads(strategy: Strategy, nodes: int, tmp_path) -> None:
    parallel = ParallelSpec(strategy=strategy, gpus=8, nodes=nodes)
    text = accelerate_config(parallel, grad_accum=2, grad_ckpt=True, dtype=DType.BF16)
    data = _parse(text)
    assert data["num_processes"] == 8 * nodes and data["num_machines"] == nodes
    assert data["mixed_precision"] == "bf16"
    if strategy.is_fsdp:
        fsdp = data["fsdp_config"]
        assert data["distributed_type"] == "FSDP" and fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
        assert fsdp["fsdp_version"] == (2 if strategy is Strategy.FSDP2 else 1)
    elif strategy.is_zero:
        assert data["distributed_type"] == "DEEPSPEED"
        assert data["deepspeed_config"]["zero_stage"] == int(strategy.value[-1])
        assert data["deepspeed_config"]["gradient_accumulation_steps"] == 2
    else:
        assert data["distributed_type"] == "MULTI_GPU"
    try:
        from accelerate.commands.config.config_args import ClusterConfig
    except ImportError:
        return
    path = tmp_path / "accelerate.yaml"
    path.write_text(text)
    loaded = ClusterConfig.from_yaml_file(str(path))  # rejects unknown keys
    assert loaded.num_processes == 8 * nodes
    assert str(loaded.distributed_type.value) == data["distributed_type"]
    # accelerate launch turns each fsdp_config / deepspeed_config entry into its own --option (accelerate
    # v1.16.0 commands/launch.py _validate_launch_command copies the config dicts onto the parsed args): an
    # entry that is not one of launch_command_parser's options would be set and never read.
    from accelerate.commands.launch import launch_command_parser

    options = {action.dest for action in launch_command_parser()._actions}
    for section in ("fsdp_config", "deepspeed_config"):
        unknown = set(data.get(section, {})) - options
        assert not unknown, f"{section}: {unknown} are not accelerate launch options"


def test_multi_node_launch_command() -> None:
    cmd = launch_command(ParallelSpec(strategy=Strategy.ZERO3, gpus=8, nodes=2))
    assert "--num_machines 2" in cmd and "--machine_rank" in cmd and "--main_process_ip" in cmd
    assert launch_command(ParallelSpec(strategy=Strategy.DDP, gpus=2)) == \
        "accelerate launch --config_file accelerate.yaml train.py"


def test_cli_json_and_text_show_the_artefacts() -> None:
    args = ["recommend", "llama-3-70b", "--method", "full", "--gpu", "h100", "--max-gpus", "16"]
    res = CliRunner().invoke(cli, args + ["--json"])
    assert res.exit_code == 0, res.output
    plan = json.loads(res.output)["plans"][0]
    assert plan["parallel"]["world_size"] == 16 and set(plan["parallel"]) == {
        "strategy", "gpus", "nodes", "world_size", "offload"}
    assert "distributed_type:" in plan["accelerate_config_yaml"]
    text = CliRunner().invoke(cli, args)
    assert text.exit_code == 0 and "accelerate launch --config_file accelerate.yaml" in text.output
    assert "scaling efficiency" in " ".join(text.output.split())  # rich may wrap between the words


# --------------------------------------------------------------------------- instances


def test_instances_use_all_gpus_and_bill_by_scaling() -> None:
    report = plan_instances("llama-3-70b", methods=["full"], examples=10000, avg_tokens=1024)
    fitting = [r for r in report.instances if r.fits]
    assert fitting and all(r.gpus == 8 for r in fitting)
    for r in fitting:
        assert r.plan.parallel is not None and r.plan.parallel.world_size == r.gpus
        assert r.cost == pytest.approx(r.hours * r.price_per_hour, abs=0.01)
        assert "counted as one" not in (r.note or "")
    single = plan_instances("llama-3-8b", dataset_tokens=2e7)
    for r in single.instances:
        if r.fits and r.gpus == 1:
            assert r.plan.parallel is None


def test_cli_gpus_default_to_the_detected_count(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types
    from types import SimpleNamespace

    fake = types.ModuleType("probes.detect")
    fake.detect_gpus = lambda: [SimpleNamespace(name="NVIDIA H100 80GB HBM3", profile="H100 SXM")] * 4  # type: ignore
    monkeypatch.setitem(sys.modules, "probes.detect", fake)
    res = CliRunner().invoke(cli, ["recommend", "llama-3-8b", "--dataset-tokens", "1M", "--json"])
    assert res.exit_code == 0, res.output
    plans = json.loads(res.output)["plans"]
    assert plans and all(p["parallel"]["world_size"] == 4 for p in plans)
    one = CliRunner().invoke(cli, ["recommend", "llama-3-8b", "--gpus", "1", "--dataset-tokens", "1M", "--json"])
    assert all(p["parallel"] is None for p in json.loads(one.output)["plans"])
