"""Profile loaders: model configs, GPUs, cloud instances and runtime constants from ``profiles/``.

Models resolve from (in order) a local ``config.json`` or model folder, a shipped profile by
name / alias / hub id, or a hub id fetched with ``huggingface_hub`` (config.json only, cached;
remote code is never run).
"""

from __future__ import annotations

import json
import math
import re
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from planner.errors import ConfigError, OfflineError, PlannerError, unknown
from planner.inputs import read_json_file
from planner.specs import GpuProfile, ModelConfig, ModelProfile

# --------------------------------------------------------------------------- files


@cache
def profiles_dir() -> Path:
    """Folder of the shipped ``profiles`` package data (a plain package, so no importlib.resources)."""
    import profiles

    return Path(profiles.__file__).parent


@cache
def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def runtime_constants() -> dict[str, Any]:
    """``profiles/runtime.json``: CUDA context, cuBLAS workspace, allocator and NF4 constants with sources."""
    return _read_json(profiles_dir() / "runtime.json")


def serve_constants() -> dict[str, Any]:
    """``profiles/serve.json``: quantized storage formats, vLLM and transformers serving constants with sources."""
    return _read_json(profiles_dir() / "serve.json")


# --------------------------------------------------------------------------- config normalization

# transformers' per-family default for ``tie_word_embeddings`` when config.json omits it
# (each family's ``configuration_*.py`` in transformers 5.x).
_TIE_DEFAULT = {"gemma": True, "gemma2": True, "gemma3_text": True, "gpt2": True, "falcon": True}

_LLAMA_LIKE = {"llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "phi3"}
SUPPORTED_MODEL_TYPES = frozenset(_LLAMA_LIKE | {"falcon", "gpt2"})


def _need(raw: dict[str, Any], *keys: str) -> int:
    """The first of ``keys`` present: a positive integer (a bool, a string or a float is an error)."""
    for key in keys:
        if raw.get(key) is not None:
            return _int(raw, key)
    raise ConfigError(f"config.json is missing field {keys[0]!r} (model_type {raw.get('model_type')!r})")


def _int(raw: dict[str, Any], key: str, default: int | None = None, *, minimum: int = 1) -> Any:
    """``raw[key]`` as an exact JSON integer >= ``minimum`` (absent or null: ``default``)."""
    value = raw.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"config.json field {key!r} must be an integer, got {_shown(value)}")
    if value < minimum:
        raise ConfigError(f"config.json field {key!r} must be >= {minimum}, got {value}")
    if value > 1 << 40:
        raise ConfigError(f"config.json field {key!r} is implausibly large ({_shown(value)})")
    return value


def _bool(raw: dict[str, Any], key: str, default: bool) -> bool:
    """``raw[key]`` as a JSON boolean (``"false"`` is a string, not False; absent or null: ``default``)."""
    value = raw.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigError(f"config.json field {key!r} must be true or false, got {_shown(value)}")
    return value


def _float(raw: dict[str, Any], key: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"config.json field {key!r} must be a positive number, got {_shown(value)}")
    return float(value)


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, int) or abs(value) < 10**24 else f"a {len(str(value))}-digit int"
    return text if len(text) <= 40 else text[:37] + "..."


def _divisible(mt: str, h: int, heads: int, head_dim_given: bool) -> None:
    if not head_dim_given and h % heads:
        raise ConfigError(f"config.json: hidden_size {h} is not divisible by num_attention_heads {heads} "
                          f"(and no head_dim is given) for model_type {mt!r}")


def _check_consistency(cfg: ModelConfig) -> None:
    """Architectural consistency, naming the fields (transformers would fail, or compute something else)."""
    if cfg.num_attention_heads % cfg.num_key_value_heads:
        raise ConfigError(f"config.json: num_key_value_heads {cfg.num_key_value_heads} does not divide "
                          f"num_attention_heads {cfg.num_attention_heads} (grouped-query attention needs it)")
    if cfg.num_local_experts or cfg.model_type == "mixtral":
        if cfg.num_local_experts < 1:
            raise ConfigError("config.json: num_local_experts must be >= 1 for a mixture of experts")
        if not 1 <= cfg.num_experts_per_tok <= cfg.num_local_experts:
            raise ConfigError(f"config.json: num_experts_per_tok {cfg.num_experts_per_tok} must be in "
                              f"1..num_local_experts ({cfg.num_local_experts})")


