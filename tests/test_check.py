"""``estimate --gpu G --check``: the exit code is the verdict (0 fits, 1 does not fit, 2 bad input)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from planner.cli import cli


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_fits_exits_0() -> None:
    res = run("estimate", "llama-3-8b", "--gpu", "4090", "--check")
    assert res.exit_code == 0, res.output
    assert "fits RTX 4090" in res.output


def test_does_not_fit_exits_1() -> None:
    res = run("estimate", "llama-3-70b", "--gpu", "4090", "--check")
    assert res.exit_code == 1, res.output
    assert "does not fit" in res.output and "Traceback" not in res.output


def test_check_with_json_keeps_the_object() -> None:
    res = run("estimate", "llama-3-70b", "--gpu", "4090", "--check", "--json")
    assert res.exit_code == 1
    assert json.loads(res.output)["fits"] is False


@pytest.mark.parametrize("args", [
    ("estimate", "llama-3-8b", "--check"),
    ("estimate", "llama-3-8bb", "--gpu", "4090", "--check"),
    ("estimate", "llama-3-8b", "--gpu", "4091", "--check"),
    ("estimate", "llama-3-8b", "--gpu", "4090", "--rank", "0", "--check"),
    ("estimate", "llama-3-8b", "--gpu", "4090", "--targets", "c_attn", "--check"),
])
def test_bad_input_exits_2(args: tuple[str, ...]) -> None:
    res = run(*args)
    assert res.exit_code == 2, res.output
    assert res.output.count("\n") == 1 and res.output.startswith("error")


def test_check_from_the_shell() -> None:
    """The console entry point itself, as a CI script would call it."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "planner", "estimate"]
    assert subprocess.run([*cmd, "llama-3.2-1b", "--gpu", "t4", "--check"], capture_output=True).returncode == 0
    assert subprocess.run([*cmd, "llama-3-70b", "--gpu", "t4", "--check"], capture_output=True).returncode == 1
    assert subprocess.run([*cmd, "llama-3-70b", "--check"], capture_output=True).returncode == 2
