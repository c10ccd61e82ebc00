"""The stack model: version ranges, --versions parsing, detection, resolution, its memory strategies, the CLI."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from planner.catalog import profiles_dir
from planner.cli import cli
from planner.errors import PlannerError
from planner.estimator.core import estimate
from planner.specs import Method, TrainSpec
from planner.stack.resolve import framework_names, newest_versions, resolve_stack
from planner.stack.stack import DEFAULT_STACK, LossKind, load_stack
from planner.stack.versions import installed_versions, parse_versions, release, satisfies

LEGACY = {"transformers": "4.44.2", "peft": "0.11.1", "bitsandbytes": "0.43.3", "torch": "2.4.1", "accelerate": "0.33.0"}


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.mark.parametrize(("version", "spec", "ok"), [
    ("4.44.2", ">=4.41,<4.47", True), ("4.47.0", ">=4.41,<4.47", False), ("5.24.0", ">=5.0", True),
    ("2.13.0+cpu", ">=2.5", True), ("1.0.0rc1", "<1.0.1", True), ("0.11.1", "<0.12", True), ("3.0", "", True),
])
def test_satisfies(version, spec, ok):
    assert satisfies(version, spec) is ok


def test_release():
    assert release("2.13.0+cpu") == (2, 13, 0)
    assert release("1.0.0rc1") == (1, 0, 0)


def test_parse_versions():
    assert parse_versions("transformers=4.44.2, peft==0.12.0") == {"transformers": "4.44.2", "peft": "0.12.0"}
    for bad, match in [("transformers", "LIB=VERSION"), ("transfomers=4.4", "did you mean transformers"),
                       ("transformers=x", "not a version"), ("", "empty"), ("peft=0.1,peft=0.2", "twice")]:
        with pytest.raises(PlannerError, match=match):
            parse_versions(bad)


def test_detection_reads_metadata_fast_without_imports():
    start = time.perf_counter()
    found = installed_versions()
    assert time.perf_counter() - start < 0.05
    assert "click" not in found  # only the stack's libraries; tests/test_imports.py checks planner imports none


def test_behaviour_data_has_sources_and_ranges():
    data = json.loads((profiles_dir() / "stacks" / "behaviours.json").read_text())
    for name, variants in data["behaviours"].items():
        assert variants, name
        for v in variants:
            assert v["source"] and set(v) == {"when", "value", "source"}, name


def test_trainer_at_default_versions_is_the_default_profile():
    default = load_stack(DEFAULT_STACK)
    res = resolve_stack("trainer", dict(default.versions), detect=False)
    assert res.stack is default and not res.warnings


def test_trainer_newest_reproduces_default_numbers():
    """``--framework trainer`` at the newest versions is today's stack: golden numbers unchanged."""
    stack = resolve_stack("trainer", detect=False).stack
    for method in Method:
        train = TrainSpec(method=method)
        assert estimate("llama-3-8b", train, stack=stack).peak_gib == estimate("llama-3-8b", train).peak_gib


def test_legacy_behaviours():
    b = resolve_stack("trainer", LEGACY, detect=False).stack.behaviours
    assert b["adapter_dtype"].value == "base" and b["loss"].value == "full_logits_upcast_contiguous"
    assert b["moe_experts"].value == "per_expert_linear" and b["checkpointing"].value == "reentrant"
    assert b["default_optimizer"].value == "adamw_torch_foreach" and b["sdpa_kv"].value == "repeat_kv"
    assert "peft v0.11.1" in b["adapter_dtype"].source


@pytest.mark.parametrize(("versions", "loss"), [
    (None, LossKind.FUSED_HEAD), ({"trl": "1.10.0"}, LossKind.CHUNKED_256),
    # TRL < 0.15 has no compute_loss: transformers' own loss (4.44: the model upcasts, then the shifted copy).
    ({"trl": "0.11.4", "transformers": "4.44.2"}, LossKind.FULL_LOGITS_UPCAST_CONTIGUOUS),
    ({"trl": "0.11.4", "transformers": "4.47.1"}, LossKind.FULL_LOGITS_CONTIGUOUS),
    ({"trl": "0.11.4", "transformers": "4.51.3"}, LossKind.FULL_LOGITS_FP32),
    # TRL 0.15-1.7 keeps a shifted .contiguous() copy for its token-accuracy metric.
    ({"trl": "0.16.0", "transformers": "4.51.3"}, LossKind.FULL_LOGITS_CONTIGUOUS),
])
def test_trl_loss_by_version(versions, loss):
    assert resolve_stack("trl", versions, detect=False).stack.loss is loss


