"""FSDP2 per-rank estimate vs the fake-process-group trace of rank 0 (issue 9): within 5%.

Llama-3-8B's config with 8 decoder layers (the per-layer terms scale with the layer count; the estimate
is built for the same 8-layer config), full fine-tuning and LoRA r=16, seq 512, micro-batch 1,
checkpointing, AdamW; ``fully_shard`` per decoder layer then root, world sizes 2, 4 and 8. The full
32 layers agree as closely (within 2.1% at W 2, 4, 8) but take 10-50 s a case.
"""

from __future__ import annotations

import pytest

from tests.conftest import needs_torch_stack

pytestmark = [needs_torch_stack, pytest.mark.trace]

TOLERANCE = 0.05
LAYERS = 8
ROWS: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def table(request):
    yield
    lines = ["", f"FSDP2 estimate vs fake-PG trace (llama-3-8b, {LAYERS} layers, per-rank peak GiB)",
             f"{'world':>5s} {'method':6s} {'estimate':>9s} {'traced':>8s} {'error':>7s}", *ROWS]
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        with capture.global_and_fixture_disabled():
            print("\n".join(lines))


def _reduced(layers: int):
    from planner.catalog import normalize_config, raw_config
    from planner.specs import ModelProfile

    raw = {**raw_config("llama-3-8b"), "num_hidden_layers": layers}
    return raw, ModelProfile(name=f"llama-3-8b-{layers}-layers", source="tests/test_trace_fsdp.py",
                             config=normalize_config(raw))


@pytest.mark.parametrize("method", ["full", "lora"])
@pytest.mark.parametrize("world", [2, 4, 8])
def test_fsdp2_estimate_within_5pct_of_trace(world: int, method: str) -> None:
    from planner.estimator import estimate
    from planner.parallel.spec import ParallelSpec, Strategy
    from planner.specs import GIB, Method, TrainSpec
    from probes.trace_fsdp import run_fsdp_trace

    raw, profile = _reduced(LAYERS)
    spec = TrainSpec(method=Method(method), seq_len=512, micro_batch=1, rank=16, grad_ckpt=True)
    run = run_fsdp_trace(raw, spec, world)
    traced = run.peak_bytes / GIB
    est = estimate(profile, spec, parallel=ParallelSpec(strategy=Strategy.FSDP2, gpus=world))
    err = (est.peak_gib.allocated - traced) / traced
    ROWS.append(f"{world:5d} {method:6s} {est.peak_gib.allocated:9.3f} {traced:8.3f} {err * 100:+6.1f}%")
    assert abs(err) <= TOLERANCE, (
        f"estimate {est.peak_gib.allocated:.3f} GiB ({est.peak_phase}) vs traced {traced:.3f} GiB "
        f"({run.detail.peak_phase}); estimate terms {[(t.name, round(t.gib, 3)) for t in est.terms]}"
    )


def test_sharding_divides_the_state_at_rest() -> None:
    """After the step, rank 0 holds 1/W of the weights and optimizer state (a full-model run is W times)."""
    from planner.specs import Method, TrainSpec
    from probes.trace_fsdp import run_fsdp_trace

    raw, _ = _reduced(2)
    spec = TrainSpec(method=Method.FULL, seq_len=128, micro_batch=1, grad_ckpt=True)
    one, four = (run_fsdp_trace(raw, spec, w).detail.breakdown_gib["end"] for w in (1, 4))
    assert four.trainable_gib == pytest.approx(one.trainable_gib / 4, rel=1e-3)
    assert four.optimizer_gib == pytest.approx(one.optimizer_gib / 4, rel=1e-3)
    assert four.gradients_gib == 0.0


def test_refuses_a_second_process_group() -> None:
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore

    from planner.errors import PlannerError
    from planner.specs import TrainSpec
    from probes.trace_fsdp import run_fsdp_trace

    raw, _ = _reduced(1)
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=2)
    try:
        with pytest.raises(PlannerError, match="already initialized"):
            run_fsdp_trace(raw, TrainSpec(seq_len=64), 2)
    finally:
        dist.destroy_process_group()
