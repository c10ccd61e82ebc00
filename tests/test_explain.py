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
    assert {"checkpointing off", "QLoRA (4-bit base)", "8-bit optimizer", "paged 8-bit optimizer", "rank halved",
            "attention-only targets", "seq-len halved"} <= {c.change for c in modeled}
    qlora = changes["QLoRA (4-bit base)"]
    assert qlora.peak_gib == inputs.run(TrainSpec(method=Method.QLORA)).peak_gib.device
    assert qlora.saves_gib == pytest.approx(base - qlora.peak_gib) and qlora.saves_gib > 5
    assert changes["checkpointing off"].saves_gib < 0 and changes["checkpointing off"].fits is False
    assert changes["micro-batch halved"].status is ChangeStatus.NOT_APPLICABLE
    assert changes["LoRA, not full"].status is ChangeStatus.NOT_APPLICABLE


def test_not_modeled_rows_have_no_numbers() -> None:
    expl = explain(resolve("llama-3-8b", "4090"), TrainSpec())
    rows = [c for c in expl.changes if c.status is ChangeStatus.NOT_MODELED]
    assert {c.change for c in rows} == {"chunked/fused loss", "CPU offload"}
    assert all(c.peak_gib is None and c.saves_gib is None and c.fits is None and c.note for c in rows)
    assert "full logits" in _by_change(expl)["chunked/fused loss"].note


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
    assert _by_change(expl)["paged 8-bit optimizer"].status is ChangeStatus.NOT_APPLICABLE
    assert _by_change(expl)["8-bit optimizer"].status is ChangeStatus.NOT_APPLICABLE


def test_cli_table() -> None:
    res = run("estimate", "llama-3-8b", "--gpu", "4090", "--explain")
    assert res.exit_code == 0, res.output
    out = res.output
    assert "What would it take" in out and "not modeled for this stack" in out
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