def test_trl_current_llama3_8b():
    """Issue 8's analytical figures for Llama-3-8B r=16 all-linear, micro-batch 1, seq 2048 under current TRL:
    QLoRA about 7.0 GiB (bf16 adapters, no kbit-prepare, fused head), LoRA about 16.8. (The TRL trace puts QLoRA
    at 6.70 GiB, the estimate at 6.88: tests/test_trace_trl.py.)"""
    stack = resolve_stack("trl", detect=False).stack
    qlora = estimate("llama-3-8b", TrainSpec(method=Method.QLORA, kbit_prepare=False), stack=stack)
    lora = estimate("llama-3-8b", TrainSpec(method=Method.LORA), stack=stack)
    assert qlora.peak_gib.allocated == pytest.approx(7.0, abs=0.15)
    assert lora.peak_gib.allocated == pytest.approx(16.8, abs=0.1)
    assert qlora.memory_gib.adapters == pytest.approx(lora.memory_gib.adapters / 2)


def test_legacy_mixtral_experts_quantized():
    legacy = resolve_stack("trainer", LEGACY, detect=False).stack
    old = estimate("mixtral-8x7b", TrainSpec(method=Method.QLORA), stack=legacy).memory_gib.weights
    new = estimate("mixtral-8x7b", TrainSpec(method=Method.QLORA)).memory_gib.weights
    assert old == pytest.approx(23.3, abs=0.5) and new == pytest.approx(170, abs=1)


def test_peft_below_012_lora_adapters_bf16():
    legacy = resolve_stack("trainer", LEGACY, detect=False).stack
    old = estimate("llama-3-8b", TrainSpec(method=Method.LORA), stack=legacy).memory_gib.adapters
    assert old == pytest.approx(estimate("llama-3-8b", TrainSpec()).memory_gib.adapters / 2)


def test_out_of_range_version_warns_and_uses_nearest():
    res = resolve_stack("trainer", {"transformers": "6.2.0"}, detect=False)
    assert any("newer than loraplan models" in w for w in res.warnings)
    assert res.stack.behaviours["moe_experts"].value == "fused_3d_unquantized"


def test_every_framework_resolves():
    for fw in framework_names():
        assert resolve_stack(fw, detect=False).stack.framework == fw
    assert set(newest_versions()) >= {"torch", "transformers", "peft", "bitsandbytes", "trl"}


def test_cli_stack_json_and_first_line():
    out = run("estimate", "llama-3-8b", "--framework", "trl", "--json")
    assert out.exit_code == 0, out.output
    stack = json.loads(out.output)["stack"]
    assert stack["framework"] == "trl" and isinstance(stack["detected"], bool)
    assert stack["versions"]["trl"] and {b["name"] for b in stack["behaviours"]} >= {"loss", "adapter_dtype"}
    table = run("estimate", "llama-3-8b", "--framework", "trl", "--method", "qlora")
    assert table.exit_code == 0 and table.output.splitlines()[0].startswith("stack: trl ")
    assert "changes the device peak by -4" in " ".join(table.output.split())


def test_cli_kbit_prepare_stays_an_override():
    implied = json.loads(run("estimate", "llama-3-8b", "--framework", "trl", "--method", "qlora", "--json").output)
    forced = json.loads(run("estimate", "llama-3-8b", "--framework", "trl", "--method", "qlora", "--kbit-prepare",
                            "--json").output)
    assert implied["train"]["kbit_prepare"] is False and forced["train"]["kbit_prepare"] is True


@pytest.mark.parametrize("args", [
    ("--framework", "trll"), ("--versions", "transformers"), ("--versions", "transfomers=4.44"),
    ("--framework", "unsloth", "--liger"), ("--framework", "trainer", "--loss", "fused"),
    ("--versions", "peft=abc"), ("--loss", "nope"),
])
def test_cli_bad_stack_input(args):
    out = run("estimate", "llama-3-8b", *args)
    assert out.exit_code == 2, out.output
    assert "Traceback" not in out.output and len(out.output.strip().splitlines()) <= 3


