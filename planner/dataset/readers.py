"""Read a dataset file into a list of records (dicts): JSONL, JSON, CSV or Parquet (by file extension)."""

from __future__ import annotations

import csv
import difflib
import json
from enum import Enum
from pathlib import Path
from typing import Any

from planner.errors import PlannerError


class DataFormat(str, Enum):
    """File formats ``--dataset`` reads."""

    JSONL = "jsonl"
    JSON = "json"
    CSV = "csv"
    PARQUET = "parquet"


_EXTENSIONS: dict[str, DataFormat] = {
    ".jsonl": DataFormat.JSONL, ".ndjson": DataFormat.JSONL, ".json": DataFormat.JSON,
    ".csv": DataFormat.CSV, ".parquet": DataFormat.PARQUET, ".pq": DataFormat.PARQUET,
}


def detect_format(path: Path) -> DataFormat:
    """The format of ``path`` from its extension.

    Raises:
        PlannerError: unknown extension (with the closest known one).
    """
    ext = path.suffix.lower()
    if ext in _EXTENSIONS:
        return _EXTENSIONS[ext]
    close = difflib.get_close_matches(ext, list(_EXTENSIONS), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise PlannerError(f"unknown dataset format {ext or '(no extension)'} of {path}{hint}; "
                       f"use one of {', '.join(sorted(_EXTENSIONS))}")


def _jsonl(path: Path) -> list[dict[str, Any]]:
    records = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as err:
                raise PlannerError(f"{path}: line {number}: malformed JSON ({err.msg})") from None
            if not isinstance(value, dict):
                raise PlannerError(f"{path}: line {number}: expected a JSON object, got {type(value).__name__}")
            records.append(value)
    return records


def _json(path: Path) -> list[dict[str, Any]]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise PlannerError(f"{path}: line {err.lineno}: malformed JSON ({err.msg})") from None
    if isinstance(value, dict):  # {"data": [...]} / {"train": [...]}: the one list of records
        lists = [v for v in value.values() if isinstance(v, list)]
        value = lists[0] if len(lists) == 1 else [value]
    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
        raise PlannerError(f"{path}: expected a JSON list of objects")
    return value


def _csv(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        records = []
        for row in reader:
            if None in row:
                raise PlannerError(f"{path}: line {reader.line_num}: more values than header columns")
            records.append(dict(row))
    return records


def _parquet(path: Path) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq  # optional (the `data` extra); only for .parquet
    except ImportError:
        raise PlannerError("reading Parquet needs pyarrow: pip install 'loraplan[data]'") from None
    try:
        return pq.read_table(path).to_pylist()
    except Exception as err:  # pyarrow raises its own ArrowInvalid/OSError family
        raise PlannerError(f"{path}: not a readable Parquet file ({err})") from None


_READERS = {DataFormat.JSONL: _jsonl, DataFormat.JSON: _json, DataFormat.CSV: _csv, DataFormat.PARQUET: _parquet}


def read_records(path: str | Path) -> tuple[DataFormat, list[dict[str, Any]]]:
    """Read every record of ``path``.

    Raises:
        PlannerError: missing file, unknown format, malformed content (with the line number), or no records.
    """
    file = Path(path)
    if not file.is_file():
        raise PlannerError(f"dataset {path} not found" if not file.exists() else f"dataset {path} is not a file")
    fmt = detect_format(file)
    try:
        records = _READERS[fmt](file)
    except UnicodeDecodeError:
        raise PlannerError(f"{path}: not UTF-8 text") from None
    if not records:
        raise PlannerError(f"dataset {path} is empty (no records)")
    return fmt, records
