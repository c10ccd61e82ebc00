"""``loraplan probe --gpus 2`` on CPU gloo: torch.distributed.run launches two ranks, both results gathered.

A plumbing check (launch, FSDP2 / DDP wrapping, two optimizer steps, gathering), not a GPU measurement:
the tiny Llama of ``tests/data/tiny-llama/config.json`` (2 layers, hidden 64), seq 32, LoRA.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import needs_torch_stack

pytestmark = [needs_torch_stack, pytest.mark.trace]

TINY = "tests/data/tiny-llama/config.json"


@pytest.mark.parametrize(("strategy", "offload"), [("fsdp2", "none"), ("ddp", "none"), ("fsdp2", "params")])
def test_two_gloo_ranks_gathered(strategy: str, offload: str) -> None:
    """FSDP1 is not here: torch 2.13's FullyShardedDataParallel refuses a CPU-only process."""
    from planner.parallel.spec import Offload, ParallelSpec, Strategy
    from planner.specs import TrainSpec
    from probes.launch import run_launch_probe

    spec = TrainSpec(method="lora", seq_len=32, micro_batch=1)
    parallel = ParallelSpec(strategy=Strategy(strategy), gpus=2, offload=Offload(offload))
    result = run_launch_probe(TINY, spec, parallel, device="cpu", steps=2)
    assert result.world_size == 2 and result.plumbing_check and result.device == "cpu"
    assert [r.rank for r in result.ranks] == [0, 1]
    assert all(r.backend == "gloo" and r.peak_allocated_gib > 0 and len(r.step_seconds) == 2 for r in result.ranks)
    assert result.peak_allocated_gib == max(r.peak_allocated_gib for r in result.ranks)
    assert result.estimate_allocated_gib is not None and result.error_pct is not None
    json.loads(result.model_dump_json())


def test_offload_with_ddp_is_one_line() -> None:
    from planner.errors import PlannerError
    from planner.parallel.spec import Offload, ParallelSpec, Strategy
    from probes.launch import worker_strategy

    with pytest.raises(PlannerError, match="sharding|sharded"):
        worker_strategy(ParallelSpec(strategy=Strategy.DDP, gpus=2, offload=Offload.OPTIMIZER))
