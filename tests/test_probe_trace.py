"""CPU trace on tiny handmade configs, checked against bytes computed by hand.

The tiny Llama: hidden 64, intermediate 128, 2 layers, 4 heads of 16, 2 kv heads, vocab 256,
untied; batches of 1 x 32 tokens; bf16. Byte counts below follow what each op of the modeled step
keeps alive (see probes/build.py); the comments name the tensors.
"""

from __future__ import annotations

import math

import pytest

from tests.conftest import needs_torch_stack

pytestmark = [needs_torch_stack, pytest.mark.trace]

H, I, L, HEADS, KV, HD, V, T = 64, 128, 2, 4, 2, 16, 256, 32
Q = HEADS * HD
TINY = dict(model_type="llama", hidden_size=H, intermediate_size=I, num_hidden_layers=L, num_attention_heads=HEADS,
            num_key_value_heads=KV, vocab_size=V, max_position_embeddings=128, tie_word_embeddings=False,
            rms_norm_eps=1e-5, rope_theta=10000.0)
LINEARS = [(H, Q), (H, KV * HD), (H, KV * HD), (Q, H), (H, I), (H, I), (I, H)]  # (in, out) per layer
N_PARAMS = V * H * 2 + L * (sum(i * o for i, o in LINEARS) + 2 * H) + H
ROPE_BUFFERS = 2 * (HD // 2) * 4  # inv_freq and original_inv_freq, fp32


def trace(raw: dict | None = None, **spec_kw):
    from planner.specs import TrainSpec
    from probes.trace import run_trace

    spec = TrainSpec(**{"seq_len": T, "micro_batch": 1, "grad_ckpt": False, "rank": 4, "alpha": 8.0, **spec_kw})
    return run_trace(raw or TINY, spec)


def gib_to_bytes(x: float) -> int:
    return round(x * 2**30)


def saved_activations(run) -> int:
    """Bytes saved for backward at the end of the first forward (batch and baseline excluded)."""
    b = run.detail.breakdown_gib
    return gib_to_bytes(b["end_of_forward.step1"].other_gib - b["after_optimizer_init"].other_gib) - 8 * T


def test_full_finetune_params_grads_adamw_states() -> None:
    run = trace(method="full")
    b = run.detail.breakdown_gib
    assert run.params_total == run.params_trainable == N_PARAMS
    assert gib_to_bytes(b["after_load"].trainable_gib) == 2 * N_PARAMS  # bf16 weights
    assert gib_to_bytes(b["after_load"].weights_gib) == ROPE_BUFFERS
    assert gib_to_bytes(b["end_of_backward.step2"].gradients_gib) == 2 * N_PARAMS
    # fused AdamW: exp_avg + exp_avg_sq like the (bf16) params + one fp32 step scalar per param tensor
    tensors = 2 + L * (len(LINEARS) + 2) + 1
    assert gib_to_bytes(b["end"].optimizer_gib) == 2 * 2 * N_PARAMS + 4 * tensors


def test_full_finetune_saved_activations_by_hand() -> None:
    run = trace(method="full")
    # RMSNorm: fp32 copy of x, rsqrt (T fp32), bf16 normalized x (weight grad), output (next matmul input)
    norm = 4 * T * H + 4 * T + 2 * T * H + 2 * T * H
    mlp = 4 * 2 * T * I  # gate out (silu input), silu out, up out, product (down_proj input)
    # flash attention saves q, k, v (GQA: k/v not repeated), out, fp32 logsumexp, philox seed/offset
    attn = 2 * T * Q + 2 * 2 * T * KV * HD + 2 * T * Q + 4 * HEADS * T + 16 + 8
    per_layer = 2 * norm + mlp + attn
    outside = 2 * 2 * T * HD + norm + 4 * T * V + 8 * (T + 1) + 8  # cos/sin, final norm, log_softmax, labels, loss
    assert saved_activations(run) == L * per_layer + outside


def test_lora_adapters_grads_and_states() -> None:
    run = trace(method="lora")
    b = run.detail.breakdown_gib
    adapter_params = L * sum(4 * (i + o) for i, o in LINEARS)
    assert run.params_trainable == adapter_params and run.params_total == N_PARAMS
    assert gib_to_bytes(b["after_load"].trainable_gib) == 4 * adapter_params  # fp32 adapters (PEFT)
    assert gib_to_bytes(b["after_load"].weights_gib) == 2 * N_PARAMS + ROPE_BUFFERS
    assert gib_to_bytes(b["end_of_backward.step2"].gradients_gib) == 4 * adapter_params
    assert gib_to_bytes(b["end"].optimizer_gib) == 2 * 4 * adapter_params + 4 * 2 * L * len(LINEARS)


def test_lora_dropout_saves_bool_masks() -> None:
    """Dropout adds one byte per element of each adapted input that needs a gradient (CUDA's bool mask).

    Without checkpointing nothing upstream of layer 0's attention needs a gradient (frozen embeddings),
    so q/k/v of layer 0 save no mask.
    """
    with_dropout = saved_activations(trace(method="lora", lora_dropout=0.05))
    without = saved_activations(trace(method="lora", lora_dropout=0.0))
    per_layer = T * (3 * H + Q + 2 * H + I)  # q, k, v, o, gate, up, down inputs
    assert with_dropout - without == L * per_layer - T * 3 * H


@pytest.mark.parametrize("double_quant", [True, False])
def test_qlora_nf4_storage(double_quant: bool) -> None:
    run = trace(method="qlora", double_quant=double_quant)
    per_linear = 0
    for i, o in LINEARS:
        n = i * o
        blocks = math.ceil(n / 64)
        if double_quant:  # uint8 absmax, fp32 absmax per 256 of them, fp32 offset
            stats = blocks + 4 * math.ceil(blocks / 256) + 4
        else:
            stats = 4 * blocks
        per_linear += math.ceil(n / 2) + stats + 4 * 16  # packed weight + stats + fp32 NF4 code
    shared_code = 4 * 256 if double_quant else 0
    fp32_rest = 4 * (2 * V * H + (2 * L + 1) * H)  # embeddings, lm_head, norms cast by prepare_model_for_kbit
    weights = L * per_linear + shared_code + fp32_rest + ROPE_BUFFERS
    assert gib_to_bytes(run.detail.breakdown_gib["after_load"].weights_gib) == weights
    assert any("NF4 emulated" in note for note in run.detail.emulated)
    assert run.params_total == N_PARAMS


def test_checkpointing_recomputes_and_saves_less() -> None:
    plain = trace(method="lora")
    ckpt = trace(method="lora", grad_ckpt=True)
    assert saved_activations(ckpt) < saved_activations(plain)
    assert ckpt.detail.peak_gib < plain.detail.peak_gib


def test_gradient_accumulation_keeps_gradients_through_forward() -> None:
    run = trace(method="lora", grad_accum=2)
    b = run.detail.breakdown_gib
    assert b["end_of_forward.step2"].gradients_gib == pytest.approx(b["after_load"].trainable_gib)
    assert [p.phase for p in run.detail.phases if p.step == 2] == ["forward", "backward", "forward", "backward",
                                                                    "optimizer"]


def test_adamw_8bit_state_layout() -> None:
    run = trace(method="full", optim="adamw-8bit")
    sizes = [V * H, V * H] + L * ([i * o for i, o in LINEARS] + [H, H]) + [H]
    embedding = V * H  # Trainer keeps nn.Embedding weights in 32-bit state
    expected = 2 * 256 * 4  # the shared "dynamic"/"udynamic" maps
    for k, n in enumerate(sizes):
        if n >= 4096 and not (k == 0 and n == embedding):
            expected += 2 * n + 2 * 4 * math.ceil(n / 256)
        else:
            expected += 2 * 4 * n
    assert gib_to_bytes(run.detail.breakdown_gib["end"].optimizer_gib) == expected


def test_paged_state_is_outside_live_bytes() -> None:
    raw = {**TINY, "vocab_size": 2048}  # embeddings of 131072 elements: paged (>= 1e5)
    run = trace(raw, method="full", optim="paged-adamw")
    paged = 2 * 2 * 4 * 2048 * H  # fp32 state1 + state2 of embed_tokens and lm_head
    assert gib_to_bytes(run.detail.paged_gib) == paged
    small = N_PARAMS - 2 * V * H
    assert gib_to_bytes(run.detail.breakdown_gib["end"].optimizer_gib) == 2 * 4 * small


def test_int8_base_weights_are_refused() -> None:
    from planner.errors import PlannerError

    with pytest.raises(PlannerError, match="4-bit NF4 only"):
        trace(method="qlora", quant_bits=8)


def test_moe_and_conv1d_families_run() -> None:
    mixtral = dict(model_type="mixtral", hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, vocab_size=256, num_local_experts=4,
                   num_experts_per_tok=2, max_position_embeddings=128, tie_word_embeddings=False)
    run = trace(mixtral, method="lora", lora_dropout=0.0)
    assert run.params_trainable > 0 and run.peak_bytes > run.after_load_bytes
    gpt2 = dict(model_type="gpt2", n_embd=64, n_head=4, n_layer=2, vocab_size=256, n_positions=128)
    run = trace(gpt2, method="lora")
    assert run.params_trainable == 2 * (4 * (64 + 192) + 4 * (64 + 64) + 4 * (64 + 256) + 4 * (256 + 64))


def test_moe_expert_parameters_refuse_dropout_with_a_hint() -> None:
    from planner.errors import PlannerError

    mixtral = dict(model_type="mixtral", hidden_size=64, intermediate_size=96, num_hidden_layers=1,
                   num_attention_heads=4, num_key_value_heads=2, vocab_size=256, num_local_experts=4,
                   num_experts_per_tok=2, max_position_embeddings=128)
    with pytest.raises(PlannerError, match="--lora-dropout 0"):
        trace(mixtral, method="lora", lora_dropout=0.05)
