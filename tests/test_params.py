"""Exact parameter counts: closed form vs transformers (meta device) and PEFT, for every shipped profile."""

from __future__ import annotations

import pytest

from planner.model.targets import peft_target_modules
from planner.catalog import load_model, model_names, raw_config
from planner.model.params import param_counts, total_params
from planner.specs import Method, TrainSpec
from tests.conftest import needs_torch_stack

MODELS = model_names()


def test_known_values() -> None:
    assert total_params(load_model("llama-3-8b").config) == 8_030_261_248
    lora = TrainSpec(method=Method.LORA, rank=16, targets=("all-linear",))
    assert param_counts(load_model("llama-3-8b").config, lora).trainable == 41_943_040
    qv = TrainSpec(method=Method.LORA, rank=8, targets=("q_proj", "v_proj"))
    assert param_counts(load_model("llama-3.1-8b").config, qv).trainable == 3_407_872


def test_tied_embeddings_count_once() -> None:
    cfg = load_model("llama-3.2-1b").config
    assert cfg.tie_word_embeddings
    assert total_params(cfg) == 1_235_814_400


def test_full_trains_everything() -> None:
    counts = param_counts(load_model("gpt2").config, TrainSpec(method=Method.FULL))
    assert counts.trainable == counts.total == 124_439_808


@needs_torch_stack
@pytest.mark.parametrize("name", MODELS)
def test_total_matches_transformers(name: str) -> None:
    from tests.hf_meta import meta_model, unique_numel

    assert total_params(load_model(name).config) == unique_numel(meta_model(raw_config(name)))


def _target_sets(name: str) -> list[tuple[str, ...]]:
    from planner.model.architecture import architecture

    arch = architecture(load_model(name).config)
    sets = [("all-linear",), ("attn",)]
    if arch.qv_targets:
        sets.append(("qv",))
    sets.append((arch.linears[-1].name,))  # an MLP-only target
    return sets


# The largest models take seconds each on the meta device; PEFT counts are checked on all but those.
PEFT_MODELS = MODELS
PEFT_LAYERS = 4
"""PEFT's count is taken on each shipped config cut to this many decoder layers (every dimension, head count,
vocabulary and target kept; the closed form is per layer, and test_total_matches_transformers checks the
whole depth): building 80-126 meta layers per target set cost 45 s of CI for no extra coverage."""


def _cut(name: str) -> dict:
    raw = dict(raw_config(name))
    key = "n_layer" if "n_layer" in raw else "num_hidden_layers"
    raw[key] = min(raw[key], PEFT_LAYERS)
    return raw


@needs_torch_stack
@pytest.mark.parametrize("name", PEFT_MODELS)
def test_trainable_matches_peft(name: str) -> None:
    import peft

    from tests.hf_meta import meta_model

    from planner.catalog import normalize_config

    raw = _cut(name)
    cfg = normalize_config(raw)
    for targets in _target_sets(name):
        for dora in (False, True):
            spec = TrainSpec(method=Method.LORA, rank=8, targets=targets, dora=dora)
            model = meta_model(raw)
            lora = peft.LoraConfig(
                r=8, lora_alpha=16, target_modules=peft_target_modules(cfg, targets), use_dora=dora, task_type="CAUSAL_LM"
            )
            pm = peft.get_peft_model(model, lora)
            trainable = sum(p.numel() for p in pm.parameters() if p.requires_grad)
            assert param_counts(cfg, spec).trainable == trainable, (name, targets, dora)
            if name != PEFT_MODELS[0]:
                break  # DoRA on one model is enough; its rule is architecture-independent
