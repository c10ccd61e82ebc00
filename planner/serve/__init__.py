"""``loraplan serve``: memory of serving a model (weights, adapters, KV cache, prefill) with HF or vLLM."""
