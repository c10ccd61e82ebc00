"""Issue 8: the estimate on the TRL stack against the CPU trace of TRL's own ``SFTTrainer`` code.

``probes.trl_step`` runs ``SFTTrainer``'s model preparation and ``compute_loss`` (fused tiled LM head)
unmodified on fake tensors. Llama-3-8B, r=16, micro-batch 1. Measured (trl 1.16.0, transformers 5.24.0):
LoRA +0.2..+0.6%, full +0.3..+1.1%, QLoRA +1.2..+2.6% (2048 tokens with checkpointing is the worst; the
layer-backward peak counts the dequantized gate/up weight only beyond the down projection's freed saved
tensors, ``planner.memory.step._dequant_phases``). The issue's bound, 3%, is the tolerance.
"""

from __future__ import annotations

import pytest

from tests.conftest import needs_torch_stack

pytestmark = [needs_torch_stack, pytest.mark.trace]

TOLERANCE = 0.03
CASES = [("lora", 2048, True), ("lora", 512, False), ("qlora", 2048, True), ("qlora", 512, False),
         ("full", 2048, True)]


@pytest.mark.parametrize(("method", "seq", "ckpt"), CASES)
def test_trl_estimate_matches_trl_trace(method: str, seq: int, ckpt: bool) -> None:
    pytest.importorskip("trl")
    from planner.catalog import raw_config
    from planner.estimator import estimate
    from planner.specs import GIB, Method, TrainSpec
    from planner.stack.resolve import resolve_stack
    from probes.trace import run_trace

    spec = TrainSpec(method=Method(method), seq_len=seq, micro_batch=1, rank=16, grad_ckpt=ckpt, kbit_prepare=False)
    run = run_trace(raw_config("llama-3-8b"), spec, framework="trl")
    traced = run.peak_bytes / GIB
    est = estimate("llama-3-8b", spec, stack=resolve_stack("trl", detect=False).stack)
    err = (est.peak_gib.allocated - traced) / traced
    assert abs(err) <= TOLERANCE, f"estimate {est.peak_gib.allocated:.3f} vs TRL trace {traced:.3f} GiB"
