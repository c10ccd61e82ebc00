"""Library versions: parsing ``--versions``, version ranges and detection from package metadata.

Detection reads ``importlib.metadata`` (the installed distributions' ``METADATA``), never importing the
libraries themselves, so it costs a few milliseconds. Ranges are written ``">=4.41,<4.47"`` (comma = and);
a release is compared by its leading numeric components (``"4.44.2"`` -> ``(4, 44, 2)``, ``"1.0.0rc1"``
-> ``(1, 0, 0)``).
"""

from __future__ import annotations

import re
from importlib import metadata

from planner.errors import PlannerError, unknown

LIBRARIES = ("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate", "liger-kernel", "unsloth",
             "axolotl", "torchtune", "litgpt")
"""Libraries a stack's behaviours can depend on (``--versions`` keys; distribution names)."""

_OPS = ("<=", ">=", "==", "!=", "<", ">")
_VERSION_RE = re.compile(r"^\d+(\.\d+)*([a-z0-9.+-]*)$", re.IGNORECASE)


def release(version: str) -> tuple[int, ...]:
    """``"4.44.2"`` -> ``(4, 44, 2)``; the numeric release components only."""
    parts: list[int] = []
    for piece in version.split("."):
        digits = re.match(r"\d+", piece)
        if digits is None:
            break
        parts.append(int(digits.group()))
        if digits.end() != len(piece):
            break
    if not parts:
        raise PlannerError(f"not a version: {version!r}")
    return tuple(parts)


def _cmp(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    width = max(len(a), len(b))
    a, b = a + (0,) * (width - len(a)), b + (0,) * (width - len(b))
    return (a > b) - (a < b)


def satisfies(version: str, spec: str) -> bool:
    """Whether ``version`` is in ``spec`` (``">=4.41,<4.47"``; empty spec: every version)."""
    v = release(version)
    for clause in (c.strip() for c in spec.split(",") if c.strip()):
        op = next(o for o in _OPS if clause.startswith(o)) if clause[:1] in "<>=!" else "=="
        bound = release(clause[len(op):].strip() if clause[:1] in "<>=!" else clause)
        c = _cmp(v, bound)
        ok = {"<": c < 0, "<=": c <= 0, ">": c > 0, ">=": c >= 0, "==": c == 0, "!=": c != 0}[op]
        if not ok:
            return False
    return True


def parse_versions(text: str) -> dict[str, str]:
    """``"transformers=4.44.2,peft=0.12.0"`` -> ``{"transformers": "4.44.2", "peft": "0.12.0"}``.

    Raises:
        PlannerError: a malformed item, a library loraplan does not model (closest name suggested), a
            repeated library or a value that is not a version.
    """
    out: dict[str, str] = {}
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise PlannerError("--versions is empty: expected LIB=VERSION[,LIB=VERSION...], e.g. transformers=4.44.2")
    for item in items:
        lib, sep, version = (s.strip() for s in item.partition("="))
        version = version.lstrip("=").strip()
        if not sep or not lib or not version:
            raise PlannerError(f"--versions: {item!r} is not LIB=VERSION (e.g. transformers=4.44.2)")
        lib = lib.lower().replace("_", "-")
        if lib not in LIBRARIES:
            raise unknown("library in --versions", lib, list(LIBRARIES))
        if not _VERSION_RE.match(version):
            raise PlannerError(f"--versions: {version!r} is not a version for {lib} (e.g. {lib}=1.2.3)")
        if lib in out:
            raise PlannerError(f"--versions names {lib} twice")
        out[lib] = version
    return out


def installed_versions(libraries: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    """The installed versions of ``libraries`` from package metadata (missing ones left out); no imports."""
    found: dict[str, str] = {}
    for lib in libraries:
        try:
            found[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            continue
    return found
