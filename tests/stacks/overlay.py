"""Install an older stack as an overlay of the main environment and run code in it.

``pip install --no-deps --target .stacks/<name> -r constraints-<name>.txt`` puts the pinned releases in a
folder that goes first on ``PYTHONPATH``: the subprocess imports them instead of the main environment's
transformers/PEFT/TRL, and keeps the main torch (the trace needs torch's fake tensors, not a second torch).
The folder is reused while the constraints file is unchanged (its hash is stamped in the folder).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def pins(name: str) -> dict[str, str]:
    """``{package: version}`` of ``constraints-<name>.txt`` (lower-case names)."""
    out = {}
    for line in (ROOT / f"constraints-{name}.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            package, version = line.split("==")
            out[package.strip().lower()] = version.strip()
    return out


def ensure(name: str) -> Path:
    """The overlay folder of ``constraints-<name>.txt``, installed if missing or stale.

    Raises:
        RuntimeError: pip could not install it (no package index reachable), with pip's last lines.
    """
    constraints = ROOT / f"constraints-{name}.txt"
    target = ROOT / ".stacks" / name
    digest = hashlib.sha256(constraints.read_bytes()).hexdigest()
    stamp = target / ".constraints-sha256"
    if stamp.is_file() and stamp.read_text() == digest:
        return target
    target.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--upgrade", "--target", str(target),
           "-r", str(constraints)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        raise RuntimeError(f"could not install the {name} overlay ({' '.join(cmd)}):\n{tail}")
    # Some old wheels ship their own top-level ``tests`` package (trl 0.8.6): a regular package, it would win
    # over this project's namespace package ``tests`` on the overlay's path.
    shutil.rmtree(target / "tests", ignore_errors=True)
    stamp.write_text(digest)
    return target


def run_json(name: str, module: str, payload: Any, timeout_s: float = 600) -> Any:
    """Run ``python -m <module>`` in the overlay with ``payload`` as JSON on stdin; its stdout's last line,
    parsed as JSON."""
    target = ensure(name)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(ROOT)])}
    done = subprocess.run([sys.executable, "-m", module], input=json.dumps(payload), capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=timeout_s, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{module} failed in the {name} overlay:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
