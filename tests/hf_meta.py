"""Build transformers models on the meta device from shipped configs (no weights, no download)."""

from __future__ import annotations

from typing import Any


def meta_model(raw: dict[str, Any]):
    """``AutoModelForCausalLM.from_config`` on the meta device, with tied weights tied.

    transformers 5 leaves tied output heads untied under accelerate's ``init_empty_weights``,
    so this uses ``torch.device("meta")`` and calls ``tie_weights()``.
    """
    import torch
    import transformers

    cfg = {k: v for k, v in raw.items() if k != "auto_map"}
    config = transformers.AutoConfig.for_model(**cfg)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    model.tie_weights()
    return model


def unique_numel(model) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
