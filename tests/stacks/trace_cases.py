"""Run in an overlay (``python -m tests.stacks.trace_cases`` with cases as JSON on stdin): the CPU trace of
each case on the overlay's libraries, the estimate for the stack those libraries name, one JSON line out.

Input: ``{"framework": "trainer", "versions": {lib: version}, "cases": [{"model": ..., "spec": {...}, "layers":
int | null, "framework": str | null}]}`` (``layers``: the model with that many decoder layers; a case's
``framework`` overrides the payload's).
Output: ``{"installed": {lib: version}, "trl_compute_loss_is_trainers": bool | null, "results":
[{"stack", "traced_gib", "estimate_gib", "traced_params", "estimate_params", "peak_phase", "seconds"}]}``.
"""

from __future__ import annotations

import json
import sys
import time


def _trl_defers_loss() -> bool | None:
    """Whether the installed TRL's ``SFTTrainer`` leaves the loss to ``transformers.Trainer.compute_loss``."""
    try:
        from transformers import Trainer
        from trl import SFTTrainer
    except ImportError:
        return None
    return SFTTrainer.compute_loss is Trainer.compute_loss


def main() -> None:
    from planner.catalog import normalize_config, raw_config
    from planner.estimator import estimate
    from planner.specs import GIB, Method, ModelProfile, TrainSpec
    from planner.stack.resolve import resolve_stack
    from planner.stack.versions import installed_versions
    from probes.trace import run_trace

    payload = json.loads(sys.stdin.read())
    results = []
    for case in payload["cases"]:
        framework = case.get("framework") or payload["framework"]
        stack = resolve_stack(framework, versions=payload["versions"], detect=False).stack
        spec = TrainSpec(**case["spec"])
        if spec.method is Method.QLORA and "kbit_prepare" not in case["spec"]:  # the stack's, as the CLI implies
            spec = spec.model_copy(update={"kbit_prepare": stack.kbit_prepare.calls_prepare})
        started = time.perf_counter()
        raw = raw_config(case["model"])
        if case.get("layers"):  # fewer decoder layers of the same shape: the per-layer terms, faster
            raw = {**raw, "num_hidden_layers": case["layers"]}
        profile = ModelProfile(name=case["model"], source="tests/stacks/trace_cases.py", config=normalize_config(raw))
        run = run_trace(raw, spec, framework=framework)
        est = estimate(profile, spec, stack=stack)
        results.append({"stack": stack.name, "traced_gib": run.peak_bytes / GIB, "estimate_gib": est.peak_gib.allocated,
                        "traced_params": [run.params_total, run.params_trainable],
                        "estimate_params": [est.params.total, est.params.trainable],
                        "peak_phase": run.detail.peak_phase, "seconds": time.perf_counter() - started})
    installed = installed_versions(("transformers", "peft", "trl", "accelerate", "tokenizers", "torch"))
    print(json.dumps({"installed": installed, "trl_compute_loss_is_trainers": _trl_defers_loss(),
                      "results": results}))


if __name__ == "__main__":
    main()
