"""User-facing errors. The CLI prints ``str(err)`` on one line and exits with ``exit_code``."""

from __future__ import annotations

from collections.abc import Iterable


class PlannerError(Exception):
    """Bad input: the message is one line meant for the user; the CLI exits 2."""

    exit_code = 2


class ConfigError(PlannerError):
    """A config.json that cannot be read or misses a field loraplan needs."""


class OfflineError(PlannerError):
    """A hub config was needed but could not be fetched."""


def closest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Closest names to ``name`` (difflib ratio), for "did you mean" messages."""
    import difflib

    pool = sorted(set(candidates))
    lowered = {c.lower(): c for c in pool}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.4)
    if len(hits) < n:  # substring hits catch "llama3" -> "llama-3-8b"
        key = name.lower().replace("-", "").replace("_", "")
        hits += [c for c in lowered if key and key in c.replace("-", "") and c not in hits][: n - len(hits)]
    return [lowered[h] for h in hits]


def unknown(kind: str, name: str, candidates: Iterable[str]) -> PlannerError:
    """An "unknown model/GPU" error naming the closest known names."""
    near = closest(name, candidates)
    hint = f"; did you mean {', '.join(near)}?" if near else ""
    return PlannerError(f"unknown {kind} {name!r}{hint}")
