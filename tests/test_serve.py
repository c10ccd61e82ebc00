"""``loraplan serve``: KV cache (GQA, sliding windows, fp8), quantized storage, adapters, the vLLM pool."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from planner.catalog import load_model, serve_constants
from planner.cli import cli
from planner.errors import PlannerError
from planner.serve.estimate import serve, serve_estimate
from planner.serve.layout import layer_windows
from planner.serve.spec import Engine, KvDtype, Quant, ServeSpec
from planner.serve.weights import quantized_weight_bytes
from planner.specs import GIB, Method, TrainSpec


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


# --------------------------------------------------------------------------- KV cache


def test_llama3_kv_per_token_and_batch() -> None:
    """32 layers x 2 x 8 KV heads x 128 x 2 B = 131072 B/token; 2 x 4096 tokens = 1 GiB."""
    est = serve("llama-3-8b", ServeSpec(batch=2, context=4096))
    assert est.kv_bytes_per_token == 32 * 2 * 8 * 128 * 2 == 131072
    assert est.kv_cache_gib == 1.0


def test_gqa_uses_kv_heads_not_heads() -> None:
    mha = serve("llama-2-7b", ServeSpec(context=1024))  # 32 heads, 32 KV heads
    gqa = serve("mistral-7b", ServeSpec(context=1024))  # 32 heads, 8 KV heads, same head_dim and layers
    assert mha.kv_bytes_per_token == 4 * gqa.kv_bytes_per_token == 32 * 2 * 32 * 128 * 2


def test_mistral_slides_every_layer() -> None:
    est = serve("mistral-7b", ServeSpec(context=8192, batch=3))
    assert est.kv_tokens_per_layer == [4096] * 32
    assert est.kv_cache_gib == pytest.approx(3 * 4096 * 131072 / GIB)
    assert serve("mistral-7b", ServeSpec(context=1000)).kv_tokens_per_layer == [1000] * 32


def test_gemma2_alternates_sliding_and_full() -> None:
    est = serve("gemma-2-9b", ServeSpec(context=8192))
    assert est.kv_tokens_per_layer == [4096, 8192] * 21  # even layers slide (layer_types)
    assert est.kv_bytes_per_token == 42 * 2 * 8 * 256 * 2


def test_qwen2_sliding_window_is_off_without_use_sliding_window() -> None:
    cfg = load_model("qwen2.5-7b").config
    assert layer_windows(cfg, {"sliding_window": 4096, "use_sliding_window": False}) == (None,) * 28
    on = layer_windows(cfg, {"sliding_window": 4096, "use_sliding_window": True, "max_window_layers": 20})
    assert on == (None,) * 20 + (4096,) * 8
    assert layer_windows(cfg, {"sliding_window": 64, "use_sliding_window": True,
                               "layer_types": ["sliding_attention", "full_attention"] * 14})[:2] == (64, None)


def test_fp8_kv_halves_the_cache_on_vllm() -> None:
    auto = serve("llama-3-8b", ServeSpec(engine=Engine.VLLM, context=8192), "a100-80gb")
    fp8 = serve("llama-3-8b", ServeSpec(engine=Engine.VLLM, context=8192, kv_dtype=KvDtype.FP8), "a100-80gb")
    assert fp8.kv_bytes_per_token == auto.kv_bytes_per_token / 2
    assert fp8.vllm.num_blocks == pytest.approx(2 * auto.vllm.num_blocks, abs=1)


# --------------------------------------------------------------------------- weights


@pytest.mark.parametrize(("quant", "expected"), [
    (Quant.AWQ, 30_507_008), (Quant.GPTQ, 30_523_392), (Quant.NF4, 33_030_144), (Quant.INT8, 58_777_600),
    (Quant.NONE, 4096 * 14336 * 2),
])
def test_quantized_linear_bytes(quant: Quant, expected: int) -> None:
    """Linear 4096 -> 14336: 4-bit values, group-wise fp16 scales + packed zeros (+ g_idx), absmax, row scales."""
    assert quantized_weight_bytes(4096, 14336, quant, 2.0) == expected


def test_nf4_weights_equal_the_qlora_estimate() -> None:
    from planner.estimator.api import estimate_with_advice

    train = TrainSpec(method=Method.QLORA, double_quant=False, kbit_prepare=False)
    qlora = estimate_with_advice("llama-3-8b", train).memory_gib.weights
    nf4 = serve("llama-3-8b", ServeSpec(quant=Quant.NF4)).weights_gib
    assert nf4 == pytest.approx(qlora, rel=1e-12)
    assert round(nf4, 4) == 5.6138


def test_quant_order() -> None:
    gib = {q: serve("llama-3-8b", ServeSpec(quant=q)).weights_gib for q in Quant}
    assert gib[Quant.AWQ] < gib[Quant.GPTQ] < gib[Quant.NF4] < gib[Quant.INT8] < gib[Quant.NONE]
    assert gib[Quant.NONE] == pytest.approx(14.9575, abs=1e-4)


def test_every_quant_format_has_a_source() -> None:
    consts = serve_constants()
    for section in [*consts["quant_formats"].values(), consts["vllm"], consts["hf"], consts["sliding_window"]]:
        assert section["source"] and section["date"]


# --------------------------------------------------------------------------- adapters


def test_adapters_scale_and_merged_costs_nothing() -> None:
    one = serve("llama-3-8b", ServeSpec(adapters=1), "4090")
    four = serve("llama-3-8b", ServeSpec(adapters=4), "4090")
    assert one.adapter_each_gib == pytest.approx(41_943_040 * 4 / GIB)  # PEFT r=16 all-linear, fp32
    assert four.adapters_gib == pytest.approx(4 * one.adapter_each_gib)
    assert one.lora_transient_gib > 0
    merged = serve("llama-3-8b", ServeSpec(adapters=1, merged=True), "4090")
    assert merged.adapters_gib == merged.lora_transient_gib == 0
    assert merged.max_adapters == 1
    none = serve("llama-3-8b", ServeSpec(), "4090")
    # the answer: adapters beyond those that fit overflow the budget
    n = none.max_adapters
    assert serve("llama-3-8b", ServeSpec(adapters=n), "4090").fits
    assert not serve("llama-3-8b", ServeSpec(adapters=n + 1), "4090").fits


def test_max_concurrent_sequences_is_the_largest_batch_that_fits() -> None:
    est = serve("llama-3-8b", ServeSpec(context=4096), "4090")
    n = est.max_concurrent_sequences
    assert n >= 1
    assert serve("llama-3-8b", ServeSpec(context=4096, batch=n), "4090").fits
    assert not serve("llama-3-8b", ServeSpec(context=4096, batch=n + 1), "4090").fits


def test_targets_shrink_the_adapter() -> None:
    full = serve("llama-3-8b", ServeSpec(adapters=1, rank=8))
    qv = serve("llama-3-8b", ServeSpec(adapters=1, rank=8, targets=("qv",)))
    assert qv.adapter_each_gib == pytest.approx(32 * 8 * (4096 + 4096 + 4096 + 1024) * 4 / GIB)
    assert qv.adapter_each_gib < full.adapter_each_gib


# --------------------------------------------------------------------------- vLLM


def test_vllm_pool_blocks_and_concurrency() -> None:
    est = serve("llama-3-8b", ServeSpec(engine=Engine.VLLM, context=8192), "a100-80gb")
    v = est.vllm
    assert v.block_bytes == 16 * 131072
    assert v.num_blocks == int(v.kv_pool_gib * GIB // v.block_bytes)
    assert v.requested_gib == pytest.approx(0.9 * v.total_gpu_memory_gib)
    assert est.max_concurrent_sequences == v.num_blocks // (8192 // 16)
    assert v.max_concurrency == pytest.approx(v.num_blocks * 16 / 8192)
    assert v.max_num_batched_tokens == 8192
    long = serve("llama-3.1-8b", ServeSpec(engine=Engine.VLLM, context=65536), "a100-80gb")
    assert long.vllm.max_num_batched_tokens == 512  # chunked prefill above 32K


def test_vllm_adapters_take_pool_space() -> None:
    base = serve("llama-3-8b", ServeSpec(engine=Engine.VLLM, context=8192), "4090")
    lora = serve("llama-3-8b", ServeSpec(engine=Engine.VLLM, context=8192, adapters=4), "4090")
    assert lora.vllm.kv_pool_gib < base.vllm.kv_pool_gib - 4 * lora.adapter_each_gib + 1e-9
    n = base.max_adapters
    assert serve("llama-3-8b", ServeSpec(engine=Engine.VLLM, context=8192, adapters=n), "4090").fits
    assert not serve("llama-3-8b", ServeSpec(engine=Engine.VLLM, context=8192, adapters=n + 1), "4090").fits


def test_vllm_slot_rank_rounds_up_to_an_allowed_rank() -> None:
    at = {r: serve("llama-3-8b", ServeSpec(engine=Engine.VLLM, adapters=1, rank=r), "h100").adapter_each_gib
          for r in (8, 16, 24, 32)}
    assert at[8] == at[16] and at[24] == at[32] == 2 * at[16]
    with pytest.raises(PlannerError, match="up to 256"):
        serve("llama-3-8b", ServeSpec(engine=Engine.VLLM, adapters=1, rank=512), "h100")


@pytest.mark.parametrize("row", serve_constants()["published"], ids=lambda r: r["name"])
def test_published_vllm_rows(row: dict) -> None:
    """vLLM's own log lines (issue URL in profiles/serve.json) against ours, within the row's tolerance."""
    spec = ServeSpec(engine=Engine.VLLM, dtype=row["dtype"], context=row["context"],
                     gpu_memory_utilization=row["gpu_memory_utilization"])
    est = serve(row["model"], spec, row["gpu"])
    v = est.vllm
    ours = {"total_gpu_memory_gib": (v.total_gpu_memory_gib, 0.005), "weights_gib": (est.weights_gib, 0.01),
            "activation_peak_gib": (est.prefill_activations_gib, 0.02),
            "kv_pool_gib": (v.kv_pool_gib, row["tolerance"]), "num_blocks": (v.num_blocks, row["tolerance"])}
    compared = [key for key in ours if key in row]
    assert "num_blocks" in compared
    for key in compared:
        value, rel = ours[key]
        assert value == pytest.approx(row[key], rel=rel), key


def test_vllm_nothing_fits_is_an_answer() -> None:
    est = serve("llama-3-70b", ServeSpec(engine=Engine.VLLM), "4090")
    assert est.fits is False and est.vllm.num_blocks == 0 and est.max_concurrent_sequences == 0


# --------------------------------------------------------------------------- CLI


def test_cli_json_keys() -> None:
    res = run("serve", "llama-3-8b", "--gpu", "4090", "--adapters", "4", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    for key in ("weights_gib", "adapters_gib", "kv_cache_gib", "kv_bytes_per_token", "prefill_activations_gib",
                "max_concurrent_sequences", "max_adapters", "fits", "spec"):
        assert key in data
    vllm = json.loads(run("serve", "llama-3.1-8b", "--gpu", "3090", "--engine", "vllm", "--context", "20000",
                          "--json").output)
    assert {"num_blocks", "kv_pool_gib", "block_size", "max_concurrency"} <= set(vllm["vllm"])


def test_cli_table() -> None:
    res = run("serve", "llama-3.1-8b", "--gpu", "3090", "--engine", "vllm", "--context", "20000")
    assert res.exit_code == 0, res.output
    assert "KV pool" in res.output and "blocks of 16 tokens" in res.output


@pytest.mark.parametrize(("args", "needle"), [
    (("lama-3-8b",), "did you mean"),
    (("llama-3-8b", "--gpu", "4091"), "did you mean"),
    (("llama-3-8b", "--kv-dtype", "fp8"), "--engine vllm"),
    (("llama-3-8b", "--merged", "--adapters", "2"), "--merged"),
    (("llama-3-8b", "--batch", "0"), "--batch"),
    (("llama-3-8b", "--context", "-5"), "--context"),
    (("llama-3-8b", "--context", "200000"), "max_position_embeddings"),
    (("llama-3-8b", "--engine", "vllm"), "--gpu"),
    (("llama-3-8b", "--quant", "awq", "--merged", "--adapters", "1"), "merge"),
    (("llama-3-8b", "--gpu-memory-utilization", "0.5"), "--engine vllm"),
    (("llama-3-8b", "--engine", "vllm", "--gpu", "4090", "--gpu-memory-utilization", "0"), "(0, 1]"),
])
def test_cli_bad_input_is_one_line(args: tuple[str, ...], needle: str) -> None:
    res = run("serve", *args)
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error") and needle in lines[0], res.output


def test_context_beyond_positions_is_an_error_in_the_api() -> None:
    with pytest.raises(PlannerError, match="max_position_embeddings"):
        serve_estimate(ServeSpec(context=10**5), load_model("llama-3-8b").config, None)
