"""Every memory component on hand-worked examples (Llama-3-8B unless stated).

Llama-3-8B: h=4096, i=14336, L=32, 32 heads, 8 KV heads (head_dim 128), vocab 128256, untied.
Per layer linear weights: q 4096*4096 + k,v 2*4096*1024 + o 4096*4096 + gate/up/down 3*4096*14336
= 218,103,808; x32 = 6,979,321,856 quantizable; the rest (embed, lm_head, norms) = 1,050,939,392.
"""

from __future__ import annotations

import pytest

from planner.memory import states
from planner.memory.activations import activations
from planner.memory.context import build_context, nf4_bytes_per_param
from planner.memory.loss import logits_memory
from planner.memory.optimizer import optimizer_memory
from planner.catalog import load_model
from planner.estimator import estimate
from planner.specs import GIB, Attn, Method, Optim, TrainSpec
from tests.conftest import needs_torch_stack


def ctx(config, train):  # noqa: ANN001, ANN201
    return build_context(config, train)

CFG = load_model("llama-3-8b").config
TOTAL = 8_030_261_248
QUANTIZED = 6_979_321_856
OTHER = TOTAL - QUANTIZED
LORA_ALL = 41_943_040  # r=16, all-linear


def test_nf4_bytes_per_param() -> None:
    # 4 bits + fp32 absmax per 64 values; double quant: uint8 absmax + fp32 absmax per 256 blocks.
    assert nf4_bytes_per_param(False) == 0.5 + 4 / 64
    assert nf4_bytes_per_param(True) == pytest.approx(0.5 + 1 / 64 + 4 / (64 * 256))


def test_weights_by_method() -> None:
    assert states.weight_bytes(ctx(CFG, TrainSpec(method=Method.LORA))) == TOTAL * 2.0
    assert states.weight_bytes(ctx(CFG, TrainSpec(method=Method.FULL, fp32_master=True))) == TOTAL * 4.0
    qlora = TrainSpec(method=Method.QLORA, double_quant=False)
    # NF4 linears + everything else upcast to fp32 by prepare_model_for_kbit_training.
    assert states.weight_bytes(ctx(CFG, qlora)) == QUANTIZED * 0.5625 + OTHER * 4.0


def test_qlora_without_kbit_prepare_keeps_16bit() -> None:
    # Current TRL SFTTrainer does not call prepare_model_for_kbit_training: embeddings, lm_head, norms stay bf16.
    spec = TrainSpec(method=Method.QLORA, double_quant=False, kbit_prepare=False)
    assert states.weight_bytes(ctx(CFG, spec)) == QUANTIZED * 0.5625 + OTHER * 2.0
    assert logits_memory(ctx(CFG, spec)).saved_weight_bytes == 0.0  # no fp32 lm_head to cast


def test_adapters_gradients_optimizer_lora() -> None:
    spec = TrainSpec(method=Method.LORA, rank=16)
    assert states.adapter_bytes(ctx(CFG, spec)) == LORA_ALL * 4.0  # fp32 adapters
    assert states.gradient_bytes(ctx(CFG, spec)) == LORA_ALL * 4.0
    assert optimizer_memory(ctx(CFG, spec)).state_bytes == LORA_ALL * 8.0  # AdamW: 2 fp32 states


def test_full_finetuning_pure_bf16() -> None:
    spec = TrainSpec(method=Method.FULL)
    assert states.gradient_bytes(ctx(CFG, spec)) == TOTAL * 2.0
    assert optimizer_memory(ctx(CFG, spec)).state_bytes == TOTAL * 4.0  # states take the param dtype


