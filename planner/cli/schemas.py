"""JSON Schemas of every ``--json`` output, generated from the pydantic result models.

The schemas ship under ``profiles/schemas/<name>.schema.json``; ``tests/test_schemas.py`` checks that
regenerating them gives the committed files and that real outputs validate. Regenerate after a
deliberate change of a result model with ``python -m planner.cli.schemas --write``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from planner.catalog import profiles_dir
from planner.cli.output import json_text

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _estimate() -> type[BaseModel]:
    from planner.dataset.report import DatasetReport
    from planner.explain import Explanation
    from planner.results import Estimate

    class EstimateOutput(Estimate):
        """``loraplan estimate --json``; ``explain`` only with ``--explain``."""

        explain: Explanation | None = None
        dataset: DatasetReport | None = None

    return EstimateOutput


def _recommend() -> type[BaseModel]:
    from planner.dataset.report import DatasetReport
    from planner.recommender import Recommendation

    class RecommendOutput(Recommendation):
        """``loraplan recommend --json``; ``dataset_file`` only with ``--dataset``."""

        dataset_file: DatasetReport | None = None

    return RecommendOutput


def _instances() -> type[BaseModel]:
    from planner.recommender import InstancesReport

    return InstancesReport


def _sweep() -> type[BaseModel]:
    from planner.cli.sweep_dataset import SeqLenRow
    from planner.dataset.report import DatasetReport
    from planner.sweep import SweepResult

    class SweepOutput(SweepResult):
        """``loraplan sweep --json``; ``dataset`` and ``dataset_by_seq_len`` only with ``--dataset``."""

        dataset: DatasetReport | None = None
        dataset_by_seq_len: list[SeqLenRow] | None = None

    return SweepOutput


def _serve() -> type[BaseModel]:
    from planner.serve.result import ServeEstimate

    return ServeEstimate


def _probe() -> type[BaseModel]:
    from probes.results import ProbeResult  # pydantic only: no torch

    return ProbeResult


def _watch() -> type[BaseModel]:
    from probes.watch_results import WatchResult  # pydantic only: no NVML

    return WatchResult


def _probe_detect() -> type[BaseModel]:
    from probes.results import GpuInfo

    class DetectOutput(BaseModel):
        """``loraplan probe --detect --json``."""

        model_config = {"extra": "forbid"}
        gpus: list[GpuInfo]

    return DetectOutput


def _probe_launch() -> type[BaseModel]:
    from probes.launch import LaunchResult  # pydantic and planner only: torch is imported inside functions

    return LaunchResult


def _probe_matrix() -> type[BaseModel]:
    from planner.matrix.summary import Summary

    return Summary


def _probe_matrix_plan() -> type[BaseModel]:
    from planner.matrix.budget import Plan

    return Plan


COMMANDS: dict[str, tuple[str, Callable[[], type[BaseModel]]]] = {
    "estimate": ("loraplan estimate --json (with an explain object under --explain)", _estimate),
    "recommend": ("loraplan recommend --json", _recommend),
    "instances": ("loraplan instances --json", _instances),
    "sweep": ("loraplan sweep --json", _sweep),
    "serve": ("loraplan serve --json", _serve),
    "probe": ("loraplan probe --json and probe --save files", _probe),
    "probe-detect": ("loraplan probe --detect --json", _probe_detect),
    "probe-launch": ("loraplan probe --gpus N --parallel fsdp2|fsdp|ddp --json", _probe_launch),
    "probe-matrix": ("loraplan probe --matrix FILE --out DIR --json and DIR/summary.json", _probe_matrix),
    "probe-matrix-plan": ("loraplan probe --matrix FILE --dry-run --json", _probe_matrix_plan),
    "watch": ("loraplan watch --json OUT", _watch),
}
"""Schema name -> (the output it describes, the pydantic model that produces it)."""


def schema_dir() -> Path:
    """Where the shipped schemas live (``profiles/schemas``)."""
    return profiles_dir() / "schemas"


def schema(name: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of output ``name`` (a key of :data:`COMMANDS`)."""
    what, model = COMMANDS[name]
    body = model().model_json_schema(mode="serialization")
    body.pop("description", None)
    out: dict[str, Any] = {"$schema": DIALECT, "$id": f"loraplan/{name}.schema.json"}
    out.update(body)
    out.update(title=f"loraplan {name}", description=what)
    return out


def render(name: str) -> str:
    """The file text of schema ``name`` (stable: 2-space indent, trailing newline)."""
    return json_text(schema(name)) + "\n"


def write_schemas(directory: Path | None = None) -> list[Path]:
    """Write every schema to ``directory`` (default :func:`schema_dir`); returns the paths."""
    directory = directory or schema_dir()
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in COMMANDS:
        path = directory / f"{name}.schema.json"
        path.write_text(render(name), encoding="utf-8")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    """``python -m planner.cli.schemas [--write]``: check (exit 1 when stale) or regenerate the shipped schemas."""
    parser = argparse.ArgumentParser(prog="python -m planner.cli.schemas", description=main.__doc__)
    parser.add_argument("--write", action="store_true", help="regenerate profiles/schemas/*.schema.json")
    args = parser.parse_args(argv)
    if args.write:
        for path in write_schemas():
            print(f"wrote {path}")
        return 0
    stale = [n for n in COMMANDS if not (schema_dir() / f"{n}.schema.json").is_file()
             or (schema_dir() / f"{n}.schema.json").read_text(encoding="utf-8") != render(n)]
    for name in stale:
        print(f"stale: {name}.schema.json (python -m planner.cli.schemas --write)")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