def config_warnings(raw: dict[str, Any]) -> list[str]:
    """Things a config says that the estimate does not model (one line each), e.g. ``auto_map``."""
    out = []
    if isinstance(raw, dict) and raw.get("auto_map"):
        out.append("config.json has auto_map (custom modelling code); loraplan never runs it and estimates the "
                   f"standard {raw.get('model_type')!r} architecture, which that code may change")
    return out


def normalize_config(raw: dict[str, Any]) -> ModelConfig:
    """Map a HF ``config.json`` dict onto :class:`ModelConfig` (Llama field names).

    Raises:
        ConfigError: unsupported ``model_type`` or a missing field (named in the message).
    """
    if not isinstance(raw, dict):
        raise ConfigError("config.json is not a JSON object")
    mt = raw.get("model_type")
    if mt is None:
        raise ConfigError("config.json is missing field 'model_type'")
    if not isinstance(mt, str):
        raise ConfigError(f"config.json field 'model_type' must be a string, got {_shown(mt)}")
    if mt not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(f"model_type {mt!r} is not supported; supported: {', '.join(sorted(SUPPORTED_MODEL_TYPES))}")
    tie = _bool(raw, "tie_word_embeddings", _TIE_DEFAULT.get(mt, False))
    if mt == "gpt2":
        h = _need(raw, "n_embd")
        heads = _need(raw, "n_head")
        _divisible(mt, h, heads, False)
        fields = dict(
            hidden_size=h,
            intermediate_size=_int(raw, "n_inner") or 4 * h,
            num_hidden_layers=_need(raw, "n_layer"),
            num_attention_heads=heads,
            num_key_value_heads=heads,
            head_dim=h // heads,
            vocab_size=_need(raw, "vocab_size"),
            max_position_embeddings=_need(raw, "n_positions"),
            attention_bias=True,
            mlp_bias=True,
        )
    elif mt == "falcon":
        h = _need(raw, "hidden_size")
        heads = _need(raw, "num_attention_heads", "n_head")
        _divisible(mt, h, heads, False)
        new_arch = _bool(raw, "new_decoder_architecture", False)
        if new_arch:
            kv = _need(raw, "num_kv_heads")
        else:
            kv = 1 if _bool(raw, "multi_query", True) else heads
        fields = dict(
            hidden_size=h,
            intermediate_size=_int(raw, "ffn_hidden_size") or 4 * h,
            num_hidden_layers=_need(raw, "num_hidden_layers", "n_layer"),
            num_attention_heads=heads,
            num_key_value_heads=kv,
            head_dim=h // heads,
            vocab_size=_need(raw, "vocab_size"),
            max_position_embeddings=_int(raw, "max_position_embeddings", 2048),
            attention_bias=_bool(raw, "bias", False),
            mlp_bias=_bool(raw, "bias", False),
            parallel_attn=_bool(raw, "parallel_attn", True),
            new_decoder_architecture=new_arch,
        )
    else:
        h = _need(raw, "hidden_size")
        heads = _need(raw, "num_attention_heads")
        head_dim = _int(raw, "head_dim")
        _divisible(mt, h, heads, head_dim is not None)
        fields = dict(
            hidden_size=h,
            intermediate_size=_need(raw, "intermediate_size"),
            num_hidden_layers=_need(raw, "num_hidden_layers"),
            num_attention_heads=heads,
            num_key_value_heads=_int(raw, "num_key_value_heads") or heads,
            head_dim=head_dim or h // heads,
            vocab_size=_need(raw, "vocab_size"),
            max_position_embeddings=_need(raw, "max_position_embeddings"),
            # Qwen2 hard-codes bias=True on q/k/v (modeling_qwen2.Qwen2Attention); others read attention_bias.
            attention_bias=True if mt == "qwen2" else _bool(raw, "attention_bias", False),
            mlp_bias=_bool(raw, "mlp_bias", False),
            num_local_experts=_int(raw, "num_local_experts", 0, minimum=0) if mt == "mixtral" else 0,
            num_experts_per_tok=_int(raw, "num_experts_per_tok", 0, minimum=0) if mt == "mixtral" else 0,
            final_logit_softcapping=_float(raw, "final_logit_softcapping") if mt == "gemma2" else None,
            attn_logit_softcapping=_float(raw, "attn_logit_softcapping") if mt == "gemma2" else None,
        )
    try:
        cfg = ModelConfig(model_type=mt, tie_word_embeddings=tie, **fields)
    except ValidationError as err:
        first = err.errors()[0]
        raise ConfigError(f"config.json field {first['loc'][0]!r}: {first['msg']}") from None
    _check_consistency(cfg)
    return cfg


