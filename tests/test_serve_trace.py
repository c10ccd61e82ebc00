"""``serve_estimate``'s KV term equals the bytes of a real transformers ``StaticCache`` after ``generate``.

Tiny random Llama (GQA), Mistral (sliding_window 8) and Gemma 2 (alternating sliding / full layers) models
run ``generate(cache_implementation="static")`` on the CPU in bf16. transformers sizes the static cache at
``max_length - 1`` = prompt + new - 1 tokens, which is what ``--context`` means (profiles/serve.json ``hf``).
"""

from __future__ import annotations

import pytest

from tests.conftest import needs_torch_stack

pytestmark = [needs_torch_stack, pytest.mark.trace]

_COMMON = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
               num_key_value_heads=2, vocab_size=128, max_position_embeddings=256, tie_word_embeddings=False)
CONFIGS = {
    "llama": dict(_COMMON, model_type="llama", head_dim=16),
    "mistral": dict(_COMMON, model_type="mistral", head_dim=16, sliding_window=8),
    "gemma2": dict(_COMMON, model_type="gemma2", head_dim=32, sliding_window=8, query_pre_attn_scalar=32,
                   tie_word_embeddings=True),
}


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_static_cache_bytes_equal_the_estimate(family: str) -> None:
    from planner.catalog import normalize_config
    from planner.serve.estimate import serve_estimate
    from planner.serve.layout import layer_windows
    from planner.serve.spec import ServeSpec
    from planner.specs import GIB
    from probes.serve_trace import trace_static_cache

    raw = CONFIGS[family]
    batch, prompt, new = 2, 12, 8
    trace = trace_static_cache(raw, batch=batch, prompt_tokens=prompt, new_tokens=new)
    config = normalize_config(raw)
    spec = ServeSpec(batch=batch, context=prompt + new - 1)
    est = serve_estimate(spec, config, None, layer_windows(config, raw))
    assert est.kv_tokens_per_layer == trace.tokens_per_layer
    assert est.kv_cache_gib * GIB == trace.kv_bytes
    expected_sliding = {"llama": [False] * 4, "mistral": [True] * 4, "gemma2": [True, False, True, False]}
    assert trace.sliding == expected_sliding[family]
    if family == "gemma2":
        assert trace.tokens_per_layer == [8, 19, 8, 19]


def _tiny(model_type: str, intermediate: int, heads: int, kv_heads: int) -> dict:
    return dict(model_type=model_type, hidden_size=256, intermediate_size=intermediate, num_hidden_layers=2,
                num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=256 // heads, vocab_size=64,
                max_position_embeddings=4096, tie_word_embeddings=False)


@pytest.mark.parametrize(("raw", "low", "high"), [
    (_tiny("llama", 2048, 2, 1), -0.01, 0.0),    # MLP-bound, like every shipped model (intermediate >= 2.7 x hidden)
    (_tiny("mistral", 1024, 4, 4), -0.01, 0.0),
    (_tiny("qwen2", 768, 4, 2), -0.01, 0.0),
    (_tiny("llama", 256, 8, 8), -0.01, 0.10),    # attention-bound: the estimate stays above the trace
    (_tiny("llama", 256, 8, 2), -0.01, 0.10),    # RMSNorm float32 upcast / attention
], ids=["llama-mlp", "mistral-mlp", "qwen2-mlp", "attention", "norm"])
def test_prefill_peak_matches_a_generate_trace(raw: dict, low: float, high: float) -> None:
    """Static cache + prefill activations vs the live-bytes peak of ``generate`` (weights excluded)."""
    from planner.catalog import normalize_config
    from planner.serve.estimate import serve_estimate
    from planner.serve.layout import layer_windows
    from planner.serve.spec import ServeSpec
    from planner.specs import GIB
    from probes.serve_trace import trace_prefill_peak

    batch, prompt = 2, 256
    peak = trace_prefill_peak(raw, batch, prompt)
    config = normalize_config(raw)
    est = serve_estimate(ServeSpec(batch=batch, context=prompt), config, None, layer_windows(config, raw))
    ours = (est.kv_cache_gib + est.prefill_activations_gib) * GIB
    assert low <= ours / peak - 1 <= high, (ours, peak)
