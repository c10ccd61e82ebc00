"""Issue 8: the second traced stack, transformers 4.44.2 + PEFT 0.12.0 + TRL 0.11.4 (+ accelerate 0.34.2).

Those releases are installed as an overlay of the main environment (``constraints-transformers4.txt``,
:mod:`tests.stacks.overlay`; pip reaches the package index once, then the folder is reused) and the CPU
trace runs their real model, PEFT and loss code in a subprocess. The estimate is the one for that stack
(``--framework trainer --versions transformers=4.44.2,peft=0.12.0,accelerate=0.34.2,bitsandbytes=0.44.1``).
TRL 0.11's ``SFTTrainer`` has no ``compute_loss`` of its own (checked here), so its loss path is this one.
bitsandbytes 0.44.1 is emulated (NF4 storage, ``MatMul4Bit`` saving only the packed weight), as on the
main stack. The trace's AdamW is foreach, transformers 4.44's ``adamw_torch`` default
(:func:`probes.optim.adamw_is_foreach`).
"""

from __future__ import annotations

import pytest

from tests.conftest import needs_torch_stack
from tests.stacks import checks

# One xdist worker for this module and tests/test_trace_transformers441.py (``--dist loadgroup``): one overlay
# install and trace subprocess at a time.
pytestmark = [needs_torch_stack, pytest.mark.trace, pytest.mark.xdist_group("overlay-transformers4")]

STACK = "transformers4"
MODELLED_VERSIONS = {"transformers": "4.44.2", "peft": "0.12.0", "trl": "0.11.4", "accelerate": "0.34.2",
                     "bitsandbytes": "0.44.1", "torch": "2.13.0"}
CASES = [
    ("llama-3-8b", {"method": "lora", "seq_len": 2048, "grad_ckpt": True}),
    # (LoRA at 512 without checkpointing, -0.3% here, is traced on the 4.41 stack, same loss path.)
    ("llama-3-8b", {"method": "qlora", "seq_len": 2048, "grad_ckpt": True}),
    ("llama-3-8b", {"method": "qlora", "seq_len": 512, "grad_ckpt": False}),
    ("llama-3-8b", {"method": "full", "seq_len": 1024, "grad_ckpt": True}),  # peak in step(): _foreach_sqrt
    # Per-expert nn.Linear experts: LoRA on every expert's w1/w3/w2, QLoRA with them 4-bit (routing balanced,
    # probes.trace._balanced_routing), full fine-tuning. 8 of Mixtral-8x7B's 32 layers (same shapes) keep the
    # CI time down; the whole model traces within 1% too (LoRA -0.3%, QLoRA -0.7%, full -0.1% at 512 tokens).
    ("mixtral-8x7b", {"method": "lora", "seq_len": 512, "grad_ckpt": True}),
    ("mixtral-8x7b", {"method": "qlora", "seq_len": 512, "grad_ckpt": True}),
    ("mixtral-8x7b", {"method": "qlora", "seq_len": 512, "grad_ckpt": False}),
    ("mixtral-8x7b", {"method": "full", "seq_len": 512, "grad_ckpt": True}),
    # TRL 0.11.4's SFTTrainer on a 4-bit model: prepare_model_for_kbit_training, then its own
    # peft_module_casting_to_bf16 puts the embeddings and lm_head back in bf16 (stack kbit_prepare
    # upcast_fp32_head_bf16); the loss is Trainer's.
    ("llama-3-8b", {"method": "qlora", "seq_len": 2048, "grad_ckpt": True, "framework": "trl"}),
    ("llama-3-8b", {"method": "qlora", "seq_len": 512, "grad_ckpt": False, "framework": "trl"}),
]
LAYERS = {"mixtral-8x7b": 8}


@pytest.fixture(scope="module")
def traced() -> dict:
    return checks.run_cases(STACK, MODELLED_VERSIONS, CASES, LAYERS)


def test_overlay_runs_the_pinned_releases(traced: dict) -> None:
    checks.assert_pinned(traced, STACK, MODELLED_VERSIONS["torch"])


def test_trl_0_11_sfttrainer_uses_the_trainer_loss(traced: dict) -> None:
    # The premise of frameworks.json's null trl<0.15 loss override (transformers' own loss holds).
    assert traced["trl_compute_loss_is_trainers"] is True


@pytest.mark.parametrize("index", range(len(CASES)), ids=[checks.case_id(c) for c in CASES])
def test_estimate_matches_transformers4_trace(traced: dict, index: int) -> None:
    checks.assert_agrees(traced["results"][index], CASES[index])
