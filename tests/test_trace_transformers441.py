"""Issue 8: the third traced stack, transformers 4.41.2 + PEFT 0.10.0 (+ TRL 0.8.6, accelerate 0.30.1).

The 2024 tutorial pin, as an overlay of the main environment (``constraints-transformers441.txt``,
:mod:`tests.stacks.overlay`). What it adds over the 4.44 stack: PEFT < 0.12 keeps LoRA adapters in the base
dtype (bf16), and transformers 4.41's loss (upcast + shifted ``.contiguous()`` copy). QLoRA cannot be traced
here: transformers 4.41's ``integrations/bitsandbytes.py`` fails to import without bitsandbytes (``NameError:
name 'torch' is not defined`` at module level), which CI does not install; the 4.44 stack traces QLoRA.
"""

from __future__ import annotations

import pytest

from tests.conftest import needs_torch_stack
from tests.stacks import checks

# The same xdist worker as tests/test_trace_transformers4.py (``--dist loadgroup``): the two overlays never
# install or trace at the same time (run concurrently once, the 4.44 subprocess failed to import its transformers).
pytestmark = [needs_torch_stack, pytest.mark.trace, pytest.mark.xdist_group("overlay-transformers4")]

STACK = "transformers441"
MODELLED_VERSIONS = {"transformers": "4.41.2", "peft": "0.10.0", "trl": "0.8.6", "accelerate": "0.30.1",
                     "bitsandbytes": "0.43.1", "torch": "2.13.0"}
CASES = [
    ("llama-3-8b", {"method": "lora", "seq_len": 2048, "grad_ckpt": True}),
    ("llama-3-8b", {"method": "lora", "seq_len": 512, "grad_ckpt": False}),
]
# Full fine-tuning on 4.41.2 traced at +0.0% too (74.80 vs 74.79 GiB, 1024 tokens, foreach AdamW); it exercises
# the same behaviours as the 4.44 stack's full case, so CI runs it there only (CI time).


@pytest.fixture(scope="module")
def traced() -> dict:
    return checks.run_cases(STACK, MODELLED_VERSIONS, CASES)


def test_overlay_runs_the_pinned_releases(traced: dict) -> None:
    checks.assert_pinned(traced, STACK, MODELLED_VERSIONS["torch"])


@pytest.mark.parametrize("index", range(len(CASES)), ids=[checks.case_id(c) for c in CASES])
def test_estimate_matches_transformers441_trace(traced: dict, index: int) -> None:
    checks.assert_agrees(traced["results"][index], CASES[index])
