"""The ``--json`` contract of every command: one JSON object, printed (and saved) one way."""

from __future__ import annotations

import json
import os
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


def check_writable(path: str | Path) -> None:
    """Fail now, with one line, if ``path`` cannot be created or overwritten (its folder must exist).

    Raises:
        PlannerError: the folder is missing or not writable, or ``path`` is a folder.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise PlannerError(f"cannot write {path}: it is a folder")
    if not folder.is_dir():
        raise PlannerError(f"cannot write {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise PlannerError(f"cannot write {path}: permission denied")
