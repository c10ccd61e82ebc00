"""Issue #3 CI check: the estimator's ``peak_gib.allocated`` within 3% of the CPU trace's peak.

Real configs (no reduced layers): Llama-3-8B LoRA / QLoRA / full at seq 2048 with and without gradient
checkpointing and at 512 without, and Mixtral-8x7B LoRA (PEFT's ``all-linear`` adapts the expert
tensors, which takes no dropout). Micro-batch 1, rank 16, AdamW. A per-case table is printed at
the end of the module (``pytest -s`` or the terminal summary).
"""

from __future__ import annotations

import pytest

from tests.conftest import needs_torch_stack

pytestmark = [needs_torch_stack, pytest.mark.trace]

TOLERANCE = 0.03
"""The issue-8 bound for every traced stack (today's worst row: +1.4%, qwen2.5-0.5b full)."""
ROWS: list[str] = []

# Llama-3-8B: each method with and without checkpointing at 2048 tokens, and without it at 512 (where the
# peak moves between sub-phases). 512 with checkpointing is left out to keep CI under 10 minutes; run by hand
# on 2026-12-08 it agreed as closely (LoRA +0.05%, QLoRA +0.08%, full +0.28%).
CASES = [
    ("llama-3-8b", method, seq, ckpt, {})
    for method in ("lora", "qlora", "full")
    for seq, ckpt in ((2048, True), (2048, False), (512, False))
] + [
    ("mixtral-8x7b", "lora", 2048, True, {"lora_dropout": 0.0}),
] + [
    # Regression cases for behaviour the trace revealed (see planner/memory.py and estimator.py).
    ("llama-3.2-1b", "full", 512, True, {"optim": "adamw-8bit"}),  # Trainer: 32-bit embedding state
    ("llama-3.2-1b", "full", 512, True, {"optim": "adafactor"}),  # four fp32 copies inside step()
    ("qwen2.5-0.5b", "full", 512, True, {}),  # tied embeddings: two gradients before the sum
    ("llama-3.2-1b", "lora", 512, True, {"fp32_master": True}),  # per-op casts of frozen fp32 weights
    ("gpt2", "lora", 512, False, {}),  # gelu_new's pow in fp32 under autocast
    ("falcon-7b", "lora", 512, False, {}),  # SDPA math kernel (1 k/v head, no enable_gqa)
    ("falcon-7b", "qlora", 512, True, {}),  # FalconLinear is not quantized by transformers
    ("gemma-2-2b", "lora", 512, True, {"attn": "eager"}),  # softcapping, 4 norms, eager scores
    ("qwen2.5-7b", "qlora", 1024, True, {}),  # q/k/v biases, fp32 stream
    ("llama-3-8b", "qlora", 1024, False, {"kbit_prepare": False}),  # TRL SFTTrainer: 16-bit embeddings/norms
]


@pytest.fixture(scope="module", autouse=True)
def table(request):
    yield
    header = f"{'model':14s} {'method':6s} {'seq':>5s} {'ckpt':>5s} {'traced':>8s} {'estimate':>9s} {'error':>7s}  phases"
    lines = ["", "estimator vs CPU trace (peak allocated, GiB)", header, *ROWS]
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        with capture.global_and_fixture_disabled():
            print("\n".join(lines))
    else:  # pragma: no cover
        print("\n".join(lines))


@pytest.mark.parametrize(("model", "method", "seq", "ckpt", "extra"), CASES,
                         ids=[f"{m}-{me}-{s}-{'ckpt' if c else 'nockpt'}" for m, me, s, c, _ in CASES])
def test_estimate_within_3pct_of_trace(model: str, method: str, seq: int, ckpt: bool, extra: dict) -> None:
    from planner.catalog import raw_config
    from planner.estimator import estimate
    from planner.specs import GIB, Method, TrainSpec
    from probes.trace import run_trace

    spec = TrainSpec(method=Method(method), seq_len=seq, micro_batch=1, rank=16, grad_ckpt=ckpt, **extra)
    run = run_trace(raw_config(model), spec)
    traced = run.peak_bytes / GIB
    est = estimate(model, spec)
    err = (est.peak_gib.allocated - traced) / traced
    ROWS.append(f"{model:14s} {method:6s} {seq:5d} {str(ckpt):>5s} {traced:8.3f} {est.peak_gib.allocated:9.3f} "
                f"{err * 100:+6.1f}%  trace={run.detail.peak_phase} est={est.peak_phase}")
    assert abs(err) <= TOLERANCE, (
        f"estimate {est.peak_gib.allocated:.3f} GiB vs traced {traced:.3f} GiB; traced split at peak "
        f"{run.detail.at_peak_gib.model_dump()}; estimate components {est.memory_gib.model_dump()}"
    )
