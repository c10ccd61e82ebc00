"""Time model: FLOPs per token, utilization derived from published runs, probe measurements first."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from planner.catalog import load_gpu, load_model
from planner.specs import Attn, Method, Optim, TrainSpec
from planner.stack.optimizers import optimizer_info
from planner.time import Utilization, time_breakdown, tokens_per_second, utilization
from planner.time.flops import flops, matmul_params
from planner.time.mfu import default_overhead, reference_points
from planner.time.points import published_points
from planner.time.step import optimizer_bytes_per_param


def _cfg(name: str = "llama-3-8b"):
    return load_model(name).config


def test_flops_full_is_6n_plus_attention() -> None:
    """Full fine-tuning without checkpointing: 6N + 3x forward attention (Kaplan et al. 2020)."""
    cfg = _cfg()
    train = TrainSpec(method=Method.FULL, grad_ckpt=False, seq_len=2048)
    layers, head = matmul_params(cfg)
    attn = 2 * cfg.num_hidden_layers * 2048 * cfg.num_attention_heads * cfg.head_dim
    assert flops(cfg, train).per_token == pytest.approx(6 * (layers + head) + 3 * attn)


def test_flops_frozen_base_skips_weight_gradients() -> None:
    cfg = _cfg()
    full = flops(cfg, TrainSpec(method=Method.FULL, grad_ckpt=False)).per_token
    lora = flops(cfg, TrainSpec(method=Method.LORA, grad_ckpt=False, rank=16)).per_token
    # About 4N/6N of full fine-tuning (plus the small adapters).
    assert 0.64 < lora / full < 0.72


def test_checkpointing_adds_one_forward_of_the_layers() -> None:
    cfg = _cfg()
    on = flops(cfg, TrainSpec(grad_ckpt=True))
    off = flops(cfg, TrainSpec(grad_ckpt=False))
    layers, head = matmul_params(cfg)
    extra = on.per_token - off.per_token
    assert extra < on.forward_per_token  # the lm_head is not recomputed
    assert extra == pytest.approx(on.forward_per_token - 2 * head)


def test_eager_attention_computes_the_full_square() -> None:
    cfg = _cfg()
    sdpa = flops(cfg, TrainSpec(attn=Attn.SDPA, seq_len=4096)).per_token
    eager = flops(cfg, TrainSpec(attn=Attn.EAGER, seq_len=4096)).per_token
    attn = 2 * cfg.num_hidden_layers * 4096 * cfg.num_attention_heads * cfg.head_dim
    assert eager - sdpa == pytest.approx(attn * (1 + 2 + 1))  # forward, backward (2x), recompute


def test_moe_counts_active_experts_only() -> None:
    cfg = _cfg("mixtral-8x7b")
    layers, _ = matmul_params(cfg)
    assert layers < 16e9  # ~13B active of ~47B


def test_published_series_gives_sane_utilization() -> None:
    """The transformers-stack runs (Qwen README, A100) map to 40-65% MFU with a few ms of fixed overhead."""
    assert 0.0005 < default_overhead() < 0.01
    points = [p for p in reference_points() if p.stack == "transformers"]
    assert len(points) >= 6
    for p in points:
        assert 0.4 < p.mfu < 0.65, (p.id, p.mfu)


def test_time_model_reproduces_the_series() -> None:
    """With the fitted overhead and median MFU, predicted seconds/step are within 20% of Qwen's table."""
    util = utilization(load_gpu("a100-80gb"), Method.LORA)
    assert util.basis == "published-gpu"
    for p in published_points():
        if p.stack != "transformers":
            continue
        t = time_breakdown(p.config, p.train, p.gpu, util)
        predicted = p.train.micro_batch * p.train.seq_len * p.train.grad_accum / t.tokens_per_s
        assert predicted == pytest.approx(p.seconds_per_optimizer_step, rel=0.2), p.id


