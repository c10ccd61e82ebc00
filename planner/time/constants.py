"""Where the time model's inputs live: ``profiles/throughput.json`` and probe measurements."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from planner.catalog import _read_json, profiles_dir

TFLOP = 1e12
"""FLOP/s in one TFLOP/s."""
GB = 1e9
"""Bytes in one GB (decimal, as memory bandwidths are quoted)."""


@cache
def throughput_profile() -> dict[str, Any]:
    """``profiles/throughput.json``: published runs to derive utilization from, and time-model constants."""
    return _read_json(profiles_dir() / "throughput.json")


def measurements_dir() -> Path:
    """``profiles/measurements/``: ``loraplan probe --save`` results whose tokens/s take precedence."""
    return profiles_dir() / "measurements"
