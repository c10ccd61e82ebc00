"""Which code snippet a framework gets, and the option names that changed between library versions.

Data: ``profiles/stacks/snippets.json`` (each option's version ranges with the source it was read from:
TRL ``SFTConfig`` ``max_seq_length`` -> ``max_length`` at 0.16, transformers ``from_pretrained``
``torch_dtype`` -> ``dtype`` at 4.56, ``warmup_ratio`` -> float ``warmup_steps`` at 5.0).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from planner.catalog import _read_json, profiles_dir
from planner.specs import Frozen
from planner.stack.versions import _cmp, release, satisfies

DEFAULT_SNIPPETS = "default"
"""The ``frameworks`` entry used when no framework is given (the TRL SFTTrainer snippet)."""


class SnippetOptions(Frozen):
    """Option names of one set of library versions (``profiles/stacks/snippets.json`` ``options``)."""

    sft_max_length: str
    """``SFTConfig`` key of the sequence length: ``max_length`` (TRL >= 0.16) or ``max_seq_length``."""
    from_pretrained_dtype: str
    """``from_pretrained`` keyword of the weights' dtype: ``dtype`` (transformers >= 4.56) or ``torch_dtype``."""
    warmup: str
    """``TrainingArguments`` key of the warmup fraction: ``warmup_steps`` (transformers >= 5) or ``warmup_ratio``."""
    versions: dict[str, str]
    """The versions the names were chosen for."""


@cache
def _data() -> dict[str, Any]:
    return _read_json(profiles_dir() / "stacks" / "snippets.json")


def _pick(variants: list[dict[str, Any]], versions: dict[str, str]) -> str:
    """The first variant whose ranges hold; outside all, the first (newer than all) or the last (older)."""
    for v in variants:
        if all(satisfies(versions[lib], spec) for lib, spec in v["when"].items()):
            return str(v["value"])
    lib, spec = next(iter(variants[0]["when"].items()))
    bound = spec.split(",")[0].lstrip("<>=!")
    return str(variants[0]["value"] if _cmp(release(versions[lib]), release(bound)) >= 0 else variants[-1]["value"])


def snippet_options(versions: dict[str, str]) -> SnippetOptions:
    """The option names for ``versions`` (library -> version; must name transformers and trl)."""
    opts = _data()["options"]
    return SnippetOptions(versions=dict(versions), **{k: _pick(v, versions) for k, v in opts.items()})


def snippet_kind(framework: str | None) -> str | None:
    """The snippet ``framework`` gets (``trl``, ``trainer``, ``unsloth``, ``axolotl``), None when there is none.

    ``framework`` None: none given (the TRL SFTTrainer snippet).
    """
    return _data()["frameworks"][framework or DEFAULT_SNIPPETS]["snippet"]


def snippet_source(framework: str | None) -> str:
    """Where the snippet of ``framework`` was checked (or why there is none)."""
    return str(_data()["frameworks"][framework or DEFAULT_SNIPPETS]["source"])


def kbit_prepare_fixed(framework: str | None) -> bool:
    """Whether ``framework``'s trainer decides QLoRA's casts (recommend then searches only its choice)."""
    return framework is not None and framework in _data()["kbit_prepare_fixed"]["value"]


def torchtune_config(model: str) -> str | None:
    """The torchtune config prefix of loraplan model ``model`` (``llama3/8B``), None when it has none."""
    return _data()["torchtune_configs"]["value"].get(model)


def torchtune_optimizer(optim: str) -> str | None:
    """The ``optimizer._component_`` class path of loraplan optimizer ``optim``, None when torchtune has none."""
    return _data()["torchtune_optimizers"]["value"].get(optim)


def checkpointing_available(framework: str | None) -> bool:
    """Whether ``framework`` can checkpoint activations on one GPU (litgpt ``finetune_lora`` cannot)."""
    return framework is None or framework not in _data()["no_checkpointing"]["value"]
