"""Shared fixtures. Heavy libraries (torch, transformers, peft) are imported only by tests that need them."""

from __future__ import annotations

import importlib.util
import os

import pytest

HAS_TORCH_STACK = all(importlib.util.find_spec(m) for m in ("torch", "transformers", "peft", "accelerate"))
needs_torch_stack = pytest.mark.skipif(not HAS_TORCH_STACK, reason="needs the probe extra (torch, transformers, peft)")


try:  # the property suite (tests/test_properties.py): bounded examples, no deadline (2-core CI)
    from hypothesis import HealthCheck, settings

    settings.register_profile("ci", max_examples=200, deadline=None, derandomize=True,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("deep", max_examples=2000, deadline=None)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # hypothesis is in the dev extra; test_properties.py skips without it
    pass
