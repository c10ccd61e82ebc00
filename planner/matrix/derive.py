"""From measured matrix runs to profile data: the GPU's calibration and time-model rows.

* :func:`derive_calibration`: CUDA context and allocator reserve over the ``ok`` GPU runs (median,
  with min / max and the runs they came from). Each run's ``calibration`` is measured by
  :mod:`probes.gpu` (context: NVML device use minus torch reserved at a quiet point; reserve:
  ``max_memory_reserved - max_memory_allocated``). The proposal is a bare
  :class:`planner.calibration.Calibration` (so ``loraplan estimate --calibrate FILE`` reads it as is)
  plus the ``profiles/runtime.json`` entry it would replace, with the measurements as its source.
* :func:`throughput_rows`: one ``profiles/throughput_runs.json`` ``runs`` row per ``ok`` GPU run with a
  measured tokens/s (``stack`` ``transformers``: the probe's plain PEFT loop, see
  :mod:`planner.time.fit`).
"""

from __future__ import annotations

import datetime
import json
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from planner.catalog import load_gpu
from planner.errors import PlannerError
from planner.matrix.spec import RunRecord, row_config

PROPOSAL_FILE = "calibration-proposal.json"


def _gpu_ok(records: Iterable[RunRecord]) -> list[RunRecord]:
    return [r for r in records if r.mode == "gpu" and r.status == "ok" and r.result]


def _spread(values: list[float]) -> dict[str, float | int]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def derive_calibration(records: Iterable[RunRecord]) -> dict[str, Any]:
    """Median CUDA context / allocator reserve of the ``ok`` GPU runs, with their spread and provenance.

    Raises:
        PlannerError: no ``ok`` GPU run carries a calibration (e.g. trace-mode records only).
    """
    runs = [r for r in _gpu_ok(records) if r.result.get("calibration")]
    if not runs:
        raise PlannerError("no ok GPU run with a calibration among these records (trace runs carry none)")
    cals = [r.result["calibration"] for r in runs]
    context = [c["cuda_context_gib"] for c in cals]
    fraction = [c["allocator_reserve_fraction"] for c in cals]
    reserve = [c["allocator_reserve_gib"] for c in cals if c.get("allocator_reserve_gib") is not None]
    env = runs[0].result.get("environment") or {}
    gpu = load_gpu(runs[0].gpu)
    ids = [r.row.id for r in runs]
    source = (f"loraplan probe --matrix {runs[0].matrix}: {len(runs)} ok runs on {env.get('gpu') or gpu.name} "
              f"(driver {env.get('driver')}, CUDA {env.get('cuda')}, torch {env.get('torch')}): {', '.join(ids)}")
    return {
        "gpu": env.get("gpu") or gpu.name,
        "profile": gpu.name,
        "cuda_context_gib": statistics.median(context),
        "allocator_reserve_gib": statistics.median(reserve) if reserve else None,
        "allocator_reserve_fraction": statistics.median(fraction),
        "spread": {"cuda_context_gib": _spread(context), "allocator_reserve_fraction": _spread(fraction)},
        "runtime_json": {
            "path": f"cuda_context_gib.by_compute_capability.{gpu.compute_capability}",
            "value": round(statistics.median(context), 3),
            "source": source,
        },
        "source": source,
        "date": datetime.date.today().isoformat(),
    }


def throughput_rows(records: Iterable[RunRecord]) -> list[dict[str, Any]]:
    """``profiles/throughput_runs.json`` rows for the ``ok`` GPU runs with a measured tokens/s."""
    rows = []
    for r in _gpu_ok(records):
        res = r.result
        tps = res.get("tokens_per_s")
        if not tps:
            continue
        env = res.get("environment") or {}
        spec = r.row.train
        steps = (res.get("gpu") or {}).get("step_seconds") or []
        rows.append({
            "id": f"{r.matrix}/{r.row.id}",
            "group": f"{r.matrix}/{r.row.model}",
            "gpu": r.gpu,
            "stack": "transformers",
            "model": {"config": row_config(r.row), "note": f"shipped profile {r.row.model}"
                      + (f", num_hidden_layers={r.row.num_hidden_layers}" if r.row.num_hidden_layers else "")},
            "train": spec.model_dump(mode="json"),
            "impl": {},
            "packing": "random token ids, every sequence seq_len long (probes.build)",
            "seconds_per_step": statistics.median(steps) if steps else None,
            "tokens_per_s": float(tps),
            "source": f"loraplan probe --matrix measurement {r.matrix}/runs/{r.row.id}.json",
            "conditions": f"1x {env.get('gpu')}, driver {env.get('driver')}, CUDA {env.get('cuda')}, "
                          f"probe's plain PEFT training loop, {len(steps)} measured steps after 1 warm-up",
            "versions": ", ".join(f"{k} {env.get(k)}" for k in ("torch", "transformers", "peft", "bitsandbytes")),
        })
    return rows


def write_proposal(records: Iterable[RunRecord], directory: Path) -> Path:
    """``DIR/calibration-proposal.json``: the calibration and the throughput rows, for review before merging."""
    recs = list(records)
    out = derive_calibration(recs)
    out["throughput_runs"] = throughput_rows(recs)
    path = directory / PROPOSAL_FILE
    path.write_text(json.dumps(out, indent=1) + "\n")
    return path