def test_8bit_and_paged_optimizers() -> None:
    spec = TrainSpec(method=Method.FULL, optim=Optim.ADAMW_8BIT)
    state = optimizer_memory(ctx(CFG, spec)).state_bytes
    # Every tensor has >= min_8bit_size (4096) elements: 2 * (1 + 4/256) B each, except the token
    # embedding, which Trainer overrides to 32-bit state (register_module_override, optim_bits=32).
    embed = 128256 * 4096
    assert state == pytest.approx((TOTAL - embed) * 2.03125 + embed * 8.0)
    norms = 4096 * (2 * 32 + 1)  # under paged_min_numel (1e5): plain allocations even when paged
    paged = optimizer_memory(ctx(CFG, TrainSpec(method=Method.FULL, optim=Optim.PAGED_ADAMW_8BIT)))
    assert paged.paged_bytes == pytest.approx((TOTAL - norms - embed) * 2.03125 + embed * 8.0)
    assert paged.state_bytes == pytest.approx(norms * 2.03125)
    lora = optimizer_memory(ctx(CFG, TrainSpec(method=Method.LORA, rank=4, optim=Optim.ADAMW_8BIT)))
    # r=4: lora_A of q (4 x 4096 = 16384) is 8-bit; lora_B of k (1024 x 4 = 4096) too; none is under 4096.
    assert lora.state_bytes == pytest.approx(32 * 4 * (4096 + 4096 + 4096 + 1024 + 4096 + 1024 + 4096 + 4096 + 3 * (4096 + 14336)) * 2.03125)
    assert optimizer_memory(ctx(CFG, TrainSpec(method=Method.FULL, optim=Optim.SGD))).state_bytes == 0.0


def test_adafactor_is_factored() -> None:
    spec = TrainSpec(method=Method.FULL, optim=Optim.ADAFACTOR)
    om = optimizer_memory(ctx(CFG, spec))
    assert om.state_bytes < 0.01 * TOTAL * 4  # rows + columns, not a full second moment
    assert om.step_transient_bytes == 4 * 4.0 * 128256 * 4096  # fp32 grad, param, grad**2 and update of the embedding


def test_logits_upcast_dominates_for_128k_vocab() -> None:
    spec = TrainSpec(micro_batch=1, seq_len=2048)
    lm = logits_memory(ctx(CFG, spec))
    n = 2048 * 128256
    assert lm.forward_bytes == n * (2 + 4 + 4)  # bf16 logits, fp32 copy, log_softmax output
    assert lm.backward_bytes == n * 12  # saved log_softmax output + two fp32 gradients
    assert lm.saved_weight_bytes == 0.0
    qlora = logits_memory(ctx(CFG, spec.model_copy(update={"method": Method.QLORA})))
    assert qlora.saved_weight_bytes == 128256 * 4096 * 2  # bf16 cast of the fp32 lm_head


def test_checkpointing_keeps_layer_inputs_only() -> None:
    spec = TrainSpec(micro_batch=2, seq_len=1024, grad_ckpt=True)
    acts = activations(ctx(CFG, spec))
    assert acts.checkpoint_bytes == 2 * 1024 * 4096 * 2.0
    assert acts.layers_saved(32, True) == 32 * acts.checkpoint_bytes
    assert acts.per_layer_bytes > 10 * acts.checkpoint_bytes


def test_eager_attention_keeps_scores() -> None:
    sdpa = activations(ctx(CFG, TrainSpec(attn=Attn.SDPA, seq_len=1024, grad_ckpt=False)))
    eager = activations(ctx(CFG, TrainSpec(attn=Attn.EAGER, seq_len=1024, grad_ckpt=False)))
    # fp32 softmax + bf16 probabilities per head per query-key pair, plus repeated k/v, minus the lse.
    scores = 32 * 1024 * 1024 * (4 + 2)
    assert eager.per_layer_bytes - sdpa.per_layer_bytes == pytest.approx(
        scores + 1024 * 2 * (2 * 4096 - 2 * 1024) - 1024 * (2 * 4096 + 32 * 4), rel=1e-9
    )
    assert activations(ctx(CFG, TrainSpec(attn=Attn.FLASH, seq_len=1024))).per_layer_bytes == sdpa.per_layer_bytes


def test_lora_dropout_adds_masks() -> None:
    with_dropout = activations(ctx(CFG, TrainSpec(lora_dropout=0.1, grad_ckpt=False, seq_len=512)))
    without = activations(ctx(CFG, TrainSpec(lora_dropout=0.0, grad_ckpt=False, seq_len=512)))
    mask_bytes = 512 * (3 * 4096 + 4096 + 2 * 4096 + 14336)  # one bool per input element of each adapted module
    assert with_dropout.per_layer_bytes - without.per_layer_bytes == mask_bytes


