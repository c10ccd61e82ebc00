"""Which layers of a model keep a sliding-window KV cache, read from its ``config.json``.

Rules of transformers 5 (``profiles/serve.json`` ``sliding_window``): an explicit ``layer_types``
list wins; gemma2 slides on even layers; qwen2/qwen3 slide only with ``use_sliding_window``, on
layers ``i >= max_window_layers``; mistral, mixtral and phi3 slide everywhere once ``sliding_window``
is set; other families never slide.
"""

from __future__ import annotations

from typing import Any

from planner.errors import ConfigError
from planner.specs import ModelConfig

_EVERY_LAYER = frozenset({"mistral", "mixtral", "phi3"})
_USE_FLAG = frozenset({"qwen2", "qwen3"})


def _window(raw: dict[str, Any]) -> int | None:
    value = raw.get("sliding_window")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"config.json field 'sliding_window' must be a positive integer or null, got {value!r}")
    return value


def layer_windows(config: ModelConfig, raw: dict[str, Any] | None) -> tuple[int | None, ...]:
    """Per decoder layer: its sliding window in tokens, or None for full attention.

    Args:
        config: the normalized config (family and layer count).
        raw: the ``config.json`` dict it came from (None: every layer full attention).

    Raises:
        ConfigError: a malformed ``sliding_window`` or ``layer_types``.
    """
    n, mt = config.num_hidden_layers, config.model_type
    if not raw:
        return (None,) * n
    window = _window(raw)
    if mt in _USE_FLAG and not raw.get("use_sliding_window", False):
        window = None
    types = raw.get("layer_types")
    if types is not None and mt in _EVERY_LAYER | _USE_FLAG | {"gemma2"}:
        if not isinstance(types, list) or len(types) != n:
            raise ConfigError(f"config.json field 'layer_types' must list one type per layer ({n})")
        return tuple(window if t == "sliding_attention" and window else None for t in types)
    if window is None:
        return (None,) * n
    if mt == "gemma2":
        return tuple(window if (i + 1) % 2 else None for i in range(n))
    if mt in _USE_FLAG:
        first = raw.get("max_window_layers", 28)
        return tuple(window if i >= first else None for i in range(n))
    if mt in _EVERY_LAYER:
        return (window,) * n
    return (None,) * n
