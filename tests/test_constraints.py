"""The pinned stack (constraints.txt) is the one installed and the one the default stack profile names.

A library release can change what the trace measures; CI installs with ``-c constraints.txt`` so that
only an edit of that file (reviewed, with the trace suite rerun) changes the modelled stack.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRACED = ("torch", "transformers", "peft", "bitsandbytes", "trl")


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def test_constraints_pin_every_traced_library():
    assert set(TRACED) <= set(_pins())


@pytest.mark.parametrize("name", TRACED)
def test_installed_version_is_the_pinned_one(name):
    try:
        installed = metadata.version(name)
    except metadata.PackageNotFoundError:
        pytest.skip(f"{name} not installed (probe extra)")
    assert installed.split("+")[0] == _pins()[name], f"{name} {installed} installed, constraints.txt pins {_pins()[name]}"


def test_default_stack_profile_names_the_pinned_versions():
    profile = json.loads((ROOT / "profiles" / "stacks" / "trainer-transformers5.json").read_text())
    for name in TRACED:
        if name != "trl":  # the Trainer stack has no TRL; the trl stack's newest modelled version is pinned
            assert profile["versions"][name] == _pins()[name], name
    newest = json.loads((ROOT / "profiles" / "stacks" / "frameworks.json").read_text())["newest"]
    assert newest["trl"] == _pins()["trl"]
