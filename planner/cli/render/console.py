"""The one rich :class:`~rich.console.Console` factory every renderer prints through."""

from __future__ import annotations

from rich.console import Console


def make_console(*, stderr: bool = False) -> Console:
    """A console on stdout, or on stderr for progress and spinners (so ``--json`` on stdout stays clean)."""
    return Console(stderr=stderr)
