"""ZeRO plans' ``deepspeed_config_json`` and torchrun alternative: JSON-parses, has DeepSpeed's required keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from planner.parallel.spec import Offload, ParallelSpec, Strategy
from planner.recommender.launch import deepspeed_json, torchrun_command
from planner.specs import DType


@pytest.mark.parametrize("strategy,stage", [(Strategy.ZERO1, 1), (Strategy.ZERO2, 2), (Strategy.ZERO3, 3)])
def test_ds_json_keys(strategy: Strategy, stage: int) -> None:
    p = ParallelSpec(strategy=strategy, gpus=4)
    data = json.loads(json.dumps(deepspeed_json(p, micro_batch=2, grad_accum=8, dtype=DType.BF16)))
    assert {"zero_optimization", "bf16", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
            "gradient_clipping"} <= set(data)
    assert data["zero_optimization"]["stage"] == stage and data["bf16"]["enabled"] is True
    assert data["train_micro_batch_size_per_gpu"] == 2 and data["gradient_accumulation_steps"] == 8
    # No bucket size or overlap_comm: DeepSpeed's defaults, which accelerate.yaml runs and the estimate models.
    assert not {"reduce_bucket_size", "stage3_prefetch_bucket_size", "overlap_comm"} & set(data["zero_optimization"])


def test_offload_and_multinode() -> None:
    p = ParallelSpec(strategy=Strategy.ZERO3, gpus=8, nodes=2, offload=Offload.PARAMS)
    zero = deepspeed_json(p, micro_batch=1, grad_accum=1, dtype=DType.BF16)["zero_optimization"]
    assert zero["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
    assert zero["offload_param"] == {"device": "cpu", "pin_memory": True}
    cmd = torchrun_command(p)
    assert "--nnodes 2" in cmd and "--node-rank RANK" in cmd and "--rdzv-endpoint MAIN_NODE_IP:29500" in cmd
    assert "--nproc-per-node 8" in cmd and "--deepspeed ds.json" in cmd


KEYS = json.loads((Path(__file__).parent / "data" / "deepspeed_config_keys.json").read_text())
"""Keys DeepSpeed v0.19.8's config models accept, and those transformers fills from ``"auto"``."""


def _leaves(data: dict, prefix: str = "") -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for key, value in data.items():
        path = f"{prefix}{key}"
        out += _leaves(value, path + ".") if isinstance(value, dict) else [(path, value)]
    return out


@pytest.mark.parametrize(("strategy", "offload"), [
    (s, o) for s in (Strategy.ZERO1, Strategy.ZERO2, Strategy.ZERO3) for o in Offload
    if o is not Offload.PARAMS or s is Strategy.ZERO3  # parameter offload is ZeRO-3 only
])
def test_ds_json_keys_are_deepspeeds(strategy: Strategy, offload: Offload) -> None:
    """Every key we write is one DeepSpeed's config models read (an unknown key is silently ignored by
    DeepSpeed, so a typo would change nothing and mislead), and every "auto" is one transformers fills."""
    p = ParallelSpec(strategy=strategy, gpus=4, offload=offload)
    data = deepspeed_json(p, micro_batch=2, grad_accum=8, dtype=DType.BF16)
    allowed = {
        "zero_optimization": set(KEYS["zero_optimization"]), "bf16": set(KEYS["precision"]),
        "fp16": set(KEYS["precision"]), "zero_optimization.offload_param": set(KEYS["offload_param"]),
        "zero_optimization.offload_optimizer": set(KEYS["offload_optimizer"]),
    }
    assert set(data) <= set(KEYS["top_level"]), set(data) - set(KEYS["top_level"])
    for path, value in _leaves(data):
        parent, _, key = path.rpartition(".")
        if parent:
            assert key in allowed[parent], f"{path} is not a DeepSpeed v0.19.8 config key"
        if value == "auto":
            assert path in KEYS["auto_filled_by_transformers"], f"{path}: 'auto' that transformers does not fill"