# --------------------------------------------------------------------------- models


@cache
def _model_index() -> dict[str, Path]:
    """Lower-cased name / alias / hub id -> profile file."""
    index: dict[str, Path] = {}
    for path in sorted((profiles_dir() / "models").glob("*.json")):
        data = _read_json(path)
        for key in [data["name"], data.get("hub_id"), *data.get("aliases", [])]:
            if key:
                index[key.lower()] = path
    return index


def model_names() -> list[str]:
    """Short names of every shipped model profile."""
    return sorted({_read_json(p)["name"] for p in _model_index().values()})


def _profile_from_file(path: Path) -> ModelProfile:
    data = _read_json(path)
    return ModelProfile(
        name=data["name"], hub_id=data.get("hub_id"), source=data["source"], config=normalize_config(data["config"])
    )


def raw_config(name: str) -> dict[str, Any]:
    """The raw ``config.json`` dict behind :func:`load_model` (what the probes build the model from)."""
    return _resolve(name)[1]


def load_model(name: str) -> ModelProfile:
    """Resolve a model name, alias, hub id, local config.json or model folder to a :class:`ModelProfile`.

    Raises:
        PlannerError: unknown name (with the closest matches), malformed config, or offline hub fetch.
    """
    return _resolve(name)[0]


@cache
def _resolve(name: str) -> tuple[ModelProfile, dict[str, Any]]:
    path = _model_index().get(name.lower())
    if path is not None:
        return _profile_from_file(path), _read_json(path)["config"]
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").exists():
            raise ConfigError(f"folder {name!r} has no config.json")
        local = local / "config.json"
        if local.is_dir():
            raise ConfigError(f"{str(local)!r} is a directory, not a config.json file")
    if local.is_file() and (local.suffix == ".json" or local.name == "config.json"):
        raw = _load_json_file(local)
        return ModelProfile(name=str(name), source=str(local.resolve()), config=normalize_config(raw),
                            warnings=tuple(config_warnings(raw))), raw
    if _looks_like_path(name):
        raise ConfigError(f"{name!r} does not exist (a model is a shipped name, a hub id owner/name, "
                          "or a local config.json / model folder)")
    if name.count("/") == 1 and not Path(name).exists():
        if not _REPO_ID.fullmatch(name):
            raise ConfigError(f"{name!r} is not a valid hub repo id (expected owner/name, letters, digits, "
                              "'-', '_' and '.')")
        raw = _fetch_hub_config(name)
        source = f"https://huggingface.co/{name}/blob/main/config.json"
        return ModelProfile(name=name, hub_id=name, source=source, config=normalize_config(raw),
                            warnings=tuple(config_warnings(raw))), raw
    raise unknown("model", name, [p.stem for p in _model_index().values()] + list(_model_index()))


_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
"""huggingface_hub's repo-id rule (``validate_repo_id``): owner/name, no '--' or '..' checked by the hub."""


def _looks_like_path(name: str) -> bool:
    """A name the user meant as a file: ends in .json, starts with ./ ../ / ~, or has more than one '/'."""
    return (name.endswith(".json") or name.startswith(("./", "../", "/", "~", ".\\")) or name.count("/") > 1
            or name in {".", ".."})


def _load_json_file(path: Path) -> dict[str, Any]:
    try:
        return read_json_file(path, "config")
    except PlannerError as err:
        raise ConfigError(str(err)) from None


