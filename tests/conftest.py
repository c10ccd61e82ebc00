"""Shared fixtures. Heavy libraries (torch, transformers, peft) are imported only by tests that need them."""

from __future__ import annotations

import importlib.util

import pytest

HAS_TORCH_STACK = all(importlib.util.find_spec(m) for m in ("torch", "transformers", "peft", "accelerate"))
needs_torch_stack = pytest.mark.skipif(not HAS_TORCH_STACK, reason="needs the probe extra (torch, transformers, peft)")
