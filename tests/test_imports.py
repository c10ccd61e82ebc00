"""The analytic path stays import-light: planner never imports the probe stack (checked in a subprocess,
like accelerate's tests/test_imports.py)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "transformers", "peft", "bitsandbytes", "accelerate")
DEFERRED = ("probes", "rich", "pygments")
"""Imported by the CLI only inside the commands (and for the output) that need them."""


def _imported_after(code: str, modules: tuple[str, ...] = HEAVY) -> list[str]:
    probe = f"import sys\n{code}\nprint('HEAVY=' + ','.join(m for m in {modules!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    last = out.stdout.strip().splitlines()[-1]
    return [m for m in last.removeprefix("HEAVY=").split(",") if m]


def test_planner_import_is_light() -> None:
    assert _imported_after("import planner, planner.cli, planner.cli.probe") == []


def test_estimate_does_not_import_heavy_modules() -> None:
    code = "from planner import estimate\nestimate('llama-3-8b', gpu='4090')"
    assert _imported_after(code) == []


def test_cli_estimate_does_not_import_heavy_modules() -> None:
    code = (
        "import sys\nfrom planner.cli import cli\n"
        "try:\n    cli.main(['estimate', 'llama-3-8b', '--gpu', '4090', '--json'])\nexcept SystemExit:\n    pass"
    )
    assert _imported_after(code) == []


def test_cli_estimate_json_defers_probes_and_rich() -> None:
    code = (
        "from planner.cli import cli\n"
        "try:\n    cli.main(['estimate', 'llama-3-8b', '--gpu', '4090', '--json'])\nexcept SystemExit:\n    pass"
    )
    assert _imported_after(code, DEFERRED) == []


def test_cli_sweep_does_not_import_heavy_modules_or_matplotlib() -> None:
    code = (
        "import sys\nfrom planner.cli import cli\n"
        "try:\n    cli.main(['sweep', 'llama-3-8b', '--gpu', '4090', '--seq-len', '512:8192', '--method', 'lora,qlora'])\n"
        "except SystemExit:\n    pass\n"
        "assert 'planner.sweep' in sys.modules\n"
        "print('MPL=' + str('matplotlib' in sys.modules))"
    )
    probe = f"import sys\n{code}\nprint('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert "MPL=False" in out
    assert out.strip().splitlines()[-1] == "HEAVY="


def test_cli_estimate_explain_does_not_import_heavy_modules() -> None:
    code = (
        "import sys\nfrom planner.cli import cli\n"
        "try:\n    cli.main(['estimate', 'llama-3-8b', '--gpu', '4090', '--explain', '--check'])\nexcept SystemExit:\n    pass"
    )
    assert _imported_after(code) == []
