"""``probe --matrix``: the matrix file model, the budget, the runner's status recording and summary.

The runner is exercised with fake children (a process that crashes, hangs, reports an OOM or
succeeds) and, under the ``trace`` marker, end to end on a 2-row matrix of tiny models in trace mode.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from planner.catalog import profiles_dir
from planner.cli import cli
from planner.cli.options import train_spec
from planner.cli.probe import probe
from planner.errors import PlannerError
from planner.matrix.budget import DEFAULT_BUDGET_S, plan, search_batches
from planner.matrix.derive import derive_calibration, throughput_rows
from planner.matrix.spec import Matrix, MatrixRow, RunRecord, load_matrix, probe_flags
from planner.matrix.summary import markdown_table, summarize
from planner.specs import Attn, Method, Optim, TrainSpec
from probes.matrix import load_records, run_matrix, run_row
from tests.conftest import needs_torch_stack

H200_MATRIX = profiles_dir() / "measurements" / "matrix-h200.json"
TINY = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256, "max_position_embeddings": 256,
        "tie_word_embeddings": False, "rms_norm_eps": 1e-5}


@pytest.fixture()
def tiny(tmp_path: Path) -> str:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    return str(path)


def _matrix(tiny: str, **extra) -> Matrix:
    rows = [MatrixRow(id="tiny-lora", model=tiny, priority=2, train=TrainSpec(seq_len=32, rank=4)),
            MatrixRow(id="tiny-qlora-1l", model=tiny, num_hidden_layers=1, priority=1,
                      train=TrainSpec(method=Method.QLORA, seq_len=32, micro_batch=2))]
    return Matrix(name="tiny", gpu="H200", rows=rows, **extra)


# --------------------------------------------------------------------------- the file


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "m.json"
    path.write_text(json.dumps(data))
    return path


def test_unknown_key_is_one_clear_error(tmp_path: Path) -> None:
    path = _write(tmp_path, {"name": "x", "gpu": "H200", "rows": [{"id": "a", "model": "llama-3.2-1b", "bogus": 1}]})
    with pytest.raises(PlannerError, match=r"rows\.0\.bogus: Extra inputs are not permitted"):
        load_matrix(path)


def test_unknown_train_field_duplicate_id_and_model(tmp_path: Path) -> None:
    row = {"id": "a", "model": "llama-3.2-1b"}
    with pytest.raises(PlannerError, match=r"rows\.0\.train\.ranks"):
        load_matrix(_write(tmp_path, {"name": "x", "gpu": "H200", "rows": [{**row, "train": {"ranks": 8}}]}))
    with pytest.raises(PlannerError, match="duplicate row id 'a'"):
        load_matrix(_write(tmp_path, {"name": "x", "gpu": "H200", "rows": [row, row]}))
    with pytest.raises(PlannerError, match="llama-3.2-1b"):  # closest name suggested
        load_matrix(_write(tmp_path, {"name": "x", "gpu": "H200", "rows": [{"id": "a", "model": "llama-3.2-1"}]}))


def test_cli_bad_matrix_exits_2_without_traceback(tmp_path: Path) -> None:
    path = _write(tmp_path, {"name": "x", "gpu": "H200", "rows": []})
    res = CliRunner().invoke(cli, ["probe", "--matrix", str(path), "--dry-run"])
    assert res.exit_code == 2 and "rows" in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("spec", [
    TrainSpec(),
    TrainSpec(method=Method.QLORA, rank=8, alpha=16, grad_ckpt=False, kbit_prepare=False, double_quant=False,
              optim=Optim.PAGED_ADAMW_8BIT, attn=Attn.EAGER, micro_batch=4, seq_len=512, lora_dropout=0.1),
    TrainSpec(method=Method.FULL, optim=Optim.ADAMW_8BIT, fp32_master=True),  # LoRA-only fields are not passed
])
def test_probe_flags_round_trip_through_the_cli(spec: TrainSpec) -> None:
    ctx = probe.make_context("probe", ["llama-3.2-1b", *probe_flags(spec)])
    assert train_spec(**ctx.params) == spec


def test_h200_matrix_covers_the_issue_and_fits_the_budget() -> None:
    m = load_matrix(H200_MATRIX)
    specs = [r.train for r in m.rows]
    assert {r.model for r in m.rows} == {"llama-3.2-1b", "qwen2.5-1.5b", "llama-3-8b", "mixtral-8x7b"}
    assert {Method.LORA, Method.QLORA, Method.FULL} <= {s.method for s in specs}
    assert all(r.model == "llama-3.2-1b" for r in m.rows if r.train.method is Method.FULL)
    assert {s.grad_ckpt for s in specs} == {True, False} and {s.seq_len for s in specs} == {512, 2048}
    assert {s.micro_batch for s in specs} == {1, 4} and {s.attn for s in specs} == {Attn.SDPA, Attn.EAGER}
    assert {Optim.ADAMW, Optim.ADAMW_8BIT, Optim.PAGED_ADAMW_8BIT} <= {s.optim for s in specs}
    assert {s.kbit_prepare for s in specs if s.method is Method.QLORA} == {True, False}
    assert all(s.rank == 16 and s.targets == ("all-linear",) for s in specs)
    assert all(s.double_quant and s.quant_bits == 4 for s in specs if s.method is Method.QLORA)
    assert [r.train.seq_len for r in m.rows if r.find_max_batch and r.model == "llama-3-8b"] == [2048]
    assert [r.num_hidden_layers for r in m.rows if r.model == "mixtral-8x7b"] == [2, 2]
    p = plan(m, DEFAULT_BUDGET_S)
    assert p.kept_s <= DEFAULT_BUDGET_S < 480


# --------------------------------------------------------------------------- budget


def test_budget_drops_lowest_priority_first(tiny: str) -> None:
    m = _matrix(tiny, startup_s=10.0)
    full = plan(m, 1e9)
    assert all(r.keep for r in full.rows) and all(r.seconds >= 10.0 for r in full.rows)
    one = plan(m, full.rows[0].seconds + 1)
    assert [r.keep for r in one.rows] == [True, False]  # priority 1 dropped, priority 2 kept
    assert not any(r.keep for r in plan(m, 1.0).rows)


def test_search_batches_doubles_then_bisects() -> None:
    assert search_batches(1) == [1, 2]
    assert search_batches(5) == [1, 2, 4, 8, 6, 5]


def test_dry_run_cli_table_and_json() -> None:
    res = CliRunner().invoke(cli, ["probe", "--matrix", str(H200_MATRIX), "--dry-run", "--budget-s", "300"])
    assert res.exit_code == 0 and "drop" in res.output and "budget 300 s" in res.output
    res = CliRunner().invoke(cli, ["probe", "--matrix", str(H200_MATRIX), "--dry-run", "--json"])
    data = json.loads(res.output)
    assert data["budget_s"] == DEFAULT_BUDGET_S and len(data["rows"]) == len(load_matrix(H200_MATRIX).rows)


# --------------------------------------------------------------------------- runner with fake children

FAKE_OK = {"model": "tiny", "mode": "gpu", "fits": True, "tokens_per_s": 1000.0,
           "estimate": {"peak_gib": {"allocated": 1.0, "reserved": 1.1, "device": 1.6}},
           "measured_gib": {"peak_allocated": 1.02, "peak_reserved": 1.12, "device": 1.7}, "environment": {}}


def _fake(code: str):
    """A launcher running ``code`` with the probe's ``--save`` path as ``sys.argv[1]``."""
    return lambda cmd: [sys.executable, "-c", code, cmd[cmd.index("--save") + 1]]


