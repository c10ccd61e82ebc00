"""The ``--json`` contract of every command: one JSON object, printed (and saved) one way."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from planner.errors import PlannerError


def json_text(data: Mapping[str, Any]) -> str:
    """``data`` as the commands print it: two-space indented JSON."""
    return json.dumps(data, indent=2)


def emit_json(data: Mapping[str, Any]) -> None:
    """Print one JSON object on stdout (every ``--json``)."""
    click.echo(json_text(data))


def save_json(data: Mapping[str, Any], path: str | Path) -> None:
    """Write ``data`` to ``path`` exactly as ``--json`` prints it, plus a final newline (``probe --save``).

    Raises:
        PlannerError: ``path`` cannot be written.
    """
    try:
        Path(path).write_text(json_text(data) + "\n")
    except OSError as err:
        raise PlannerError(f"cannot write {path}: {err.strerror or err}") from None
