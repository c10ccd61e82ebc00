"""The training speeds utilization is derived from: published runs and probe measurements."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from planner.catalog import _model_index, load_gpu, load_model, normalize_config
from planner.specs import GpuProfile, ModelConfig, TrainSpec
from planner.time.constants import measurements_dir, throughput_profile


@dataclass(frozen=True)
class Point:
    """One known training speed: a configuration on a GPU and its seconds per optimizer step."""

    id: str
    gpu: GpuProfile
    config: ModelConfig
    train: TrainSpec
    seconds_per_optimizer_step: float
    stack: str
    source: str


def _reference_model(spec: dict[str, Any]) -> ModelConfig:
    if "name" in spec:
        base = load_model(spec["name"]).config
        return base.model_copy(update=spec.get("override", {})) if spec.get("override") else base
    return normalize_config(spec["config"])


def _train_from(data: dict[str, Any]) -> TrainSpec:
    fields = dict(data)
    if "targets" in fields:
        fields["targets"] = tuple(fields["targets"])
    rank = fields.get("rank", 16)
    fields.setdefault("alpha", 2.0 * rank)
    return TrainSpec(**fields)


def _step_seconds(train: TrainSpec, tokens_per_s: float) -> float:
    """Seconds per optimizer step from tokens/s over the whole step."""
    return train.micro_batch * train.seq_len * train.grad_accum / tokens_per_s


@cache
def published_points() -> tuple[Point, ...]:
    """The ``reference_points`` of ``profiles/throughput.json``."""
    points = []
    for p in throughput_profile()["reference_points"]:
        train = _train_from(p["train"])
        if "seconds_per_step" in p:
            seconds = float(p["seconds_per_step"])
        else:  # tokens/s over the whole optimizer step
            seconds = _step_seconds(train, float(p["tokens_per_s"]))
        points.append(
            Point(p["id"], load_gpu(p["gpu"]), _reference_model(p["model"]), train, seconds, p["stack"], p["source"])
        )
    return tuple(points)


def _measured_point(path: Path) -> Point | None:
    """One probe result as a :class:`Point`, or None when the file is not a GPU throughput measurement."""
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or data.get("mode", "gpu") != "gpu" or not data.get("tokens_per_s"):
        return None
    est = data.get("estimate") or {}
    train_data = est.get("train") or data.get("train")
    gpu_name = ((est.get("gpu") or {}).get("name") or (data.get("calibration") or {}).get("profile"))
    model = data.get("model") or est.get("model")
    if not train_data or not gpu_name or not isinstance(model, str) or model.lower() not in _model_index():
        return None  # never resolve a hub id here: no network from the planner's hot path
    train = _train_from(train_data)
    config = load_model(model).config
    seconds = _step_seconds(train, float(data["tokens_per_s"]))
    return Point(path.stem, load_gpu(gpu_name), config, train, seconds, "transformers",
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
