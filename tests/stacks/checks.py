"""What every traced-overlay test module does: build the payload, run it once, check the pins and each row."""

from __future__ import annotations

from typing import Any

from tests.stacks import overlay

TOLERANCE = 0.03
"""The issue-8 bound for every traced stack."""

Case = tuple[str, dict[str, Any]]
"""(model, spec fields; ``framework`` optional, default the payload's)."""


def case_id(case: Case) -> str:
    model, spec = case
    trl = "trl-" if spec.get("framework") == "trl" else ""
    return f"{trl}{model}-{spec['method']}-{spec['seq_len']}-{'ckpt' if spec['grad_ckpt'] else 'nockpt'}"


def run_cases(stack: str, versions: dict[str, str], cases: list[Case], layers: dict[str, int] | None = None) -> dict:
    """Trace ``cases`` (micro-batch 1, r=16) in the ``stack`` overlay against the estimate for ``versions``."""
    layers = layers or {}
    payload = {"framework": "trainer", "versions": versions,
               "cases": [{"model": m, "framework": s.get("framework"), "layers": layers.get(m),
                          "spec": {"micro_batch": 1, "rank": 16, **{k: v for k, v in s.items() if k != "framework"}}}
                         for m, s in cases]}
    return overlay.run_json(stack, "tests.stacks.trace_cases", payload)


def assert_pinned(traced: dict, stack: str, torch_version: str) -> None:
    """The subprocess imported the overlay's pinned releases and the main environment's torch."""
    pins = overlay.pins(stack)
    for lib in ("transformers", "peft", "trl", "accelerate", "tokenizers"):
        assert traced["installed"][lib] == pins[lib], (lib, traced["installed"][lib])
    assert traced["installed"]["torch"].split("+")[0] == torch_version


def assert_agrees(row: dict, case: Case) -> None:
    """Same parameter counts as PEFT's model, peak within :data:`TOLERANCE` of the trace."""
    name = case_id(case)
    assert row["estimate_params"] == row["traced_params"], "total/trainable parameters differ from PEFT's"
    print(f"{name}: estimate {row['estimate_gib']:.3f} GiB, trace {row['traced_gib']:.3f} GiB")
    err = (row["estimate_gib"] - row["traced_gib"]) / row["traced_gib"]
    assert abs(err) <= TOLERANCE, (f"{name}: estimate {row['estimate_gib']:.3f} vs trace {row['traced_gib']:.3f} "
                                   f"GiB ({err:+.1%}, peak in {row['peak_phase']})")
