"""FSDP2 per-rank estimate vs the fake-process-group trace of rank 0 (issue 9): within 5%.

Llama-3-8B's config with 8 decoder layers (the per-layer terms scale with the layer count; the estimate
is built for the same 8-layer config), full fine-tuning and LoRA r=16, seq 512, micro-batch 1,
checkpointing, AdamW; ``fully_shard`` per decoder layer then root, world sizes 2, 4 and 8:

- as ``accelerate launch`` runs it under ``mixed_precision: bf16`` (trainable params upcast to fp32, bf16
  ``MixedPrecisionPolicy``; the estimate on the default stack, behaviour ``fsdp_trainable_dtype`` fp32);
- raw ``fully_shard`` without a policy on the bf16 model (the bf16 shards torchtune and litgpt keep; the
  estimate on a stack whose ``fsdp_trainable_dtype`` is ``load_dtype``);
- LoRA on a model loaded in fp32 (``--fp32-master``: PEFT's FSDP example loads without ``dtype=``), the
  frozen fp32 base sharded, computed in bf16.

The full 32 layers agree as closely (within 2.1% at W 2, 4, 8, raw bf16) but take 10-50 s a case.
"""

from __future__ import annotations

import pytest

from tests.conftest import needs_torch_stack

pytestmark = [needs_torch_stack, pytest.mark.trace]

TOLERANCE = 0.05
LAYERS = 8
ROWS: list[str] = []
# (world size, method, mixed precision as accelerate runs it, model loaded in fp32)
# (LoRA without accelerate's policy is left out: its adapters are fp32 either way, and it traced at +0.7%.)
CASES = [(w, m, True, False) for w in (2, 4, 8) for m in ("full", "lora")] + [
    (4, "full", False, False), (8, "lora", True, True)]


@pytest.fixture(scope="module", autouse=True)
def table(request):
    yield
    lines = ["", f"FSDP2 estimate vs fake-PG trace (llama-3-8b, {LAYERS} layers, per-rank peak GiB)",
             f"{'world':>5s} {'method':6s} {'precision':22s} {'estimate':>9s} {'traced':>8s} {'error':>7s}", *ROWS]
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


def _raw_fully_shard_stack():
    """The default stack, but FSDP's shards keep the loaded dtype (no accelerate upcast)."""
    from planner.stack.stack import Behaviour, default_stack

    stack = default_stack()
    keep = Behaviour(value="load_dtype", holds_for="raw torch fully_shard, no mp_policy",
                     source="tests/test_trace_fsdp.py: probes.trace_fsdp.Fsdp2Sharding(mixed_precision=False)")
    return stack.model_copy(update={"behaviours": {**stack.behaviours, "fsdp_trainable_dtype": keep}})


@pytest.mark.parametrize(("world", "method", "mixed", "fp32_load"), CASES,
                         ids=[f"{w}-{m}-{'mp' if mp else 'bf16'}{'-fp32load' if f else ''}" for w, m, mp, f in CASES])
def test_fsdp2_estimate_within_5pct_of_trace(world: int, method: str, mixed: bool, fp32_load: bool) -> None:
    from planner.estimator import estimate
    from planner.parallel.spec import ParallelSpec, Strategy
    from planner.specs import GIB, Method, TrainSpec
    from probes.trace_fsdp import run_fsdp_trace

    raw, profile = _reduced(LAYERS)
    spec = TrainSpec(method=Method(method), seq_len=512, micro_batch=1, rank=16, grad_ckpt=True,
                     fp32_master=fp32_load)
    run = run_fsdp_trace(raw, spec, world, mixed_precision=mixed)
    traced = run.peak_bytes / GIB
    est = estimate(profile, spec, parallel=ParallelSpec(strategy=Strategy.FSDP2, gpus=world),
                   stack=None if mixed else _raw_fully_shard_stack())
    err = (est.peak_gib.allocated - traced) / traced
    label = ("accelerate bf16 mixed" if mixed else "raw bf16") + (", fp32 load" if fp32_load else "")
    ROWS.append(f"{world:5d} {method:6s} {label:22s} {est.peak_gib.allocated:9.3f} {traced:8.3f} {err * 100:+6.1f}%")
    assert abs(err) <= TOLERANCE, (
        f"estimate {est.peak_gib.allocated:.3f} GiB ({est.peak_phase}) vs traced {traced:.3f} GiB "
        f"({run.detail.peak_phase}); estimate terms {[(t.name, round(t.gib, 3)) for t in est.terms]}"
    )


def test_accelerate_mixed_precision_keeps_fp32_shards() -> None:
    """Under accelerate's mixed precision the trainable shards are fp32: 2x the bf16 run's at rest."""
    from planner.specs import Method, TrainSpec
    from probes.trace_fsdp import run_fsdp_trace

    raw, _ = _reduced(2)
    spec = TrainSpec(method=Method.FULL, seq_len=128, micro_batch=1, grad_ckpt=True)
    bf16, mixed = (run_fsdp_trace(raw, spec, 2, mixed_precision=m).detail.breakdown_gib["end"] for m in (False, True))
    assert mixed.trainable_gib == pytest.approx(2 * bf16.trainable_gib, rel=1e-3)
    assert mixed.optimizer_gib == pytest.approx(2 * bf16.optimizer_gib, rel=1e-3)


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
