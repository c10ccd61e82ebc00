"""``profiles/measurements/matrix-*.json``: a list of probe configurations, validated strictly.

A row names a shipped model (or a config.json path), optionally overrides ``num_hidden_layers``
(e.g. a 2-layer Mixtral built from its config), gives the :class:`planner.specs.TrainSpec` fields that
differ from the defaults, and a ``priority`` (higher runs first; the budget drops the lowest).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from planner.catalog import load_model, normalize_config, raw_config
from planner.errors import PlannerError
from planner.specs import Frozen, ModelProfile, TrainSpec

STATUSES = ("ok", "oom", "timeout", "crash", "skipped")
Status = Literal["ok", "oom", "timeout", "crash", "skipped"]


class MatrixRow(Frozen):
    """One probe configuration (one fresh process)."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    """File-name-safe identifier; the run's result is ``DIR/runs/<id>.json``."""
    model: str
    """Shipped model name / alias, or a config.json path."""
    num_hidden_layers: int | None = Field(default=None, gt=0)
    """Build the model with this many layers instead of the config's (random weights either way)."""
    train: TrainSpec = TrainSpec()
    priority: int = 0
    """Higher runs first; :func:`planner.matrix.budget.plan` drops the lowest priority to fit the budget."""
    find_max_batch: bool = False
    steps: int = Field(default=2, gt=0)
    """Measured optimizer steps (after one warm-up step)."""


class Matrix(Frozen):
    """A measurement matrix file."""

    name: str
    gpu: str
    """GPU profile the estimates (and the budget's tokens/s) use, e.g. ``H200``."""
    note: str = ""
    startup_s: float = Field(default=20.0, ge=0)
    """Per-process cost charged by the budget: interpreter + torch/transformers import + random-weight
    model build (measured CPU-side start-up of ``loraplan probe`` is ~10 s; 20 s leaves room for CUDA init)."""
    rows: list[MatrixRow] = Field(min_length=1)


def load_matrix(path: str | Path) -> Matrix:
    """Read and validate a matrix file.

    Raises:
        PlannerError: unreadable file, bad JSON, an unknown key, a bad value, a duplicate row id or an
            unknown model (one line naming the first problem).
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except OSError as err:
        raise PlannerError(f"cannot read matrix file {p}: {err.strerror}") from None
    except json.JSONDecodeError as err:
        raise PlannerError(f"matrix file {p} is not valid JSON: {err}") from None
    try:
        matrix = Matrix.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "(top level)"
        raise PlannerError(f"matrix file {p}: {where}: {first['msg']}") from None
    seen: set[str] = set()
    for row in matrix.rows:
        if row.id in seen:
            raise PlannerError(f"matrix file {p}: duplicate row id {row.id!r}")
        seen.add(row.id)
        load_model(row.model)  # unknown names fail here with the closest matches
    return matrix


def row_config(row: MatrixRow) -> dict[str, Any]:
    """The raw config.json the row's model is built from (with the layer override applied)."""
    raw = dict(raw_config(row.model))
    if row.num_hidden_layers is not None:
        raw["num_hidden_layers"] = row.num_hidden_layers
    return raw


def row_profile(row: MatrixRow) -> ModelProfile:
    """The row's model as the estimator sees it (layer override applied)."""
    base = load_model(row.model)
    if row.num_hidden_layers is None:
        return base
    return ModelProfile(name=f"{base.name} ({row.num_hidden_layers} layers)", hub_id=base.hub_id, source=base.source,
                        config=normalize_config(row_config(row)))


def probe_flags(spec: TrainSpec) -> list[str]:
    """``loraplan probe`` options that reproduce ``spec``: every field the method uses (so defaults can change
    safely), none that it ignores (the CLI rejects those, :mod:`planner.cli.conflicts`)."""
    flags = [
        "--method", spec.method.value, "--micro-batch", str(spec.micro_batch), "--seq-len", str(spec.seq_len),
        "--grad-accum", str(spec.grad_accum), "--optim", spec.optim.value, "--attn", spec.attn.value,
        "--dtype", spec.dtype.value, "--grad-ckpt" if spec.grad_ckpt else "--no-grad-ckpt",
    ]
    if spec.method.value != "full":
        flags += ["--rank", str(spec.rank), "--alpha", repr(spec.alpha), "--targets", ",".join(spec.targets),
                  "--dora" if spec.dora else "--no-dora"]
        if spec.lora_dropout is not None:
            flags += ["--lora-dropout", repr(spec.lora_dropout)]
    if spec.method.value == "qlora":
        flags += ["--quant-bits", str(spec.quant_bits), "--double-quant" if spec.double_quant else "--no-double-quant",
                  "--kbit-prepare" if spec.kbit_prepare else "--no-kbit-prepare"]
    else:
        flags += ["--fp32-master" if spec.fp32_master else "--no-fp32-master"]
    return flags


class RunRecord(Frozen):
    """``DIR/runs/<id>.json``: one row's run. ``result`` is the probe's ``--save`` JSON
    (:class:`probes.results.ProbeResult`), absent when the process timed out or crashed."""

    matrix: str
    gpu: str
    """The matrix's GPU profile (what the estimate is for)."""
    mode: Literal["gpu", "trace"]
    row: MatrixRow
    status: Status
    """``ok`` (step ran), ``oom`` (the probe reported a phase that ran out of memory), ``timeout``
    (killed after the per-run limit), ``crash`` (non-zero exit or no result written), ``skipped`` (budget)."""
    seconds: float = 0.0
    """Wall seconds of the process."""
    command: list[str] = []
    returncode: int | None = None
    stderr_tail: str = ""
    result: dict[str, Any] | None = None