def test_sweep_models_the_stack():
    trainer = json.loads(run("sweep", "llama-3-8b", "--method", "qlora", "--seq-len", "1024,2048", "--framework",
                             "trainer", "--json").output)
    trl = json.loads(run("sweep", "llama-3-8b", "--method", "qlora", "--seq-len", "1024,2048", "--framework", "trl",
                         "--json").output)
    assert json.dumps(trl) != json.dumps(trainer)
    table = run("sweep", "llama-3-8b", "--seq-len", "1024,2048", "--framework", "trl")
    assert table.exit_code == 0 and table.output.startswith("stack: trl ")


def test_transformers4_moe_adapters_are_per_expert_loras():
    """PEFT 0.12 on transformers 4.44 Mixtral: a plain rank-r LoRA on each expert's w1/w3/w2 (the count the
    4.44 trace's PEFT model has: tests/test_trace_transformers4.py), not the stacked ParamWrapper factors."""
    from planner.catalog import normalize_config, raw_config
    from planner.memory.context import build_context
    from planner.memory.optimizer import trainable_tensors

    config = normalize_config(raw_config("mixtral-8x7b"))
    v4 = resolve_stack("trainer", {"transformers": "4.44.2", "peft": "0.12.0"}, detect=False).stack
    ctx = build_context(config, TrainSpec(method=Method.LORA, rank=16), v4)
    assert ctx.trainable_params == 242_225_152
    assert sum(t.numel * t.count for t in trainable_tensors(ctx)) == ctx.trainable_params
    assert estimate("mixtral-8x7b", TrainSpec(method=Method.LORA), stack=v4).params.trainable == 242_225_152


def test_foreach_adamw_transient_only_before_transformers_4_55():
    from planner.catalog import normalize_config, raw_config
    from planner.memory.context import build_context
    from planner.memory.optimizer import optimizer_memory

    config = normalize_config(raw_config("llama-3-8b"))
    train = TrainSpec(method=Method.FULL)
    old = build_context(config, train, resolve_stack("trainer", {"transformers": "4.44.2"}, detect=False).stack)
    new = build_context(config, train, resolve_stack("trainer", detect=False).stack)
    assert optimizer_memory(old).step_transient_bytes == old.trainable_params * 2.0  # one bf16 exp_avg_sq copy
    assert optimizer_memory(new).step_transient_bytes == 0.0


def test_litgpt_dequantizes_from_an_fp16_quant_state():
    """lightning's BitsandbytesPrecision quantizes from fp16, so under bf16-true each dequantized 4-bit weight
    has its bf16 cast beside it (4 bytes per weight); transformers quantizes from the loaded dtype (2 bytes)."""
    from planner.catalog import normalize_config, raw_config
    from planner.memory.context import build_context
    from planner.memory.states import lm_head_dequant_transient_bytes, qlora_dequant_transient_bytes
    from planner.specs import DType

    config = normalize_config(raw_config("llama-3-8b"))
    litgpt = resolve_stack("litgpt", detect=False).stack
    trainer = resolve_stack("trainer", detect=False).stack
    assert litgpt.value("quant_state_dtype") == "fp16" and trainer.value("quant_state_dtype") == "load_dtype"
    qlora = TrainSpec(method=Method.QLORA)
    bf16 = build_context(config, qlora, litgpt)
    assert lm_head_dequant_transient_bytes(bf16) == 128_256 * 4096 * 4.0
    assert qlora_dequant_transient_bytes(bf16) == 4096 * 14_336 * 4.0
    fp16 = build_context(config, qlora.model_copy(update={"dtype": DType.FP16}), litgpt)
    assert lm_head_dequant_transient_bytes(fp16) == 128_256 * 4096 * 2.0  # no cast: already fp16
    assert qlora_dequant_transient_bytes(build_context(config, qlora, trainer)) == 4096 * 14_336 * 2.0


def test_litgpt_repeats_gqa_kv_before_sdpa():
    from planner.catalog import normalize_config, raw_config
    from planner.memory.context import build_context

    config = normalize_config(raw_config("llama-3-8b"))
    train = TrainSpec(method=Method.LORA)
    assert build_context(config, train, resolve_stack("litgpt", detect=False).stack).sdpa_repeats_kv
    assert not build_context(config, train, resolve_stack("trainer", detect=False).stack).sdpa_repeats_kv


