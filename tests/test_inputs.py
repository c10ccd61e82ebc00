"""Issue 13's bad-input classes (tests/bad_inputs.py): one line, the right exit code, never a traceback.

Plus the library API's own checks (the same validation layer, :mod:`planner.inputs`).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from planner import estimate
from planner.cli import cli
from planner.errors import PlannerError
from planner.specs import TrainSpec
from tests import bad_inputs

WARN = {"config: auto_map (warn)": "auto_map", "--calibrate other GPU (warn)": "not applied",
        "serve: nothing fits (warn)": "does not fit"}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return bad_inputs._files(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("label", [label for label, _ in bad_inputs.cases(defaultdict(str))])
def test_bad_input(label: str, files: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    argv = dict(bad_inputs.cases(files))[label]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    if label.startswith("HF_ENDPOINT"):
        monkeypatch.setenv("HF_ENDPOINT", "https://x:99999")
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    res = CliRunner().invoke(cli, argv)
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    if label in WARN:
        assert res.exit_code == 0, res.output
        assert any(WARN[label] in w for w in json.loads(res.stdout)["warnings"])
    else:
        assert res.exit_code == 2, res.output
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error"), res.output


def test_estimate_none_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="model must be"):
        estimate(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="train must be"):
        estimate("llama-3.2-1b", {"rank": 8})  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [
    {"targets": ()}, {"targets": ("",)}, {"targets": ("all-linear", "q_proj")}, {"alpha": math.nan},
    {"alpha": math.inf}, {"lora_dropout": math.nan}, {"seq_len": 10**400}, {"rank": 10**6}, {"rank": True},
    {"micro_batch": 2.0}, {"seq_len": "2048"}, {"grad_accum": 0},
])
def test_trainspec_rejects(kwargs: dict) -> None:
    with pytest.raises(ValidationError):
        TrainSpec(**kwargs)


def test_make_request_bounds() -> None:
    from planner.recommender.request import make_request

    for kwargs in ({"dataset_tokens": math.nan}, {"epochs": math.inf}, {"effective_batch": 10**400},
                   {"avg_tokens": math.nan, "examples": 10}, {"examples": True, "avg_tokens": 10.0}):
        with pytest.raises(PlannerError):
            make_request(**kwargs)


def test_valid_defaults_unchanged() -> None:
    est = estimate("llama-3.2-1b", TrainSpec(), gpu="4090")
    assert est.fits and not est.warnings


def test_control_characters_stay_on_one_line() -> None:
    """hypothesis counterexample: ``--provider $'0\\r0'`` split the error over two lines."""
    res = CliRunner().invoke(cli, ["instances", "qwen2.5-0.5b", "--provider", "0\r0"])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
