"""Writing a matrix run's files (records, plan, summary, per-row configs): stable 1-space-indented JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_json(path: Path, data: Any) -> None:
    """``data`` as JSON at ``path`` (parents created, trailing newline)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
