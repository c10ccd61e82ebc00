"""Token counts of text pieces: the model's ``tokenizer.json`` (HF ``tokenizers``, never downloaded) or bytes.

``tokenizers`` is imported only here and only when ``--dataset`` is used (it is in the ``data`` extra);
``transformers`` is never needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.catalog import _read_json, profiles_dir
from planner.errors import PlannerError


def dataset_constants() -> dict[str, Any]:
    """``profiles/dataset.json``: bytes per token and template overheads, with sources."""
    return _read_json(profiles_dir() / "dataset.json")


@dataclass(frozen=True)
class Counter:
    """Counts tokens of many strings: ``tokenizer`` when set, else UTF-8 bytes / ``bytes_per_token``."""

    name: str
    """Tokenizer path, or ``"bytes-estimate"``."""
    tokenizer: Any = None
    bytes_per_token: float | None = None

    def count(self, texts: list[str]) -> list[int]:
        """Tokens of each of ``texts`` (no special tokens: those are added per example by the caller)."""
        if self.tokenizer is not None:
            encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False)
            return [len(e.ids) for e in encodings]
        assert self.bytes_per_token is not None
        return [math.ceil(len(t.encode("utf-8")) / self.bytes_per_token) for t in texts]


def _tokenizer_file(path: Path) -> Path | None:
    if path.is_file() and path.name.endswith(".json"):
        return path
    if path.is_dir() and (path / "tokenizer.json").is_file():
        return path / "tokenizer.json"
    if path.is_file() and (path.parent / "tokenizer.json").is_file():  # a config.json next to it
        return path.parent / "tokenizer.json"
    return None


def find_tokenizer(model: str, hub_id: str | None, explicit: str | None) -> Path | None:
    """A local ``tokenizer.json`` for the model: ``explicit``, the model's folder, or the HF hub cache.

    Never downloads: the cache is read with ``huggingface_hub.try_to_load_from_cache``.

    Raises:
        PlannerError: ``explicit`` is given but holds no ``tokenizer.json``.
    """
    if explicit is not None:
        found = _tokenizer_file(Path(explicit))
        if found is None:
            raise PlannerError(f"--tokenizer {explicit}: no tokenizer.json there")
        return found
    local = _tokenizer_file(Path(model))
    if local is not None and Path(model).exists():
        return local
    for repo in (hub_id, model if "/" in model else None):
        if not repo:
            continue
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(repo, "tokenizer.json")
        except Exception:  # invalid repo id: no cache entry
            cached = None
        if isinstance(cached, str):
            return Path(cached)
    return None


def make_counter(tokenizer_file: Path | None) -> Counter:
    """A :class:`Counter` for ``tokenizer_file``, or the bytes estimate when it is None.

    Raises:
        PlannerError: the file is given but ``tokenizers`` is missing or cannot read it.
    """
    if tokenizer_file is None:
        return Counter("bytes-estimate", bytes_per_token=float(dataset_constants()["bytes_per_token"]))
    try:
        from tokenizers import Tokenizer  # the `data` extra
    except ImportError:
        raise PlannerError("counting with a tokenizer needs the tokenizers package: "
                           "pip install 'loraplan[data]'") from None
    try:
        return Counter(str(tokenizer_file), tokenizer=Tokenizer.from_file(str(tokenizer_file)))
    except Exception as err:  # tokenizers raises a bare Exception on a bad file
        raise PlannerError(f"cannot read tokenizer {tokenizer_file}: {err}") from None
