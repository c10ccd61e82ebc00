"""Property-based suite (hypothesis) over the library API and the CLI (issue 13).

- Never a traceback: random option strings, random config / calibration / price files (bytes, JSON of any
  shape, fields of any type) end in an answer or one ``error:`` line with exit 2.
- Estimates are finite and non-negative; allocated <= reserved <= device; the device peak does not
  decrease with seq-len or micro-batch.

Examples per test come from the hypothesis profile in ``tests/conftest.py`` (``ci``: 200, derandomized;
``HYPOTHESIS_PROFILE=deep`` for 2000).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from click.testing import CliRunner  # noqa: E402
from hypothesis import assume, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from planner import estimate  # noqa: E402
from planner.calibration import load_calibration  # noqa: E402
from planner.catalog import normalize_config, raw_config  # noqa: E402
from planner.cli import cli  # noqa: E402
from planner.errors import PlannerError  # noqa: E402
from planner.recommender.catalogue import load_instances  # noqa: E402
from planner.specs import Attn, DType, Method, Optim, TrainSpec  # noqa: E402

MODELS = ("llama-3.2-1b", "qwen2.5-0.5b", "gpt2", "mixtral-8x7b", "falcon-7b", "gemma-2-2b")
GPUS = ("4090", "a100-80gb", "t4", "h100")
NUMBERISH = st.one_of(
    st.integers(-10, 10**6).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "1e400", "9" * 400, "", " ", "0", "-1", "1.5", "0x10", "2048"]),
    st.text(max_size=12),
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def _no_traceback(res) -> None:  # type: ignore[no-untyped-def]
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code in (0, 2), res.output
    if res.exit_code == 2:
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error"), res.output


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))


# --------------------------------------------------------------------------- CLI: never a traceback

FLAGS = ("--dora", "--no-dora", "--fp32-master", "--no-double-quant", "--no-kbit-prepare", "--no-grad-ckpt",
         "--explain", "--check")
ESTIMATE_OPTIONS = ("--rank", "--alpha", "--lora-dropout", "--micro-batch", "--seq-len", "--grad-accum",
                    "--gpu", "--targets", "--method", "--optim", "--quant-bits")
RECOMMEND_OPTIONS = ("--dataset-tokens", "--examples", "--avg-tokens", "--seq-len", "--effective-batch",
                     "--epochs", "--headroom", "--top")


@given(opts=st.dictionaries(st.sampled_from(ESTIMATE_OPTIONS), NUMBERISH, max_size=3),
       flags=st.lists(st.sampled_from(FLAGS), max_size=3), model=st.sampled_from(MODELS),
       method=st.sampled_from(["lora", "qlora", "full"]))
def test_estimate_cli_never_tracebacks(opts: dict[str, str], flags: list[str], model: str, method: str) -> None:
    argv = ["estimate", model, "--json", "--method", method, *flags, *[x for kv in opts.items() for x in kv]]
    _no_traceback(CliRunner().invoke(cli, argv))


@given(opts=st.dictionaries(st.sampled_from(RECOMMEND_OPTIONS), NUMBERISH, max_size=3))
def test_recommend_cli_never_tracebacks(opts: dict[str, str]) -> None:
    argv = ["recommend", "qwen2.5-0.5b", "--gpu", "4090", "--json", *[x for kv in opts.items() for x in kv]]
    _no_traceback(CliRunner().invoke(cli, argv))


@given(provider=st.text(max_size=10), price=NUMBERISH)
def test_instances_cli_never_tracebacks(provider: str, price: str) -> None:
    argv = ["instances", "qwen2.5-0.5b", "--json", "--provider", provider, "--max-price-per-hour", price]
    _no_traceback(CliRunner().invoke(cli, argv))


# --------------------------------------------------------------------------- files


BASE = raw_config("llama-3.2-1b")
FIELDS = sorted(BASE) + ["head_dim", "num_local_experts", "num_experts_per_tok", "auto_map"]


@given(changes=st.dictionaries(st.sampled_from(FIELDS), JSON, min_size=1, max_size=3),
       model_type=st.sampled_from(["llama", "mixtral", "gpt2", "falcon", "gemma2", "qwen2"]))
def test_random_config_is_an_answer_or_one_error(changes: dict, model_type: str) -> None:
    raw = {**BASE, "model_type": model_type, **changes}
    try:
        cfg = normalize_config(raw)
    except PlannerError as err:
        assert "\n" not in str(err)
        return
    est = estimate_or_error(cfg)
    if est is not None:
        _physical(est)


def estimate_or_error(cfg):  # type: ignore[no-untyped-def]
    from planner.specs import ModelProfile

    try:
        return estimate(ModelProfile(name="x", source="test", config=cfg), TrainSpec(seq_len=256))
    except PlannerError:
        return None


@given(data=st.one_of(st.binary(max_size=64), JSON.map(lambda v: json.dumps(v).encode())))
def test_random_config_file_cli(data: bytes, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("cfg") / "config.json"
    path.write_bytes(data)
    _no_traceback(CliRunner().invoke(cli, ["estimate", str(path)]))


CAL_FIELDS = ("gpu", "profile", "cuda_context_gib", "allocator_reserve_gib", "allocator_reserve_fraction")


@given(cal=st.dictionaries(st.sampled_from(CAL_FIELDS), JSON | st.floats(), max_size=5), wrap=st.booleans())
def test_random_calibration(cal: dict, wrap: bool, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("cal") / "cal.json"
    path.write_text(json.dumps({"calibration": cal} if wrap else cal))
    try:
        got = load_calibration(path)
    except PlannerError:
        return
    assert math.isfinite(got.cuda_context_gib) and got.cuda_context_gib >= 0
    assert 0 <= got.allocator_reserve_fraction <= 1
    _no_traceback(CliRunner().invoke(cli, ["estimate", "qwen2.5-0.5b", "--gpu", "4090", "--calibrate", str(path)]))


PRICE_FIELDS = ("provider", "instance", "gpu", "gpus", "gpu_memory_gib", "price_per_hour", "region", "date", "source")
ENTRY = {"provider": "acme", "instance": "x1", "gpu": "RTX 4090", "gpus": 1, "gpu_memory_gib": 24,
         "price_per_hour": 0.5, "region": "eu", "date": "2026-12-01", "source": "test"}


@given(changes=st.dictionaries(st.sampled_from(PRICE_FIELDS), JSON, max_size=3))
def test_random_price_file(changes: dict, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("price") / "prices.json"
    path.write_text(json.dumps({"instances": [{**ENTRY, **changes}]}))
    try:
        insts = load_instances(path)
    except PlannerError as err:
        assert "\n" not in str(err)
        return
    assert all(math.isfinite(i.price_per_hour) and i.price_per_hour >= 0 for i in insts)


# --------------------------------------------------------------------------- physics of valid estimates

SPECS = st.builds(
    TrainSpec,
    method=st.sampled_from(list(Method)),
    rank=st.integers(1, 256),
    micro_batch=st.integers(1, 16),
    seq_len=st.integers(1, 16384),
    grad_accum=st.integers(1, 8),
    grad_ckpt=st.booleans(),
    optim=st.sampled_from(list(Optim)),
    attn=st.sampled_from(list(Attn)),
    dtype=st.sampled_from(list(DType)),
    dora=st.booleans(),
    fp32_master=st.booleans(),
    kbit_prepare=st.booleans(),
    double_quant=st.booleans(),
    quant_bits=st.sampled_from([4, 8]),
    targets=st.sampled_from([("all-linear",), ("q_proj", "v_proj"), ("attn",), ("qv",)]),
)


def _physical(est) -> None:  # type: ignore[no-untyped-def]
    values = [est.peak_gib.allocated, est.peak_gib.reserved, est.peak_gib.device, *est.memory_gib.model_dump().values()]
    assert all(isinstance(v, float) and math.isfinite(v) and v >= 0 for v in values if v is not None), values
    assert est.peak_gib.allocated <= est.peak_gib.reserved + 1e-9 <= est.peak_gib.device + 2e-9


def _estimate(model: str, spec: TrainSpec, gpu: str | None = None):  # type: ignore[no-untyped-def]
    """The estimate, or the example discarded when the spec is a clear user error (targets gpt2 lacks)."""
    try:
        return estimate(model, spec, gpu=gpu)
    except PlannerError as err:
        assert "\n" not in str(err)
        assume(False)


@given(spec=SPECS, model=st.sampled_from(MODELS), gpu=st.sampled_from(GPUS))
def test_estimate_is_physical(spec: TrainSpec, model: str, gpu: str) -> None:
    est = _estimate(model, spec, gpu)
    _physical(est)
    if est.headroom_gib is not None:
        assert math.isfinite(est.headroom_gib)


@given(spec=SPECS, model=st.sampled_from(MODELS), factor=st.integers(2, 4))
def test_device_peak_grows_with_seq_len_and_micro_batch(spec: TrainSpec, model: str, factor: int) -> None:
    base = _estimate(model, spec).peak_gib.device
    longer = _estimate(model, spec.model_copy(update={"seq_len": spec.seq_len * factor})).peak_gib.device
    wider = _estimate(model, spec.model_copy(update={"micro_batch": spec.micro_batch * factor})).peak_gib.device
    assert longer >= base - 1e-9 and wider >= base - 1e-9, (base, longer, wider)