@pytest.mark.parametrize(("trl", "kbit", "stream", "other", "embedding", "adapter"), [
    ("1.16.0", "cast_trainable_bf16", 2.0, 2.0, 2.0, 2.0),
    ("0.26.0", "cast_trainable_bf16", 2.0, 2.0, 2.0, 2.0),
    ("0.25.1", "upcast_norms_fp32", 4.0, 2.0, 2.0, 4.0),
    ("0.11.4", "upcast_fp32_head_bf16", 4.0, 4.0, 2.0, 4.0),
    ("0.8.6", "upcast_fp32_head_adapters_bf16", 4.0, 4.0, 2.0, 2.0),
])
def test_trl_qlora_casts_by_version(trl, kbit, stream, other, embedding, adapter):
    """What SFTTrainer does to a 4-bit model's other params, read at each TRL release (frameworks.json)."""
    from planner.catalog import normalize_config, raw_config
    from planner.memory.context import build_context

    stack = resolve_stack("trl", {"trl": trl, "transformers": "4.44.2", "peft": "0.12.0"}, detect=False).stack
    assert stack.value("kbit_prepare") == kbit
    train = TrainSpec(method=Method.QLORA, kbit_prepare=stack.kbit_prepare.calls_prepare)
    d = build_context(normalize_config(raw_config("llama-3-8b")), train, stack).d
    assert (d.stream, d.other_param, d.embedding, d.trainable) == (stream, other, embedding, adapter)


def test_trl_head_recast_saves_the_embedding_and_lm_head_upcast():
    """TRL 0.9-0.24 put the fp32-upcast embeddings and lm_head back in bf16: 2 bytes each less than PEFT's
    prepare alone (the plain Trainer with --kbit-prepare)."""
    from planner.catalog import normalize_config, raw_config
    from planner.memory.context import build_context
    from planner.memory.states import weight_bytes

    config = normalize_config(raw_config("llama-3-8b"))
    versions = {"transformers": "4.44.2", "peft": "0.12.0", "trl": "0.11.4"}
    train = TrainSpec(method=Method.QLORA, kbit_prepare=True)
    trl = build_context(config, train, resolve_stack("trl", versions, detect=False).stack)
    trainer = build_context(config, train, resolve_stack("trainer", versions, detect=False).stack)
    assert weight_bytes(trainer) - weight_bytes(trl) == 2 * 128_256 * 4096 * 2.0


def test_unsloth_offloads_checkpointed_layer_inputs():
    """Unsloth's checkpointer keeps every layer input above 2 MiB in pinned host memory and reloads one at a
    time into a single GPU buffer (unsloth_zoo gradient_checkpointing.py UnslothCheckpointFunction)."""
    from planner.catalog import normalize_config, raw_config
    from planner.memory.activations import activations
    from planner.memory.context import build_context

    config = normalize_config(raw_config("llama-3-8b"))
    unsloth = resolve_stack("unsloth", detect=False).stack
    assert unsloth.value("checkpointing") == "offloaded"
    long = activations(build_context(config, TrainSpec(method=Method.QLORA, seq_len=16384, kbit_prepare=False), unsloth))
    one = 16384 * 4096 * 2.0
    assert long.checkpoint_bytes == one and long.offloaded_layers == 31
    assert long.layers_saved(32, True) == one and long.host_checkpoint_bytes == 31 * one
    short = activations(build_context(config, TrainSpec(method=Method.QLORA, seq_len=128, kbit_prepare=False), unsloth))
    assert short.offloaded_layers == 0  # 1 MiB inputs stay on the GPU (MINIMUM_SIZE)
    trl = activations(build_context(config, TrainSpec(method=Method.QLORA, seq_len=16384, kbit_prepare=False),
                                    resolve_stack("trl", detect=False).stack))
    assert trl.offloaded_layers == 0 and trl.layers_saved(32, True) == 32 * one
    out = run("estimate", "llama-3-8b", "--framework", "unsloth", "--seq-len", "16384", "--method", "qlora")
    assert out.exit_code == 0 and "offloads 31 layers' checkpointed inputs (3.88 GiB)" in " ".join(out.output.split())


