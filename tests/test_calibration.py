"""``planner.calibration``: one :class:`Calibration` type, read from probe results, cached per GPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from planner.calibration import Calibration, cache_calibration, cached_calibration, load_calibration
from planner.errors import PlannerError

MEASURED = Calibration(gpu="NVIDIA GeForce RTX 4090", profile="RTX 4090", cuda_context_gib=0.41,
                       allocator_reserve_gib=0.9, allocator_reserve_fraction=0.05)


def test_reads_a_probe_result_and_a_bare_object(tmp_path: Path) -> None:
    result = tmp_path / "probe.json"
    result.write_text(json.dumps({"mode": "gpu", "calibration": MEASURED.model_dump(mode="json")}))
    assert load_calibration(result) == MEASURED
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"gpu": "RTX 4090", "cuda_context_gib": 1.0, "allocator_reserve_fraction": 0.1}))
    assert load_calibration(bare) == Calibration(gpu="RTX 4090", cuda_context_gib=1.0, allocator_reserve_fraction=0.1)


@pytest.mark.parametrize("content", ["not json", json.dumps([1, 2]), json.dumps({"calibration": None}),
                                     json.dumps({"calibration": {"gpu": "x", "cuda_context_gib": None,
                                                                 "allocator_reserve_fraction": 0.1}})])
def test_a_file_without_calibration_is_one_clear_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "probe.json"
    path.write_text(content)
    with pytest.raises(PlannerError, match="calibration"):
        load_calibration(path)


def test_cache_round_trip_keyed_by_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = cache_calibration(MEASURED)
    assert path == tmp_path / "loraplan" / "calibration" / "rtx-4090.json"
    assert cached_calibration("RTX 4090") == MEASURED
    assert cached_calibration("A100 80GB") is None
