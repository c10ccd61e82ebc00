"""The training speeds the time model is fitted and checked on: published runs and probe measurements."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from planner.catalog import _model_index, load_gpu, load_model, normalize_config
from planner.specs import GpuProfile, ModelConfig, TrainSpec
from planner.time.constants import measurements_dir, throughput_runs
from planner.time.schemas import StepImpl

FIT = "fit"
HOLDOUT = "holdout"
OTHER_STACK = "other-stack"
MEASURED = "measured"
MODELED_STACK = "transformers"
"""Runs of this stack (transformers models + PEFT, Trainer or a plain loop) are fitted and checked."""


@dataclass(frozen=True)
class Point:
    """One known training speed: a configuration on a GPU and its measured tokens per second."""

    id: str
    group: str
    gpu: GpuProfile
    config: ModelConfig
    train: TrainSpec
    impl: StepImpl
    tokens_per_s: float
    stack: str
    split: str
    source: str


def _reference_model(spec: dict[str, Any]) -> ModelConfig:
    if "name" in spec:
        return load_model(spec["name"]).config
    return normalize_config(spec["config"])


def _train_from(data: dict[str, Any]) -> TrainSpec:
    fields = dict(data)
    if "targets" in fields:
        fields["targets"] = tuple(fields["targets"])
    fields.setdefault("alpha", 2.0 * fields.get("rank", 16))
    return TrainSpec(**fields)


def _split(run: dict[str, Any], holdout: set[str]) -> str:
    if run["stack"] != MODELED_STACK:
        return OTHER_STACK
    return HOLDOUT if run["group"] in holdout else FIT


@cache
def published_points() -> tuple[Point, ...]:
    """Every run of ``profiles/throughput_runs.json`` with its split (fit / holdout / other-stack)."""
    data = throughput_runs()
    holdout = set(data["holdout_groups"])
    return tuple(
        Point(r["id"], r["group"], load_gpu(r["gpu"]), _reference_model(r["model"]), _train_from(r["train"]),
              StepImpl(**r.get("impl", {})), float(r["tokens_per_s"]), r["stack"], _split(r, holdout), r["source"])
        for r in data["runs"]
    )


def _measured_point(path: Path) -> Point | None:
    """One probe result as a :class:`Point`, or None when the file is not a GPU throughput measurement."""
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or data.get("mode", "gpu") != "gpu" or not data.get("tokens_per_s"):
        return None
    est = data.get("estimate") or {}
    train_data = est.get("train") or data.get("train")
    gpu_name = (est.get("gpu") or {}).get("name") or (data.get("calibration") or {}).get("profile")
    model = data.get("model") or est.get("model")
    if not train_data or not gpu_name or not isinstance(model, str) or model.lower() not in _model_index():
        return None  # never resolve a hub id here: no network from the planner's hot path
    return Point(path.stem, "measurements", load_gpu(gpu_name), load_model(model).config, _train_from(train_data),
                 StepImpl(), float(data["tokens_per_s"]), MODELED_STACK, MEASURED,
                 f"loraplan probe measurement {path.name}")


def measured_points(directory: Path | None = None) -> tuple[Point, ...]:
    """Probe results with a measured throughput under ``profiles/measurements/``.

    Reads ``loraplan probe --save`` results (:class:`probes.results.ProbeResult`): ``mode`` ``gpu``,
    ``tokens_per_s``, the configuration in ``estimate.train`` and the GPU profile in ``estimate.gpu.name``
    (or ``calibration.profile``). Files that are not such results (trace-mode probes, other JSON, models
    that are not shipped profiles) are skipped.
    """
    directory = directory or measurements_dir()
    points = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            point = _measured_point(path)
        except Exception:  # noqa: BLE001 - a malformed or foreign file is not a measurement
            continue
        if point is not None:
            points.append(point)
    return tuple(points)