def _fetch_hub_config(repo_id: str) -> dict[str, Any]:
    """``config.json`` of a hub repo: the huggingface_hub cache first, then one download (only that file;
    never remote code). Offline (``HF_HUB_OFFLINE=1`` or the hub unreachable) fails at once with one line
    instead of huggingface_hub's retry loop."""
    import logging
    import os

    _check_endpoint()  # huggingface_hub parses $HF_ENDPOINT at import
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover - huggingface_hub is a base dependency
        raise OfflineError(f"model {repo_id!r} is not a shipped profile and huggingface_hub is not installed") from None
    hint = f"pass a local config.json or one of: {', '.join(model_names()[:6])}, ..."
    try:
        return _load_json_file(Path(hf_hub_download(repo_id=repo_id, filename="config.json", local_files_only=True)))
    except Exception:  # not cached (or not a valid repo id): go online below
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"} or not _hub_reachable():
        raise OfflineError(f"could not fetch config.json for {repo_id!r}: the hub is not reachable (offline); {hint}")
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        path = hf_hub_download(repo_id=repo_id, filename="config.json")
    except Exception as err:  # 404, gated, auth, network: one line
        reason = {
            "RepositoryNotFoundError": "no such repository (or it is private)",
            "GatedRepoError": "the repository is gated: log in with `hf auth login` after accepting its terms",
            "EntryNotFoundError": "the repository has no config.json",
        }.get(type(err).__name__, type(err).__name__)
        raise OfflineError(f"could not fetch config.json for {repo_id!r} from the hub ({reason}); {hint}") from None
    finally:
        hub_logger.setLevel(level)
    return _load_json_file(Path(path))


def _check_endpoint() -> None:
    """``$HF_ENDPOINT`` (read by huggingface_hub) must be an http(s) URL with a valid port."""
    import os
    from urllib.parse import urlparse

    value = os.environ.get("HF_ENDPOINT")
    if value is None:
        return
    try:
        url = urlparse(value)
        url.port  # noqa: B018 - raises ValueError on a port out of range
    except ValueError as err:
        raise OfflineError(f"HF_ENDPOINT={value!r} is not a valid URL ({err})") from None
    if url.scheme not in {"http", "https"} or not url.hostname:
        raise OfflineError(f"HF_ENDPOINT={value!r} is not an http(s) URL")


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the hub endpoint accepts a TCP connection (DNS failure or no route -> False, quickly)."""
    import os
    import socket
    from urllib.parse import urlparse

    try:
        url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
        port = url.port or 443
    except ValueError:  # HF_ENDPOINT with a bad port: cannot be reached
        return False
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout_s):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- GPUs


@cache
def _gpus() -> tuple[GpuProfile, ...]:
    return tuple(GpuProfile(**g) for g in _read_json(profiles_dir() / "gpus.json")["gpus"])


@cache
def _gpu_index() -> dict[str, GpuProfile]:
    index: dict[str, GpuProfile] = {}
    for gpu in _gpus():
        for key in (gpu.name, *gpu.aliases):
            index[_gpu_key(key)] = gpu
    return index


def _gpu_key(name: str) -> str:
    return name.lower().replace(" ", "-").replace("_", "-")


def gpu_profiles() -> tuple[GpuProfile, ...]:
    """Every shipped GPU profile."""
    return _gpus()


def load_gpu(name: str) -> GpuProfile:
    """Resolve a GPU name or alias (``4090``, ``a100-80gb``, ``H100 SXM``).

    Raises:
        PlannerError: unknown GPU, naming the closest matches.
    """
    key = _gpu_key(name)
    for candidate in (key, key.removeprefix("nvidia-"), key.removeprefix("nvidia-geforce-")):
        if candidate in _gpu_index():
            return _gpu_index()[candidate]
    raise unknown("GPU", name, [g.name for g in _gpus()] + [a for g in _gpus() for a in g.aliases])


def match_gpu(device_name: str, total_memory_gib: float) -> GpuProfile | None:
    """The shipped profile for a detected device name (e.g. ``NVIDIA H100 80GB HBM3``), or None."""
    key = _gpu_key(device_name)
    for candidate in (key, key.removeprefix("nvidia-"), key.removeprefix("nvidia-geforce-"), key.removeprefix("tesla-")):
        if candidate in _gpu_index():
            return _gpu_index()[candidate]
    best: GpuProfile | None = None
    name = device_name.lower()
    for gpu in _gpus():
        tokens = [t for t in gpu.name.lower().replace("rtx ", "").split() if t not in {"gb"}]
        if all(t.replace("gb", "") in name for t in tokens):
            if best is None or abs(gpu.memory_gib - total_memory_gib) < abs(best.memory_gib - total_memory_gib):
                best = gpu
    return best
