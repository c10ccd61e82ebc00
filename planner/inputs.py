"""One validation layer for user input: files, numbers and pydantic errors.

Every input source (CLI options, config / calibration / price files, environment variables, the library
API) goes through these helpers, so one class of bad input gets one clear line everywhere:

- :func:`read_json_file`: a bounded-size, UTF-8, JSON file, with "does not exist" / "is a directory" said.
- :func:`limit` and :func:`check_number`: finite numbers within the physical bounds of
  ``profiles/limits.json`` (each with its reason).
- :func:`describe`: a pydantic ``ValidationError`` as one line naming the field (``--seq-len`` spelling
  for the CLI).
"""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from planner.errors import PlannerError


@cache
def limits() -> dict[str, dict[str, Any]]:
    """``profiles/limits.json`` ``limits``: name -> ``{"max", "reason"}``."""
    import profiles

    path = Path(profiles.__file__).parent / "limits.json"
    return json.loads(path.read_text(encoding="utf-8"))["limits"]


def limit(name: str) -> float:
    """Upper bound of the input ``name`` (``seq_len``, ``rank`` ...)."""
    return limits()[name]["max"]


def check_number(name: str, value: float | int | None, *, positive: bool = True, integer: bool = False,
                 label: str | None = None) -> Any:
    """A finite number, > 0 (when ``positive``) and within ``limits.json``'s bound for ``name`` (if any).

    Raises:
        PlannerError: naming ``label`` (default ``--name``) and the bound's reason.
    """
    if value is None:
        return None
    label = label or "--" + name.replace("_", "-")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PlannerError(f"{label} must be a number, got {value!r}")
    if integer and not isinstance(value, int):
        raise PlannerError(f"{label} must be an integer, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise PlannerError(f"{label} must be a finite number, got {value}")
    if positive and value <= 0:
        raise PlannerError(f"{label} must be > 0, got {_short(value)}")
    bound = limits().get(name)
    if bound is not None and value > bound["max"]:
        raise PlannerError(f"{label} must be <= {bound['max']:g} ({bound['reason']}), got {_short(value)}")
    return value


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 24 else f"{text[:10]}...({len(text)} digits)"


def read_json_file(path: str | Path, what: str) -> Any:
    """Parse a JSON file given by the user (a ``what`` such as "config", "price file").

    Raises:
        PlannerError: the path does not exist, is a folder, is larger than ``config_file_bytes``, is not
            UTF-8 or is not JSON; one line naming the path.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise PlannerError(f"{what} {str(path)!r} does not exist")
    if p.is_dir():
        raise PlannerError(f"{what} {str(path)!r} is a directory, not a JSON file")
    max_bytes = int(limit("config_file_bytes"))
    try:
        size = p.stat().st_size
        if size > max_bytes:
            raise PlannerError(f"{what} {str(path)!r} is {size} bytes; larger than {max_bytes} is not a {what}")
        data = p.read_bytes()
    except OSError as err:
        raise PlannerError(f"cannot read {what} {str(path)!r}: {err.strerror or err}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise PlannerError(f"{what} {str(path)!r} is not UTF-8 text (byte {err.start}); expected a JSON file") from None
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as err:
        raise PlannerError(f"{what} {str(path)!r} is not valid JSON: {err.msg} (line {err.lineno})") from None
    except (ValueError, RecursionError) as err:
        raise PlannerError(f"{what} {str(path)!r}: {err}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def describe(err: ValidationError, *, cli: bool = True, prefix: str = "") -> str:
    """The first error of ``err`` as one line: ``--seq-len: Input should be ... (reason)``."""
    first = err.errors()[0]
    loc = ".".join(str(x) for x in first["loc"]) or "input"
    field = str(first["loc"][0]) if first["loc"] else ""
    name = ("--" + loc.replace("_", "-")) if cli else loc
    msg = first["msg"]
    bound = limits().get(field)
    if bound is not None and first.get("type") in {"less_than_equal", "less_than"}:
        msg += f" ({bound['reason']})"
    value = first.get("input")
    shown = "" if isinstance(value, (dict, list, tuple)) else f", got {_short(value)}"
    return f"{prefix}{name}: {msg}{shown}"


def one_line(message: str) -> str:
    """``message`` with control characters (newlines, CR, ESC ...) escaped: user text echoed in an error must
    not split it into lines or drive the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
