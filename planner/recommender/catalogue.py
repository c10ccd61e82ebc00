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

from pydantic import Field, ValidationError

from planner.catalog import _read_json, profiles_dir
from planner.errors import PlannerError
from planner.specs import Frozen

ENV_VAR = "LORAPLAN_INSTANCES"


class Instance(Frozen):
    """One on-demand instance type at one price."""

    provider: str
    instance: str
    gpu: str
    """GPU profile name (gpus.json)."""
    gpus: int = Field(gt=0)
    gpu_memory_gib: float = Field(gt=0)
    """Per GPU."""
    price_per_hour: float = Field(ge=0)
    """USD per instance-hour, on demand."""
    region: str
    date: str
    """When the price was read."""
    source: str


def catalogue_path() -> Path:
    return profiles_dir() / "instances.json"


def _catalogue() -> list[dict[str, Any]]:
    return list(_read_json(catalogue_path())["instances"])


def _user_entries(path: str | Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(Path(path).expanduser().read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise PlannerError(f"cannot read price file {path}: {err}") from None
    entries = data.get("instances") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise PlannerError(f"price file {path}: expected {{\"instances\": [{{...}}, ...]}}")
    for e in entries:
        if "provider" not in e or "instance" not in e:
            raise PlannerError(f"price file {path}: every entry needs 'provider' and 'instance'")
    return entries


def load_instances(prices: str | Path | None = None) -> tuple[Instance, ...]:
    """The instance catalogue, with ``prices`` (or ``$LORAPLAN_INSTANCES``) merged over it.

    Raises:
        PlannerError: unreadable price file or an entry with missing / invalid fields.
    """
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in _catalogue():
        merged[(entry["provider"].lower(), entry["instance"])] = dict(entry)
    override = prices or os.environ.get(ENV_VAR)
    if override:
        for entry in _user_entries(override):
            key = (str(entry["provider"]).lower(), str(entry["instance"]))
            base = merged.get(key, {})
            merged[key] = {**base, **entry, **({"source": entry.get("source", f"user price file {override}")}
                                             if "price_per_hour" in entry else {})}
    out = []
    for (provider, name), fields in merged.items():
        try:
            out.append(Instance(**fields))
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise PlannerError(f"instance {provider}/{name}: field {where!r}: {first['msg']}") from None
    return tuple(out)
