"""Run a measurement matrix: each row in its own fresh ``loraplan probe`` process, with a timeout.

Fresh processes keep one run's allocator cache, fragmentation or OOM from touching the next. Each
row writes ``DIR/runs/<id>.json`` (:class:`planner.matrix.spec.RunRecord`, wrapping the probe's
``--save`` JSON); an OOM, a timeout or a crash is a recorded result, not an abort. At the end
``DIR/summary.json`` and ``DIR/summary.md`` hold estimate vs measured for every row.

This module imports no torch itself (the children do). ``python -m probes.matrix FILE --out DIR
[--trace] [--timeout-per-run S] [--budget-s S] [--dry-run]``; ``python -m probes.matrix calibrate DIR``
writes ``DIR/calibration-proposal.json`` (:mod:`planner.matrix.derive`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from planner.errors import PlannerError
from planner.matrix.budget import DEFAULT_BUDGET_S, DEFAULT_TIMEOUT_S, Plan, plan
from planner.matrix.files import write_json
from planner.matrix.spec import Matrix, MatrixRow, RunRecord, Status, load_matrix, probe_flags, row_config
from planner.matrix.summary import Summary, markdown_table, summarize

STDERR_TAIL_CHARS = 2000

Launcher = Callable[[list[str]], list[str]]
"""Maps the probe command to the argv actually run (tests substitute a fake child)."""


def probe_command(matrix: Matrix, row: MatrixRow, out: Path, *, trace: bool) -> list[str]:
    """The exact ``python -m planner probe ...`` argv for ``row`` (writes the row's config when overridden)."""
    model = row.model
    if row.num_hidden_layers is not None:
        cfg = out / "configs" / f"{row.id}.json"
        write_json(cfg, row_config(row))
        model = str(cfg)
    cmd = [sys.executable, "-m", "planner", "probe", model, *probe_flags(row.train), "--gpu", matrix.gpu,
           "--steps", str(row.steps), "--json", "--save", str(out / "probe" / f"{row.id}.json")]
    if row.find_max_batch:
        cmd.append("--find-max-batch")
    if trace:
        cmd.append("--trace")
    return cmd


def _status(returncode: int | None, result: dict | None) -> Status:
    if result is None or returncode not in (0, None):
        return "crash"
    if not result.get("fits", True) and result.get("failed_phase"):
        return "oom"
    return "ok"


def run_row(matrix: Matrix, row: MatrixRow, out: Path, *, trace: bool, timeout_s: float,
            launcher: Launcher | None = None) -> RunRecord:
    """Run one row in a fresh process group; kill the group after ``timeout_s``."""
    cmd = probe_command(matrix, row, out, trace=trace)
    save = Path(cmd[cmd.index("--save") + 1])
    save.parent.mkdir(parents=True, exist_ok=True)
    save.unlink(missing_ok=True)
    argv = launcher(cmd) if launcher else cmd
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=timeout_s)
        returncode: int | None = proc.returncode
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        returncode, timed_out = None, True
    finally:  # the runner itself stopped (Ctrl-C, SIGTERM): never leave the child's session running
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    seconds = time.monotonic() - start
    result = None
    if save.is_file():
        try:
            result = json.loads(save.read_text())
        except json.JSONDecodeError:
            result = None
    status: Status = "timeout" if timed_out else _status(returncode, result)
    return RunRecord(matrix=matrix.name, gpu=matrix.gpu, mode="trace" if trace else "gpu", row=row, status=status,
                     seconds=seconds, command=cmd, returncode=returncode, stderr_tail=(err or "")[-STDERR_TAIL_CHARS:],
                     result=result)


def run_matrix(matrix: Matrix, out: Path, *, trace: bool = False, timeout_s: float = DEFAULT_TIMEOUT_S,
               budget_s: float = DEFAULT_BUDGET_S, launcher: Launcher | None = None,
               on_row: Callable[[RunRecord], None] | None = None) -> tuple[Plan, Summary]:
    """Plan against ``budget_s``, run the kept rows in priority order, write the records and the summary.

    The budget uses the GPU time model even under ``trace`` (the plan is the GPU run's; trace mode runs
    the same rows so the plumbing is proven first). Dropped rows are recorded as ``skipped``.
    """
    the_plan = plan(matrix, budget_s)
    write_json(out / "plan.json", the_plan.model_dump(mode="json"))
    keep = {r.id for r in the_plan.rows if r.keep}
    rows = sorted(matrix.rows, key=lambda r: -r.priority)  # stable: file order within a priority
    records = []
    for row in rows:
        if row.id in keep:
            rec = run_row(matrix, row, out, trace=trace, timeout_s=timeout_s, launcher=launcher)
        else:
            rec = RunRecord(matrix=matrix.name, gpu=matrix.gpu, mode="trace" if trace else "gpu", row=row,
                            status="skipped")
        write_json(out / "runs" / f"{row.id}.json", rec.model_dump(mode="json"))
        records.append(rec)
        if on_row is not None:
            on_row(rec)
    summary = summarize(records)
    write_json(out / "summary.json", summary.model_dump(mode="json"))
    (out / "summary.md").write_text(markdown_table(summary))
    return the_plan, summary


def load_records(directory: Path) -> list[RunRecord]:
    """Every ``runs/*.json`` record under ``directory`` (sorted by file name)."""
    paths = sorted((directory / "runs").glob("*.json")) if (directory / "runs").is_dir() else []
    return [RunRecord.model_validate_json(p.read_text()) for p in paths]


def plan_text(the_plan: Plan) -> str:
    lines = [f"{'row':<34} {'prio':>4} {'tokens':>8} {'tok/s':>7} {'est s':>6}  run"]
    for r in the_plan.rows:
        lines.append(f"{r.id:<34} {r.priority:>4} {r.tokens:>8} {r.tokens_per_s:>7.0f} {r.seconds:>6.1f}  "
                     f"{'yes' if r.keep else 'DROP'}")
    lines.append(f"kept {the_plan.kept_s:.0f} s of {the_plan.total_s:.0f} s planned; budget {the_plan.budget_s:.0f} s")
    return "\n".join(lines)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through run_row's finally, which kills the child


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        if args[:1] == ["calibrate"]:
            from planner.matrix.derive import write_proposal

            p = argparse.ArgumentParser(prog="python -m probes.matrix calibrate")
            p.add_argument("dir", type=Path)
            ns = p.parse_args(args[1:])
            path = write_proposal(load_records(ns.dir), ns.dir)
            print(f"wrote {path}")
            return 0
        p = argparse.ArgumentParser(prog="python -m probes.matrix", description=__doc__.split("\n")[0])
        p.add_argument("matrix", type=Path)
        p.add_argument("--out", type=Path)
        p.add_argument("--trace", action="store_true")
        p.add_argument("--timeout-per-run", type=float, default=DEFAULT_TIMEOUT_S)
        p.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S)
        p.add_argument("--dry-run", action="store_true")
        ns = p.parse_args(args)
        matrix = load_matrix(ns.matrix)
        if ns.dry_run:
            print(plan_text(plan(matrix, ns.budget_s)))
            return 0
        if ns.out is None:
            p.error("--out DIR is required (except with --dry-run)")
        _, summary = run_matrix(matrix, ns.out, trace=ns.trace, timeout_s=ns.timeout_per_run, budget_s=ns.budget_s,
                                on_row=lambda r: print(f"{r.row.id}: {r.status} ({r.seconds:.0f} s)", flush=True))
        print(markdown_table(summary))
        return 0
    except PlannerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