def test_qlora_dequantization_costs_most_on_small_batches() -> None:
    """bitsandbytes#465: NF4 training 20-100% slower than 16-bit for a 7B model, depending on batch size."""
    gpu = load_gpu("rtx-a6000")
    util = utilization(gpu, Method.LORA)
    cfg = _cfg("llama-2-7b")

    def slowdown(mb: int, seq: int) -> float:
        lora = time_breakdown(cfg, TrainSpec(method=Method.LORA, micro_batch=mb, seq_len=seq), gpu, util)
        qlora = time_breakdown(cfg, TrainSpec(method=Method.QLORA, micro_batch=mb, seq_len=seq), gpu, util)
        return lora.tokens_per_s / qlora.tokens_per_s - 1

    small, large = slowdown(1, 256), slowdown(8, 2048)
    assert 0.2 < small < 1.0
    assert large < small


def test_larger_micro_batches_amortize_fixed_overhead() -> None:
    gpu = load_gpu("4090")
    one = tokens_per_second("llama-3.2-1b", TrainSpec(micro_batch=1, seq_len=512), gpu)
    eight = tokens_per_second("llama-3.2-1b", TrainSpec(micro_batch=8, seq_len=512), gpu)
    assert eight > one


def test_every_gpu_and_method_has_a_stated_utilization() -> None:
    from planner.catalog import gpu_profiles

    for gpu in gpu_profiles():
        for method in Method:
            u = utilization(gpu, method)
            assert 0 < u.mfu < 1 and u.sources and u.basis.startswith(("measured", "published", "default"))


def _probe_result(gpu: str, tokens_per_s: float, mode: str = "gpu") -> dict:
    train = TrainSpec(method=Method.LORA, micro_batch=2, seq_len=1024, grad_accum=4).model_dump(mode="json")
    return {
        "model": "llama-3.2-1b",
        "mode": mode,
        "estimate": {"model": "llama-3.2-1b", "train": train, "gpu": {"name": gpu, "memory_gib": 24.0}},
        "measured_gib": {},
        "tokens_per_s": tokens_per_s,
        "environment": {"gpu": "NVIDIA GeForce RTX 4090"},
        "fits": True,
    }


def test_probe_measurements_take_precedence(tmp_path: Path) -> None:
    gpu = load_gpu("4090")
    published = utilization(gpu, Method.LORA)
    assert published.basis != "measured"
    cfg = _cfg("llama-3.2-1b")
    train = TrainSpec(method=Method.LORA, micro_batch=2, seq_len=1024, grad_accum=4)
    # A measurement made at MFU 0.3: the utilization read back must be 0.3.
    at = Utilization(mfu=0.3, overhead_s_per_layer=default_overhead(), basis="x", sources=("x",))
    tps = time_breakdown(cfg, train, gpu, at).tokens_per_s
    (tmp_path / "probe-4090.json").write_text(json.dumps(_probe_result("RTX 4090", tps)))
    (tmp_path / "trace.json").write_text(json.dumps(_probe_result("RTX 4090", 1.0, mode="trace")))
    (tmp_path / "junk.json").write_text("[1, 2]")
    (tmp_path / "other-gpu.json").write_text(json.dumps(_probe_result("A10G", tps)))
    measured = utilization(gpu, Method.LORA, measurements=tmp_path)
    assert measured.basis == "measured"
    assert measured.mfu == pytest.approx(0.3, abs=1e-3)
    # QLoRA has no measurement of its own: it falls back to the measured LoRA figure, saying so.
    q = utilization(gpu, Method.QLORA, measurements=tmp_path)
    assert q.basis == "measured" and "lora figure used for qlora" in q.sources[0]


def test_empty_measurements_dir_falls_back(tmp_path: Path) -> None:
    u = utilization(load_gpu("h100-sxm"), Method.LORA, measurements=tmp_path)
    assert u.basis == "published-any" and not math.isnan(u.mfu)


def test_optimizer_step_traffic_reads_the_optimizer_table() -> None:
    """Param read + write and gradient read, plus the state bytes of profiles/optimizers.json."""
    for optim in Optim:
        moved = optimizer_bytes_per_param(optim, 4.0)
        assert moved == 3 * 4.0 + optimizer_info(optim).state_bytes_moved_per_param
    assert optimizer_bytes_per_param(Optim.ADAMW_8BIT, 4.0) < optimizer_bytes_per_param(Optim.ADAMW, 4.0)
    assert optimizer_bytes_per_param(Optim.SGD, 2.0) == 6.0  # no state