def _write_result(result: dict) -> str:
    return f"import json, sys; open(sys.argv[1], 'w').write(json.dumps({result!r}))"


@pytest.mark.parametrize(("code", "status"), [
    ("import sys; sys.exit(3)", "crash"),
    ("import time; time.sleep(30)", "timeout"),
    (_write_result({**FAKE_OK, "fits": False, "failed_phase": "backward", "measured_gib": {}}), "oom"),
    (_write_result(FAKE_OK), "ok"),
])
def test_failures_are_recorded_results(tiny: str, tmp_path: Path, code: str, status: str) -> None:
    m = _matrix(tiny)
    rec = run_row(m, m.rows[0], tmp_path, trace=False, timeout_s=2.0, launcher=_fake(code))
    assert rec.status == status
    assert rec.command[1:4] == ["-m", "planner", "probe"] and "--save" in rec.command
    if status == "crash":
        assert rec.returncode == 3 and rec.result is None
    if status == "timeout":
        assert rec.returncode is None and rec.seconds < 10


def test_run_matrix_writes_records_summary_and_skips(tiny: str, tmp_path: Path) -> None:
    m = _matrix(tiny, startup_s=10.0)
    budget = plan(m, 1e9).rows[0].seconds + 1  # only the priority-2 row fits
    _, summary = run_matrix(m, tmp_path, trace=False, timeout_s=5.0, budget_s=budget,
                            launcher=_fake(_write_result(FAKE_OK)))
    assert [(r.id, r.status) for r in summary.rows] == [("tiny-lora", "ok"), ("tiny-qlora-1l", "skipped")]
    row = summary.rows[0]
    assert row.allocated.error_pct == pytest.approx((1.0 - 1.02) / 1.02 * 100)
    assert summary.worst_abs_error_pct["device"] == pytest.approx(abs((1.6 - 1.7) / 1.7 * 100))
    assert [r.status for r in load_records(tmp_path)] == ["ok", "skipped"]
    assert json.loads((tmp_path / "summary.json").read_text())["matrix"] == "tiny"
    assert "| tiny-lora | ok |" in (tmp_path / "summary.md").read_text()
    assert not (tmp_path / "configs" / "tiny-qlora-1l.json").exists()  # a skipped row starts nothing


# --------------------------------------------------------------------------- derivations

