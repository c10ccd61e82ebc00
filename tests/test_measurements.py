"""CI check (no GPU): every committed measurement re-estimated from its recorded configuration.

Reads every ``runs/*.json`` record (:class:`planner.matrix.spec.RunRecord`) under
``profiles/measurements/`` with status ``ok``; the estimate is recomputed from the record's row
(model, layer override, TrainSpec) and GPU, and must be within issue 10's bounds of what was
measured: allocated 5 %, reserved 8 %, device 10 %. A failure prints the per-run table.

With no GPU measurement committed the same code runs on ``tests/data/measurement-fixture.json``
(a CPU trace record of the H200 matrix's ``l1b-lora-s512-mb1`` row, made by
``python -m probes.matrix ... --trace``; it measures allocated only), and a perturbed copy must fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from planner.catalog import profiles_dir
from planner.matrix.spec import RunRecord
from planner.matrix.summary import markdown_table, summarize, violations

FIXTURE = Path(__file__).parent / "data" / "measurement-fixture.json"


def committed_records() -> list[Path]:
    return sorted(p for p in (profiles_dir() / "measurements").glob("**/runs/*.json"))


def _check(paths: list[Path]) -> list[str]:
    records = [RunRecord.model_validate_json(p.read_text()) for p in paths]
    records = [r for r in records if r.status == "ok" and r.result]
    summary = summarize(records, reestimate=True)
    bad = violations(summary.rows)
    if bad:
        print(markdown_table(summary))
    return bad


@pytest.mark.parametrize("path", committed_records() or [FIXTURE], ids=lambda p: p.stem)
def test_measurement_within_bounds(path: Path) -> None:
    bad = _check([path])
    assert not bad, "\n".join(bad)


def test_fixture_is_checked_on_allocated() -> None:
    rec = RunRecord.model_validate_json(FIXTURE.read_text())
    row = summarize([rec], reestimate=True).rows[0]
    assert rec.status == "ok" and row.allocated.error_pct is not None


def test_perturbed_measurement_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = RunRecord.model_validate_json(FIXTURE.read_text()).model_dump(mode="json")
    data["result"]["measured_gib"]["peak_allocated"] *= 1.10  # a 10 % larger measurement
    path = tmp_path / "runs" / "perturbed.json"
    path.parent.mkdir()
    path.write_text(RunRecord.model_validate(data).model_dump_json())
    bad = _check([path])
    assert len(bad) == 1 and "allocated" in bad[0] and "> 5%" in bad[0]
    assert "| l1b-lora-s512-mb1 | ok |" in capsys.readouterr().out


def test_bounds_on_reserved_and_device() -> None:
    """Synthetic (not a measurement): the reserved / device bounds trip on their own."""
    rec = RunRecord.model_validate_json(FIXTURE.read_text())
    est = summarize([rec], reestimate=True).rows[0]
    data = rec.model_dump(mode="json")
    data["result"]["measured_gib"].update(peak_allocated=est.allocated.estimate_gib,
                                          peak_reserved=est.reserved.estimate_gib / 1.09,
                                          device=est.device.estimate_gib / 1.09)
    bad = violations(summarize([RunRecord.model_validate(data)], reestimate=True).rows)
    assert [b.split(":")[1].split()[0] for b in bad] == ["reserved"]  # device is within 10 %
