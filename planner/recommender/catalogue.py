"""Cloud GPU instances: the catalogue in ``profiles/instances.json`` merged with a user price file.

Prices change; every entry carries the date and source of its price. A user file (``--prices PATH`` or
``$LORAPLAN_INSTANCES``) has the same shape, ``{"instances": [...]}``: an entry whose ``provider`` and
``instance`` match a catalogue entry overrides just the fields it gives (e.g. only ``price_per_hour``
and ``date``); any other entry is added and must give every field.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, ValidationError

from planner.catalog import _read_json, load_gpu, profiles_dir
from planner.errors import PlannerError
from planner.inputs import describe, limit, read_json_file
from planner.specs import Frozen

ENV_VAR = "LORAPLAN_INSTANCES"


class Instance(Frozen):
    """One on-demand instance type at one price (strict types: a price is a JSON number, not a string)."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True, allow_inf_nan=False, strict=True)

    provider: str = Field(min_length=1)
    instance: str = Field(min_length=1)
    gpu: str = Field(min_length=1)
    """GPU profile name (gpus.json)."""
    gpus: int = Field(gt=0, le=64)
    """Per instance; 64 bounds any single node sold (the largest have 8-16)."""
    gpu_memory_gib: float = Field(gt=0, le=1024)
    """Per GPU."""
    price_per_hour: float = Field(ge=0, le=limit("price_per_hour"))
    """USD per instance-hour, on demand."""
    region: str
    date: str
    """When the price was read."""
    source: str
    network_gbps: float | None = Field(default=None, gt=0)
    """Inter-node network per instance, Gbit/s (EFA / InfiniBand); None where not catalogued."""
    network_source: str | None = None


def catalogue_path() -> Path:
    return profiles_dir() / "instances.json"


def _catalogue() -> list[dict[str, Any]]:
    return list(_read_json(catalogue_path())["instances"])


def _user_entries(path: str | Path) -> list[dict[str, Any]]:
    data = read_json_file(path, "price file")
    entries = data.get("instances") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise PlannerError(f"price file {path}: expected {{\"instances\": [{{...}}, ...]}}")
    for e in entries:
        if not isinstance(e.get("provider"), str) or not isinstance(e.get("instance"), str):
            raise PlannerError(f"price file {path}: every entry needs 'provider' and 'instance' (strings)")
    return entries


def _check_user_entry(inst: Instance, path: str | Path) -> None:
    """A price-file entry's GPU must be a shipped profile (closest names suggested), its memory that GPU's."""
    gpu = load_gpu(inst.gpu)  # PlannerError: unknown GPU 'x'; did you mean ...
    if abs(inst.gpu_memory_gib - gpu.memory_gib) > _MEMORY_TOLERANCE * gpu.memory_gib:
        raise PlannerError(
            f"price file {path}: {inst.provider}/{inst.instance}: gpu_memory_gib {inst.gpu_memory_gib:g} does not match "
            f"the {gpu.name} profile ({gpu.memory_gib:g} GiB); fix the entry or name the right GPU"
        )


_MEMORY_TOLERANCE = 0.1
"""Nominal (marketing GB) vs reported GiB differ by < 8% (e.g. 80 GB vs 79.2 GiB); more is another GPU."""


def load_instances(prices: str | Path | None = None) -> tuple[Instance, ...]:
    """The instance catalogue, with ``prices`` (or ``$LORAPLAN_INSTANCES``) merged over it.

    Raises:
        PlannerError: unreadable price file or an entry with missing / invalid fields.
    """
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in _catalogue():
        merged[(entry["provider"].lower(), entry["instance"])] = dict(entry)
    override = prices or os.environ.get(ENV_VAR)
    user: set[tuple[str, str]] = set()
    if override:
        for entry in _user_entries(override):
            user.add((str(entry["provider"]).lower(), str(entry["instance"])))
            key = (str(entry["provider"]).lower(), str(entry["instance"]))
            base = merged.get(key, {})
            merged[key] = {**base, **entry, **({"source": entry.get("source", f"user price file {override}")}
                                             if "price_per_hour" in entry else {})}
    out = []
    for (provider, name), fields in merged.items():
        try:
            inst = Instance(**fields)
        except ValidationError as err:
            raise PlannerError(describe(err, cli=False, prefix=f"instance {provider}/{name}: field ")) from None
        if (provider, name) in user:
            _check_user_entry(inst, override)
        out.append(inst)
    return tuple(out)