CAL = {"gpu": "NVIDIA H200", "profile": "H200", "cuda_context_gib": 0.52, "allocator_reserve_gib": 0.3,
       "allocator_reserve_fraction": 0.05}


def _gpu_record(tiny: str, i: int, context: float, fraction: float, status: str = "ok") -> RunRecord:
    result = {**FAKE_OK, "calibration": {**CAL, "cuda_context_gib": context, "allocator_reserve_fraction": fraction},
              "environment": {"gpu": "NVIDIA H200", "driver": "590.48.01", "cuda": "12.8", "torch": "2.13.0"},
              "gpu": {"steps": 2, "step_seconds": [0.5, 0.7]}}
    return RunRecord(matrix="synthetic", gpu="H200", mode="gpu", status=status, result=result,
                     row=MatrixRow(id=f"r{i}", model=tiny, train=TrainSpec(seq_len=32)))


def test_derive_calibration_medians_and_provenance(tiny: str, tmp_path: Path) -> None:
    """Synthetic records (not measurements): the derivation takes medians over ok GPU runs only."""
    recs = [_gpu_record(tiny, 0, 0.50, 0.04), _gpu_record(tiny, 1, 0.54, 0.08), _gpu_record(tiny, 2, 0.52, 0.06),
            _gpu_record(tiny, 3, 9.0, 9.0, status="oom")]
    cal = derive_calibration(recs)
    assert cal["cuda_context_gib"] == pytest.approx(0.52) and cal["allocator_reserve_fraction"] == pytest.approx(0.06)
    assert cal["spread"]["cuda_context_gib"]["n"] == 3 and "r0, r1, r2" in cal["source"]
    assert cal["runtime_json"]["path"] == "cuda_context_gib.by_compute_capability.9.0"
    from planner.calibration import load_calibration

    path = tmp_path / "cal.json"
    path.write_text(json.dumps(cal))
    assert load_calibration(path).cuda_context_gib == pytest.approx(0.52)  # estimate --calibrate reads it
    with pytest.raises(PlannerError, match="no ok GPU run"):
        derive_calibration([recs[3]])


def test_throughput_rows_match_the_published_runs_format(tiny: str) -> None:
    from planner.time.points import _train_from

    rows = throughput_rows([_gpu_record(tiny, 0, 0.5, 0.05)])
    assert len(rows) == 1
    row = rows[0]
    published = json.loads((profiles_dir() / "throughput_runs.json").read_text())["runs"][0]
    assert set(published) - {"impl"} <= set(row)
    assert row["tokens_per_s"] == 1000.0 and row["seconds_per_step"] == pytest.approx(0.6)
    assert _train_from(row["train"]) == TrainSpec(seq_len=32)


def test_markdown_table_has_median_and_worst(tiny: str) -> None:
    text = markdown_table(summarize([_gpu_record(tiny, 0, 0.5, 0.05)]))
    assert "| median abs err % |" in text and "| worst abs err % |" in text


# --------------------------------------------------------------------------- end to end (trace)


@needs_torch_stack
@pytest.mark.trace
def test_trace_matrix_end_to_end(tiny: str, tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(_matrix(tiny).model_dump_json())
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["probe", "--matrix", str(path), "--out", str(out), "--trace",
                                   "--timeout-per-run", "120"])
    assert res.exit_code == 0, res.output
    records = load_records(out)
    assert [(r.row.id, r.status, r.mode) for r in records] == [("tiny-lora", "ok", "trace"),
                                                                ("tiny-qlora-1l", "ok", "trace")]
    for r in records:
        assert r.result["mode"] == "trace" and r.result["measured_gib"]["peak_allocated"] > 0
        assert r.result["environment"]["command"][1] == "probe" and "trl" in r.result["environment"]
    qlora = records[1].result
    assert qlora["estimate"]["train"]["method"] == "qlora"
    assert json.loads((out / "configs" / "tiny-qlora-1l.json").read_text())["num_hidden_layers"] == 1
    assert "tiny on H200 (trace)" in res.output and (out / "summary.md").is_file()


# --------------------------------------------------------------------------- 80 columns


@pytest.mark.parametrize("width", [80, 120])
def test_matrix_tables_fit_80_columns(tiny: str, width: int) -> None:
    from planner.cli.render.matrix import render_plan, render_summary
    from tests.test_render_width import _assert_unwrapped, _Recorder

    console = _Recorder(width)
    render_plan(plan(load_matrix(H200_MATRIX), DEFAULT_BUDGET_S), console)
    recs = [_gpu_record(tiny, 0, 0.5, 0.05), _gpu_record(tiny, 1, 0.5, 0.05, status="timeout")]
    recs = [r.model_copy(update={"row": r.row.model_copy(update={"id": "l8b-qlora-s512-mb4-padamw8"})}) for r in recs]
    render_summary(summarize(recs), console)
    assert len(console.tables) == 2
    for table in console.tables:
        _assert_unwrapped(table, width)
