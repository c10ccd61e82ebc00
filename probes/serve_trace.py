"""CPU check of ``serve_estimate``'s KV term: run ``generate`` with a static cache and weigh the cache.

A tiny random model is built from a config dict (no download), ``model.generate(...,
cache_implementation="static")`` runs on the CPU, and the K/V tensors that the returned
``StaticCache`` holds are measured layer by layer (transformers 5 ``cache_utils``: ``cache.layers[i].keys``
/ ``.values``, ``StaticSlidingWindowLayer`` for sliding layers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class CacheTrace:
    """What the static cache held after ``generate``."""

    kv_bytes: int
    """K plus V bytes over every layer."""
    tokens_per_layer: list[int]
    """The cache length of each layer (keys.shape[2])."""
    sliding: list[bool]
    batch: int
    prompt_tokens: int
    new_tokens: int


def build_model(config: dict[str, Any], dtype: str = "bf16") -> torch.nn.Module:
    """A randomly initialized causal LM for ``config`` (a ``config.json`` dict with ``model_type``)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    raw = dict(config)
    cfg = AutoConfig.for_model(raw.pop("model_type"), **raw)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=_DTYPES[dtype])
    return model.eval()


def trace_static_cache(config: dict[str, Any], batch: int, prompt_tokens: int, new_tokens: int,
                       dtype: str = "bf16") -> CacheTrace:
    """Generate ``new_tokens`` after a random ``prompt_tokens`` prompt per row and weigh the static cache."""
    model = build_model(config, dtype)
    vocab = model.config.vocab_size
    ids = torch.randint(3, vocab, (batch, prompt_tokens), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, cache_implementation="static",
                             return_dict_in_generate=True, pad_token_id=0)
    cache = out.cache  # transformers 5 GenerateDecoderOnlyOutput.cache (past_key_values is deprecated)
    total, lengths, sliding = 0, [], []
    for layer in cache.layers:
        keys, values = layer.keys, layer.values
        total += keys.numel() * keys.element_size() + values.numel() * values.element_size()
        lengths.append(int(keys.shape[2]))
        sliding.append(bool(getattr(layer, "is_sliding", False)))
    return CacheTrace(kv_bytes=total, tokens_per_layer=lengths, sliding=sliding, batch=batch,
                      prompt_tokens=prompt_tokens, new_tokens=new_tokens)


def trace_prefill_peak(config: dict[str, Any], batch: int, prompt_tokens: int, dtype: str = "bf16") -> int:
    """Peak bytes of everything but the weights while ``generate`` runs one prefill (``max_new_tokens=1``).

    Counted with :class:`probes.memtrack.LiveBytesTracker` (every storage an op creates); the parameters and
    buffers are registered first and subtracted, so the figure is static cache + activations + logits.
    """
    from probes.memtrack import LiveBytesTracker

    model = build_model(config, dtype)
    ids = torch.randint(3, model.config.vocab_size, (batch, prompt_tokens), generator=torch.Generator().manual_seed(0))
    tracker = LiveBytesTracker()
    with torch.no_grad(), tracker:
        for tensor in [*model.parameters(), *model.buffers()]:
            tracker.track(tensor)
        weights = tracker.live_bytes
        tracker.reset_peak()
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=1, min_new_tokens=1,
                       do_sample=False, cache_implementation="static", pad_token_id=0)
    return int(tracker.peak_bytes - weights)
