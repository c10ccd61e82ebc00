"""Multi-GPU per-GPU ledgers (:mod:`planner.parallel`): each strategy divides the state as its engine does.

Closed-form checks: with ``N`` ranks, ZeRO-1 divides optimizer state, ZeRO-2 also gradients, ZeRO-3 /
FSDP also parameters; DDP replicates and adds its bucket copy of the gradients; offload moves the state
to host RAM (``host_gib``); single-GPU output is unchanged (the golden corpus checks the bytes).
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from planner.cli import cli
from planner.errors import PlannerError
from planner.estimator import estimate
from planner.parallel.shard import engine_defaults
from planner.parallel.spec import Offload, ParallelSpec, QuantStorage, Strategy
from planner.specs import GIB, Method, TrainSpec

FULL = TrainSpec(method=Method.FULL)
P8B = 8_030_261_248  # llama-3-8b parameters


def _terms(est) -> dict[str, float]:
    return {t.name: t.gib for t in est.terms}


def _run(strategy: Strategy, gpus: int = 4, train: TrainSpec = FULL, **kw):
    return estimate("llama-3-8b", train, "h100", parallel=ParallelSpec(strategy=strategy, gpus=gpus, **kw))


def test_none_is_the_single_gpu_estimate() -> None:
    single = estimate("llama-3-8b", FULL, "h100")
    assert single.parallel is None and single.host_gib is None
    assert "parallel" not in single.to_json() and "host_gib" not in single.to_json()
    assert estimate("llama-3-8b", FULL, "h100", parallel=ParallelSpec()).peak_gib == single.peak_gib


@pytest.mark.parametrize("n", [2, 4, 8])
def test_fsdp_full_shard_divides_params_grads_and_optimizer(n: int) -> None:
    # accelerate >= 0.30 upcasts the trainable params to fp32 under FSDP mixed precision: the shards are those
    # of the fp32-master step (weights, gradients, AdamW state), divided by n; the step itself computes in bf16.
    fp32 = FULL.model_copy(update={"fp32_master": True})
    single, sharded = _terms(estimate("llama-3-8b", fp32, "h100")), _terms(_run(Strategy.FSDP, n))
    for name in ("base weights", "gradients", "optimizer state"):
        assert sharded[f"{name} (shard)"] == pytest.approx(single[name] / n, rel=1e-3)
    assert "autocast weight copies" not in sharded
    # One decoder layer in forward, two (BACKWARD_PRE prefetch) in backward; the root unit stays gathered.
    # Each is a new full-size buffer beside the rank's own shard (FlatParamHandle._full_param_padded).
    layer_gib = (P8B - 2 * 128256 * 4096 - 4096) * 2 / 32 / GIB
    assert sharded["all-gathered decoder-layer units"] == pytest.approx(2 * layer_gib, rel=1e-3)
    assert sharded["all-gathered root unit (embeddings, lm_head)"] == pytest.approx(
        (2 * 128256 * 4096 + 4096) * 2 / GIB, rel=1e-3)


def test_strategies_order_by_what_they_shard() -> None:
    peaks = {s: _run(s).peak_gib.device for s in Strategy if s is not Strategy.NONE}
    single = estimate("llama-3-8b", FULL, "h100").peak_gib.device
    assert peaks[Strategy.DDP] > single  # replicated + bucket copy of the gradients
    assert peaks[Strategy.FSDP] < peaks[Strategy.FSDP_SHARD_GRAD_OP] < single
    assert peaks[Strategy.ZERO3] < peaks[Strategy.ZERO2] < peaks[Strategy.ZERO1]
    # FSDP2 all-gathers into full-size buffers and keeps the previous unit's in forward (measured by the
    # fake-process-group trace, tests/test_trace_fsdp.py): a little above FSDP1, far below SHARD_GRAD_OP.
    assert peaks[Strategy.FSDP] < peaks[Strategy.FSDP2] < peaks[Strategy.FSDP_SHARD_GRAD_OP]


def test_ddp_adds_one_bucket_copy_of_the_gradients() -> None:
    terms = _terms(_run(Strategy.DDP))
    assert terms["DDP gradient buckets"] == pytest.approx(terms["gradients"])
    assert engine_defaults()["ddp"]["gradient_as_bucket_view"] is False


def test_zero_keeps_fp32_master_and_fp32_optimizer_state() -> None:
    """bf16 training under ZeRO: fp32 master (4 B) + fp32 Adam m, v (8 B) per trainable param, over N."""
    n = 4
    terms = _terms(_run(Strategy.ZERO1, n))
    assert terms["fp32 master weights (ZeRO shard)"] == pytest.approx(P8B * 4 / n / GIB, rel=1e-6)
    assert terms["optimizer state (shard)"] == pytest.approx(P8B * 8 / n / GIB, rel=1e-6)
    assert terms["gradients"] == pytest.approx(P8B * 2 / GIB, rel=1e-6)  # ZeRO-1: whole gradients
    assert _terms(_run(Strategy.ZERO2, n))["gradients (shard)"] == pytest.approx(P8B * 2 / n / GIB, rel=1e-6)


def test_lora_under_fsdp_shards_the_frozen_base() -> None:
    lora = TrainSpec()
    single, sharded = _terms(estimate("llama-3-8b", lora, "h100")), _terms(_run(Strategy.FSDP, 8, lora))
    assert sharded["base weights (shard)"] == pytest.approx(single["base weights"] / 8, rel=1e-3)
    assert sharded["adapters (shard)"] == pytest.approx(single["adapters"] / 8, rel=1e-3)
    # Only the adapters have gradients: a layer's unsharded gradients are 1/32 of them.
    assert sharded["unsharded gradients before reduce-scatter"] == pytest.approx(single["gradients"] / 32, rel=1e-3)


def test_offload_moves_state_to_host() -> None:
    on_gpu, off = _run(Strategy.ZERO2), _run(Strategy.ZERO2, offload=Offload.OPTIMIZER)
    assert off.peak_gib.device < on_gpu.peak_gib.device
    # Per rank: fp32 Adam state 8 B + master 4 B + fp32 gradient partition 4 B per param, over 4; x 4 per node.
    assert off.host_gib == pytest.approx(P8B * 16 / GIB, rel=1e-3)
    params = _run(Strategy.ZERO3, offload=Offload.PARAMS)
    assert params.host_gib > off.host_gib and "base weights (shard)" not in _terms(params)
    fsdp = _run(Strategy.FSDP, offload=Offload.PARAMS)
    assert not {"base weights (shard)", "gradients (shard)", "optimizer state (shard)"} & set(_terms(fsdp))


def test_host_ram_too_small_warns() -> None:
    est = _run(Strategy.ZERO3, offload=Offload.OPTIMIZER, host_ram_gib=16)
    assert any("host RAM" in w for w in est.warnings)


def test_qlora_under_fsdp_bf16_storage_has_the_same_weight_bytes() -> None:
    q = TrainSpec(method=Method.QLORA)
    default = _terms(_run(Strategy.FSDP, 2, q))
    bf16 = _terms(_run(Strategy.FSDP, 2, q, quant_storage=QuantStorage.BF16))
    assert default["base weights (shard)"] == bf16["base weights (shard)"]
    assert any("bnb_4bit_quant_storage" in w for w in _run(Strategy.FSDP, 2, q).warnings)
    assert not any("bnb_4bit_quant_storage" in w
                   for w in _run(Strategy.FSDP, 2, q, quant_storage=QuantStorage.BF16).warnings)
    with pytest.raises(PlannerError, match="uint8"):
        _run(Strategy.FSDP, 2, q, quant_storage=QuantStorage.UINT8)


@pytest.mark.parametrize("kw, match", [
    ({"strategy": Strategy.NONE, "gpus": 2}, "one GPU"),
    ({"strategy": Strategy.DDP, "gpus": 2, "offload": Offload.OPTIMIZER}, "sharding engine"),
    ({"strategy": Strategy.FSDP, "gpus": 2, "offload": Offload.OPTIMIZER}, "cpu_offload"),
    ({"strategy": Strategy.ZERO2, "gpus": 2, "offload": Offload.PARAMS}, "stage 3"),
])
def test_bad_combinations(kw: dict, match: str) -> None:
    with pytest.raises(PlannerError, match=match):
        ParallelSpec(**kw)


# --------------------------------------------------------------------------- CLI


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_cli_json_parallel_and_host() -> None:
    res = run("estimate", "llama-3-8b", "--gpu", "h100", "--method", "full", "--gpus", "4", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["parallel"] == {"strategy": "fsdp", "gpus": 4, "nodes": 1, "world_size": 4, "offload": "none"}
    assert data["host_gib"] == 0.0
    res = run("estimate", "llama-3-8b", "--gpu", "h100", "--method", "full", "--gpus", "8", "--nodes", "2",
              "--parallel", "zero3", "--offload", "optimizer", "--json")
    data = json.loads(res.output)
    assert data["parallel"]["world_size"] == 16 and data["host_gib"] > 0


def test_cli_table_says_per_gpu() -> None:
    res = run("estimate", "llama-3-8b", "--gpu", "h100", "--gpus", "2")
    assert res.exit_code == 0, res.output
    assert "per GPU" in res.output and "1/2" in res.output and "replicated" not in res.output.split("params:")[1]


def test_cli_zero3_on_one_gpu_warns() -> None:
    res = run("estimate", "llama-3-8b", "--parallel", "zero3", "--gpus", "1", "--json")
    assert res.exit_code == 0
    assert any("only adds" in w for w in json.loads(res.output)["warnings"])


@pytest.mark.parametrize("args", [
    ("--gpus", "0"),
    ("--nodes", "0"),
    ("--offload", "optimizer"),
    ("--gpus", "2", "--parallel", "ddp", "--offload", "params"),
    ("--gpus", "2", "--method", "qlora", "--quant-storage", "uint8"),
    ("--gpus", "2", "--quant-storage", "bf16"),
    ("--gpu", "h100", "--gpus", "9"),
    ("--gpus", "2", "--parallel", "zero9"),
    ("--gpus", "2", "--parallel", "zero3", "--method", "full", "--fp32-master"),
])
def test_cli_bad_input_is_one_line_exit_2(args: tuple[str, ...]) -> None:
    res = run("estimate", "llama-3-8b", *args)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1, res.output


def test_fsdp_shard_dtype_follows_the_stack() -> None:
    """accelerate (>= 0.30) keeps trainable FSDP shards in fp32 under bf16 mixed precision and says so; torchtune's
    fully_shard without a policy keeps the bf16 ones (stack behaviour fsdp_trainable_dtype); ZeRO is unaffected."""
    from planner.stack.resolve import resolve_stack

    accel = _run(Strategy.FSDP2, 4)
    tune = estimate("llama-3-8b", FULL, "h100", stack=resolve_stack("torchtune", detect=False).stack,
                    parallel=ParallelSpec(strategy=Strategy.FSDP2, gpus=4))
    for name in ("base weights (shard)", "gradients (shard)", "optimizer state (shard)"):
        assert _terms(accel)[name] == pytest.approx(2 * _terms(tune)[name], rel=1e-6)
    assert any("keeps the trainable parameters in fp32" in w for w in accel.warnings)
    assert not any("keeps the trainable parameters in fp32" in w for w in tune.warnings)
    lora = _run(Strategy.FSDP2, 4, TrainSpec())  # PEFT's adapters are fp32 already: nothing to say
    assert not any("keeps the trainable parameters in fp32" in w for w in lora.warnings)
