"""The golden corpus: estimate / recommend / instances outputs across every shipped model.

Generated once before the restructuring (issue 7) with ``python -m tests.golden.corpus --write`` and
committed as ``tests/golden/*.json.gz``; ``tests/test_golden.py`` recomputes every case and asserts
equality (floats to 1e-9 relative). Keys added to the outputs later (``terms``, ``stack``) are
allowed; a key that disappears or a number that moves is a failure.

The cases are a deterministic product: every shipped model x method x checkpointing x attention x
two (micro-batch, seq-len) shapes, with the optimizer and GPU cycled, plus option variants (DoRA,
fp32 master, LLM.int8, no double quant, no kbit-prepare, grad accumulation, fp16/fp32, target sets,
ranks, flash attention) on a handful of models, plus recommend and instances requests.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import math
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
MODELS_DIR = HERE.parents[1] / "profiles" / "models"

OPTIMS = ["adamw", "adamw-8bit", "paged-adamw-8bit", "sgd", "adafactor", "paged-adamw"]
GPUS = [None, "4090", "a100-80gb", "h100", "t4", "l4"]
SHAPES = [(1, 2048), (4, 512)]
VARIANT_MODELS = ["llama-3-8b", "mixtral-8x7b", "gemma-2-9b", "gpt2", "falcon-7b", "qwen2.5-1.5b", "phi-3-mini"]
VARIANTS: list[dict[str, Any]] = [
    {"dora": True},
    {"fp32_master": True},
    {"fp32_master": True, "grad_ckpt": False},
    {"method": "full", "fp32_master": True},
    {"method": "full", "fp32_master": True, "grad_ckpt": False},
    {"method": "qlora", "quant_bits": 8},
    {"method": "qlora", "double_quant": False},
    {"method": "qlora", "kbit_prepare": False},
    {"method": "qlora", "kbit_prepare": False, "grad_ckpt": False, "attn": "eager"},
    {"grad_accum": 4},
    {"method": "full", "grad_accum": 4, "optim": "adamw-8bit"},
    {"dtype": "fp16"},
    {"dtype": "fp32"},
    {"method": "full", "dtype": "fp32"},
    {"targets": ["attn"]},
    {"targets": ["qv"], "rank": 8},
    {"targets": ["q_proj", "v_proj"], "rank": 64, "alpha": 16.0},
    {"rank": 256, "lora_dropout": 0.0},
    {"attn": "flash", "micro_batch": 8, "seq_len": 4096},
    {"method": "qlora", "attn": "flash", "micro_batch": 2, "seq_len": 8192, "optim": "paged-adamw-8bit"},
    {"method": "full", "optim": "adafactor", "grad_ckpt": False},
    {"lora_dropout": 0.1, "grad_ckpt": False},
]
RECOMMEND: list[dict[str, Any]] = [
    {"model": "llama-3-8b", "gpu": "4090"},
    {"model": "llama-3-8b", "gpu": "t4"},
    {"model": "llama-3-8b", "gpu": "h100", "dataset_tokens": 2e7},
    {"model": "llama-3-70b", "gpu": "a100-80gb", "examples": 10000, "avg_tokens": 700.0},
    {"model": "llama-3-70b", "gpu": "4090"},
    {"model": "mixtral-8x7b", "gpu": "h100"},
    {"model": "qwen2.5-0.5b", "gpu": "t4", "seq_len": 4096, "task": "code"},
    {"model": "gemma-2-9b", "gpu": "l4", "methods": ["qlora"]},
    {"model": "phi-3-mini", "gpu": "4090", "effective_batch": 64, "epochs": 1.0},
    {"model": "llama-3.2-1b", "gpu": "a100-80gb", "methods": ["full"]},
    {"model": "mistral-7b", "gpu": "a10g", "headroom": 0.2, "top": 5},
    {"model": "falcon-7b", "gpu": "4090"},
]
INSTANCES: list[dict[str, Any]] = [
    {"model": "llama-3-8b", "dataset_tokens": 2e7},
    {"model": "llama-3-70b", "examples": 10000, "avg_tokens": 1024.0},
    {"model": "mixtral-8x7b"},
    {"model": "qwen2.5-7b", "methods": ["qlora"], "providers": ["aws", "gcp"]},
    {"model": "gemma-2-27b", "dataset_tokens": 5e7, "max_price_per_hour": 10.0},
    {"model": "llama-3.2-3b", "seq_len": 8192},
]


def model_names() -> list[str]:
    return sorted(p.stem for p in MODELS_DIR.glob("*.json"))


def estimate_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    cycle = itertools.count()
    for model in model_names():
        for method, ckpt, attn, (mb, seq) in itertools.product(
            ["lora", "qlora", "full"], [True, False], ["sdpa", "eager"], SHAPES
        ):
            i = next(cycle)
            train = {"method": method, "grad_ckpt": ckpt, "attn": attn, "micro_batch": mb, "seq_len": seq,
                     "optim": OPTIMS[i % len(OPTIMS)]}
            cases.append({"model": model, "gpu": GPUS[i % len(GPUS)], "train": train})
    for model, variant in itertools.product(VARIANT_MODELS, VARIANTS):
        i = next(cycle)
        cases.append({"model": model, "gpu": GPUS[i % len(GPUS)], "train": dict(variant)})
    return cases


# ---------------------------------------------------------------------------- running (the API seam)


def run_estimate(case: dict[str, Any]) -> dict[str, Any]:
    from planner.estimator import estimate_with_advice
    from planner.errors import PlannerError
    from planner.specs import TrainSpec

    train = dict(case["train"])
    if "targets" in train:
        train["targets"] = tuple(train["targets"])
    try:
        est = estimate_with_advice(case["model"], TrainSpec(**train), case["gpu"])
    except PlannerError as err:
        return {"error": str(err)}
    return est.model_dump(mode="json")


def run_recommend(case: dict[str, Any]) -> dict[str, Any]:
    from planner.recommender import make_request, recommend

    kw = {k: v for k, v in case.items() if k not in ("model", "gpu")}
    return recommend(case["model"], case["gpu"], request=make_request(**kw)).model_dump(mode="json")


def run_instances(case: dict[str, Any]) -> dict[str, Any]:
    from planner.recommender import make_request, plan_instances

    kw = {k: v for k, v in case.items() if k not in ("model", "providers", "max_price_per_hour")}
    return plan_instances(case["model"], request=make_request(**kw), providers=case.get("providers"),
                          max_price_per_hour=case.get("max_price_per_hour")).model_dump(mode="json")


KINDS = {
    "estimate": (estimate_cases, run_estimate),
    "recommend": (lambda: RECOMMEND, run_recommend),
    "instances": (lambda: INSTANCES, run_instances),
}


def path(kind: str) -> Path:
    return HERE / f"{kind}.json.gz"


def load(kind: str) -> list[dict[str, Any]]:
    with gzip.open(path(kind), "rt", encoding="utf-8") as fh:
        return json.load(fh)


def write(kind: str) -> int:
    cases, runner = KINDS[kind]
    rows = [{"case": c, "output": runner(c)} for c in cases()]
    with gzip.GzipFile(path(kind), "wb", mtime=0) as fh:
        fh.write(json.dumps(rows, sort_keys=True, separators=(",", ":")).encode())
    return len(rows)


def diff(golden: Any, actual: Any, where: str = "$") -> list[str]:
    """Differences between a golden value and a new one; new dict keys are allowed."""
    if isinstance(golden, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected an object, got {type(actual).__name__}"]
        out: list[str] = []
        for key, value in golden.items():
            if key not in actual:
                out.append(f"{where}.{key}: missing")
            else:
                out += diff(value, actual[key], f"{where}.{key}")
        return out
    if isinstance(golden, list):
        if not isinstance(actual, list) or len(actual) != len(golden):
            return [f"{where}: expected {len(golden)} items, got {actual!r:.200}"]
        return [d for i, (g, a) in enumerate(zip(golden, actual)) for d in diff(g, a, f"{where}[{i}]")]
    if isinstance(golden, float) and not isinstance(actual, bool) and isinstance(actual, (int, float)):
        if math.isclose(golden, actual, rel_tol=1e-9, abs_tol=1e-9):
            return []
        return [f"{where}: {golden!r} -> {actual!r}"]
    if golden != actual:
        return [f"{where}: {golden!r:.200} -> {actual!r:.200}"]
    return []


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="regenerate the committed corpus")
    args = parser.parse_args()
    if args.write:
        for kind in KINDS:
            print(kind, write(kind))