def test_traced_label_is_per_method():
    """transformers 4.41 + PEFT 0.10 is traced for LoRA and full only (its 4-bit integration needs bitsandbytes
    to import): a QLoRA estimate there says it is modelled, not traced."""
    stack = resolve_stack("trainer", {"transformers": "4.41.2", "peft": "0.10.0"}, detect=False).stack
    assert stack.traced and stack.traced_for("lora") and not stack.traced_for("qlora")
    versions = ("--framework", "trainer", "--versions", "transformers=4.41.2,peft=0.10.0")
    qlora = " ".join(run("estimate", "llama-3-8b", *versions, "--method", "qlora").output.split())
    lora = " ".join(run("estimate", "llama-3-8b", *versions, "--method", "lora").output.split())
    assert "qlora on this trainer stack is modelled from the libraries' sources, not traced" in qlora
    assert "not traced" not in lora


def test_gemma2_softcapped_attention_is_eager_where_sdpa_is_refused() -> None:
    """transformers >= 5.21 refuses SDPA for Gemma 2 (softcapping): --attn sdpa is modelled as eager and says so,
    and the recommend snippet asks for eager; transformers 4.44 runs SDPA (softcapping dropped)."""
    from planner.estimator import estimate
    from planner.specs import Attn, TrainSpec
    from planner.stack.resolve import resolve_stack

    spec = TrainSpec(seq_len=1024, grad_ckpt=False)
    new = estimate("gemma-2-2b", spec)
    old = estimate("gemma-2-2b", spec, stack=resolve_stack(
        "trainer", {"transformers": "4.44.2", "peft": "0.12.0"}, detect=False).stack)
    eager = estimate("gemma-2-2b", spec.model_copy(update={"attn": Attn.EAGER}))
    assert new.train.attn is Attn.EAGER and any("cannot run on SDPA" in w for w in new.warnings)
    assert new.peak_gib == eager.peak_gib
    assert old.train.attn is Attn.SDPA and not any("cannot run on SDPA" in w for w in old.warnings)
    assert estimate("llama-3.2-1b", spec).train.attn is Attn.SDPA  # no softcapping, nothing changes


def test_gemma2_recommend_snippet_asks_for_eager() -> None:
    from planner.recommender import recommend

    rec = recommend("gemma-2-2b", "4090")
    assert rec.plans and 'attn_implementation="eager"' in rec.plans[0].code.python
    assert 'attn_implementation="sdpa"' in recommend("llama-3.2-1b", "4090").plans[0].code.python


def test_torchtune_optimizer_in_backward_holds_one_gradient() -> None:
    """torchtune's optimizer_in_bwd steps each parameter in its gradient hook: the ledger holds the largest single
    gradient in backward and none in an optimizer phase; other stacks refuse it (exit 2 from the CLI)."""
    from click.testing import CliRunner

    from planner.cli import cli
    from planner.errors import PlannerError
    from planner.estimator import estimate
    from planner.memory.ledger import Phase
    from planner.specs import GIB, Method, Optim, TrainSpec
    from planner.stack.resolve import resolve_stack

    tune = resolve_stack("torchtune", detect=False).stack
    spec = TrainSpec(method=Method.FULL, seq_len=512, micro_batch=2, optim=Optim.PAGED_ADAMW)
    plain = estimate("llama-2-7b", spec, stack=tune)
    fused = estimate("llama-2-7b", spec.model_copy(update={"optimizer_in_backward": True}), stack=tune)
    grads = next(t for t in fused._ledger.terms if t.name == "gradients")
    assert max(grads.bytes_by_phase.values()) == pytest.approx(32000 * 4096 * 2)  # the embedding / lm_head
    assert Phase.OPTIMIZER not in grads.bytes_by_phase
    assert plain.peak_gib.allocated - fused.peak_gib.allocated > 11.5  # ~12.5 GiB of bf16 gradients
    assert fused.peak_gib.allocated > 12.55 * 2**30 / GIB  # the weights stay
    with pytest.raises(PlannerError, match="torchtune"):
        estimate("llama-2-7b", spec.model_copy(update={"optimizer_in_backward": True}))
    for args in (["--framework", "torchtune", "--optimizer-in-backward"],  # LoRA
                 ["--framework", "torchtune", "--method", "full", "--optimizer-in-backward", "--grad-accum", "2"],
                 ["--framework", "trl", "--method", "full", "--optimizer-in-backward"]):
        res = CliRunner().invoke(cli, ["estimate", "llama-2-7b", *args])
        assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