def test_peak_is_a_phase_not_the_sum() -> None:
    est = estimate("llama-3-8b", TrainSpec(method=Method.FULL, grad_ckpt=True))
    m = est.memory_gib
    total = sum(m.model_dump().values())
    assert est.peak_gib.allocated < total
    assert est.peak_gib.allocated >= m.weights + m.optimizer
    assert est.peak_phase in {"forward", "backward", "optimizer"}


def test_peak_grows_with_batch_and_sequence() -> None:
    base = estimate("llama-3-8b", TrainSpec(micro_batch=1, seq_len=1024)).peak_gib.allocated
    assert estimate("llama-3-8b", TrainSpec(micro_batch=2, seq_len=1024)).peak_gib.allocated > base
    assert estimate("llama-3-8b", TrainSpec(micro_batch=1, seq_len=2048)).peak_gib.allocated > base


def test_paged_state_is_device_not_allocated() -> None:
    est = estimate("llama-3-8b", TrainSpec(method=Method.FULL, optim=Optim.PAGED_ADAMW), gpu="h100")
    assert est.host_spillable_gib > 50
    assert est.peak_gib.device - est.peak_gib.reserved >= est.host_spillable_gib
    assert any("paged" in w for w in est.warnings)


def test_moe_all_linear_materializes_merged_experts() -> None:
    mixtral = load_model("mixtral-8x7b").config
    attn = activations(ctx(mixtral, TrainSpec(targets=("attn",), seq_len=512, grad_ckpt=False)))
    every = activations(ctx(mixtral, TrainSpec(targets=("all-linear",), seq_len=512, grad_ckpt=False)))
    merged = 8 * 3 * 4096 * 14336 * 2.0  # bf16 baddbmm(W, B, A) of gate_up and down, per layer
    assert every.per_layer_bytes - attn.per_layer_bytes > merged


@needs_torch_stack
def test_frozen_linear_does_not_save_its_input() -> None:
    """[AUTOGRAD] in planner/memory.py: the premise of the frozen-base activation terms."""
    import torch
    import torch.nn.functional as F

    x = torch.randn(2, 8, 16, requires_grad=True)
    frozen, trainable = torch.randn(32, 16), torch.randn(32, 16, requires_grad=True)

    def saved_shapes(weight):
        shapes = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: (shapes.append(tuple(t.shape)), t)[1], lambda t: t):
            F.linear(x, weight)
        return shapes

    assert (16, 16) not in saved_shapes(frozen) and (2 * 8, 16) not in saved_shapes(frozen)
    assert len(saved_shapes(trainable)) == 2  # weight and input
    assert GIB == 2**30


def test_ledger_terms_sum_to_components_and_peak() -> None:
    """The ledger is the estimate: components are the per-component sums of its terms, and the allocated
    peak is the sum of the allocated terms alive in the peak sub-phase."""
    from planner.memory.ledger import Pool
    from planner.memory.step import step_ledger

    for spec in (TrainSpec(), TrainSpec(method=Method.FULL, grad_ckpt=False), TrainSpec(method=Method.QLORA)):
        est = estimate("llama-3-8b", spec, gpu="4090")
        by_component: dict[str, float] = {}
        for term in est.terms:
            assert term.gib >= 0 and term.phases, term
            by_component[term.component] = by_component.get(term.component, 0.0) + term.gib
        # Terms whose table size differs from their largest size are the documented exceptions (counted_bytes).
        ledger = step_ledger(ctx(CFG, spec))
        assert {t.name for t in ledger.terms} <= {t.name for t in est.terms}
        phase, allocated = ledger.peak()
        assert allocated == pytest.approx(sum(t.at(phase) for t in ledger.terms if t.pool is Pool.ALLOCATED))
        assert est.stack is not None and est.stack.framework == "trainer"


def test_every_term_names_a_source() -> None:
    est = estimate("mixtral-8x7b", TrainSpec(method=Method.QLORA, optim=Optim.PAGED_ADAMW_8BIT), gpu="h100")
    assert all(t.source for t in est.terms), [t.name for t in est.terms if not t.source]
