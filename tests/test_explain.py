"""``estimate --explain``: every single change, estimated, sorted by savings, marked fits / does not fit."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from planner.cli import cli
from planner.estimator.api import resolve
from planner.explain import ChangeStatus, explain
from planner.specs import Method, Optim, TrainSpec


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def _by_change(expl):
    return {c.change: c for c in expl.changes}


def test_llama_3_8b_on_4090() -> None:
    inputs = resolve("llama-3-8b", "4090")
    expl = explain(inputs, TrainSpec())
    base = inputs.run(TrainSpec()).peak_gib.device
    assert expl.peak_gib == base and expl.fits is True
    modeled = [c for c in expl.changes if c.status is ChangeStatus.MODELED]
    assert [c.saves_gib for c in modeled] == sorted((c.saves_gib for c in modeled), reverse=True)
    changes = _by_change(expl)
    assert {"checkpointing off", "QLoRA (4-bit base)", "8-bit AdamW", "paged 8-bit AdamW", "rank halved",
            "attention-only", "seq-len halved"} <= {c.change for c in modeled}
    qlora = changes["QLoRA (4-bit base)"]
    assert qlora.peak_gib == inputs.run(TrainSpec(method=Method.QLORA)).peak_gib.device
    assert qlora.saves_gib == pytest.approx(base - qlora.peak_gib) and qlora.saves_gib > 5
    assert changes["checkpointing off"].saves_gib < 0 and changes["checkpointing off"].fits is False
    assert changes["micro-batch halved"].status is ChangeStatus.NOT_APPLICABLE
    assert changes["LoRA, not full"].status is ChangeStatus.NOT_APPLICABLE


def test_loss_and_offload_changes_are_estimated_on_the_stack() -> None:
    """The Trainer's full-logits loss: --liger is estimated on the Liger stack; offload on ZeRO-2 with host RAM."""
    from dataclasses import replace

    from planner.parallel.spec import Offload, ParallelSpec, Strategy
    from planner.stack.resolve import resolve_stack

    inputs = resolve("llama-3-8b", "4090")
    changes = _by_change(explain(inputs, TrainSpec()))
    liger = changes["Liger fused CE"]
    liger_stack = resolve_stack("trainer", dict(inputs.run(TrainSpec()).stack.versions), liger=True, detect=False)
    assert liger.status is ChangeStatus.MODELED and liger.flags == "--liger"
    assert liger.peak_gib == replace(inputs, stack=liger_stack.stack).run(TrainSpec()).peak_gib.device
    assert liger.saves_gib > 2 and "logits" in liger.note
    full = TrainSpec(method=Method.FULL)
    offload = _by_change(explain(inputs, full))["optimizer offload"]
    zero2 = replace(inputs, parallel=ParallelSpec(strategy=Strategy.ZERO2, offload=Offload.OPTIMIZER)).run(full)
    assert offload.flags == "--parallel zero2 --offload optimizer" and offload.peak_gib == zero2.peak_gib.device
    assert offload.saves_gib > 20 and "host RAM" in offload.note
    # TRL already fuses the head: nothing to change, and it says so.
    trl = replace(inputs, stack=resolve_stack("trl", detect=False).stack)
    loss = _by_change(explain(trl, TrainSpec()))["fused/chunked loss"]
    assert loss.status is ChangeStatus.NOT_APPLICABLE and "fused_head" in loss.note and loss.peak_gib is None


def test_each_change_alters_one_thing() -> None:
    train = TrainSpec(method=Method.FULL, micro_batch=8, grad_accum=2, grad_ckpt=False, seq_len=4096)
    inputs = resolve("llama-3.2-1b", "a100-80gb")
    changes = _by_change(explain(inputs, train))
    assert changes["checkpointing on"].peak_gib == inputs.run(train.model_copy(update={"grad_ckpt": True})).peak_gib.device
    half = train.model_copy(update={"micro_batch": 4, "grad_accum": 4})
    assert changes["micro-batch halved"].peak_gib == inputs.run(half).peak_gib.device
    assert changes["micro-batch halved"].flags == "--micro-batch 4 --grad-accum 4"
    assert changes["LoRA, not full"].status is ChangeStatus.MODELED
    assert changes["rank halved"].status is ChangeStatus.NOT_APPLICABLE  # full fine-tuning has no adapters


def test_without_gpu_fits_is_null() -> None:
    expl = explain(resolve("qwen2.5-7b"), TrainSpec(optim=Optim.PAGED_ADAMW_8BIT))
    assert expl.gpu is None and all(c.fits is None for c in expl.changes)
    assert _by_change(expl)["paged 8-bit AdamW"].status is ChangeStatus.NOT_APPLICABLE
    assert _by_change(expl)["8-bit AdamW"].status is ChangeStatus.NOT_APPLICABLE


def test_cli_table() -> None:
    res = run("estimate", "llama-3-8b", "--gpu", "4090", "--explain")
    assert res.exit_code == 0, res.output
    out = res.output
    assert "What would it take" in out and "already uses a fused_head loss" in out  # the default stack: trl
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("change"))
    assert lines[header].split() == ["change", "flags", "peak", "saves", "fits"]
    assert lines[header + 2].startswith("QLoRA (4-bit base)") and lines[header + 2].rstrip().endswith("yes")
    assert any(line.startswith("checkpointing off") and line.rstrip().endswith("no") for line in lines)


def test_cli_json_has_explain() -> None:
    data = json.loads(run("estimate", "llama-3-70b", "--gpu", "4090", "--explain", "--json").output)
    assert data["fits"] is False and data["advice"]
    expl = data["explain"]
    assert expl["fits"] is False and expl["gpu"]["name"] == "RTX 4090"
    assert [c["status"] for c in expl["changes"]][:1] == ["modeled"]
    assert "explain" not in json.loads(run("estimate", "llama-3-70b", "--gpu", "4090", "--json").output)
