"""The time model per stack: fused RMSNorm/RoPE/SwiGLU kernels (Liger, Unsloth) cut the counted traffic only."""

from __future__ import annotations

from planner.catalog import load_gpu, load_model
from planner.specs import TrainSpec
from planner.stack.resolve import resolve_stack
from planner.time.mfu import utilization
from planner.time.step import time_breakdown


def _times(framework: str | None, liger: bool = False):
    model = load_model("llama-3.1-8b")
    gpu = load_gpu("a100-80gb")
    train = TrainSpec(method="lora", seq_len=2048, micro_batch=2)
    stack = resolve_stack(framework, {}, liger=liger, detect=False).stack if framework else None
    return time_breakdown(model.config, train, gpu, utilization(gpu, train.method), stack=stack)


def test_default_stack_is_eager() -> None:
    assert _times(None).kernels == "eager"
    assert _times("trl").kernels == "eager"


def test_fused_stacks_cut_memory_term_only() -> None:
    eager = _times("trl")
    for fused in (_times("trl", liger=True), _times("unsloth")):
        assert fused.kernels == "fused"
        assert fused.memory_s < eager.memory_s
        assert fused.compute_s == eager.compute_s
        assert fused.tokens_per_s > eager.tokens_per_s
