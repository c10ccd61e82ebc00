"""``recommend`` / ``instances`` on the user's stack (issue 8): the stack they plan for, and version-correct snippets.

- the JSON ``stack`` object is the estimate's for the same ``--framework`` / ``--versions``;
- the text output's first line names the stack (estimate's stack line);
- every candidate is estimated on that stack;
- snippets compile and use the option names of the stack's versions (``profiles/stacks/snippets.json``):
  TRL ``max_seq_length`` < 0.16 <= ``max_length``, transformers ``torch_dtype`` < 4.56 <= ``dtype``,
  ``warmup_ratio`` < 5 <= float ``warmup_steps``; each framework its own API.
"""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from planner.cli import cli
from planner.recommender import make_request, recommend
from planner.stack.resolve import resolve_stack
from planner.stack.snippet_options import snippet_options

OLD = "trl=0.11.4,transformers=4.44.2"


def _run(*args: str):
    return CliRunner().invoke(cli, list(args))


def _json(*args: str) -> dict:
    res = _run(*args, "--json")
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def _plan(framework: str | None, versions: dict[str, str] | None = None, model: str = "llama-3-8b",
          gpu: str = "4090", **kw: object):
    res = resolve_stack(framework or "trainer", versions, detect=False)
    req = make_request(stack=res.stack, framework=framework, code_versions=versions, **kw)  # type: ignore[arg-type]
    return recommend(model, gpu, request=req)


# --------------------------------------------------------------------------- the stack object and line


@pytest.mark.parametrize("stack_args", [(), ("--framework", "trl", "--versions", OLD), ("--framework", "unsloth")])
def test_stack_json_is_the_estimates(stack_args: tuple[str, ...]) -> None:
    est = _json("estimate", "llama-3-8b", "--gpu", "4090", *stack_args)["stack"]
    rec = _json("recommend", "llama-3-8b", "--gpu", "4090", "--top", "1", *stack_args)
    inst = _json("instances", "llama-3-8b", "--provider", "runpod", *stack_args)
    assert rec["stack"] == est and inst["stack"] == est
    assert set(est) == {"name", "framework", "versions", "detected", "behaviours"}


def test_first_line_names_the_stack() -> None:
    args = ("--framework", "trl", "--versions", OLD)
    first = _run("estimate", "llama-3-8b", "--gpu", "4090", *args).output.splitlines()[0]
    assert first.startswith("stack: trl 0.11.4") and "tf 4.44.2" in first
    assert _run("recommend", "llama-3-8b", "--gpu", "4090", "--no-code", *args).output.splitlines()[0] == first
    assert _run("instances", "llama-3-8b", "--provider", "runpod", *args).output.splitlines()[0] == first


def test_candidates_are_estimated_on_the_stack() -> None:
    """Current TRL fuses lm_head and loss: the same plan peaks lower than on the default (Trainer) stack."""
    old = _plan("trl", None, methods=["lora"]).plans[0]
    shape = ("--method", "lora", "--rank", str(old.rank), "--alpha", f"{old.alpha:g}", "--targets", old.targets,
             "--micro-batch", str(old.micro_batch), "--grad-accum", str(old.grad_accum), "--seq-len", str(old.seq_len),
             "--optim", old.optim.value, "--lora-dropout", f"{old.lora_dropout:g}",
             "--grad-ckpt" if old.grad_ckpt else "--no-grad-ckpt")
    est = _json("estimate", "llama-3-8b", "--gpu", "4090", "--framework", "trl", "--versions", "trl=1.16.0", *shape)
    assert old.peak_gib.device == pytest.approx(est["peak_gib"]["device"], abs=1e-3)  # JSON: 4 decimals
    base = _json("estimate", "llama-3-8b", "--gpu", "4090", "--framework", "trainer", *shape)
    assert est["peak_gib"]["device"] < base["peak_gib"]["device"]


def test_unsloth_qlora_searches_only_its_casts() -> None:
    """Unsloth decides QLoRA's casts (no prepare_model_for_kbit_training): recommend does not offer the upcast."""
    rec = _plan("unsloth", methods=["qlora"])
    assert rec.plans and rec.stack is not None and rec.stack.framework == "unsloth"
    assert all("prepare_model_for_kbit_training" not in p.code.python for p in rec.plans)


# --------------------------------------------------------------------------- version-correct snippets


def test_option_names_follow_the_versions() -> None:
    old = snippet_options({"trl": "0.11.4", "transformers": "4.44.2"})
    assert (old.sft_max_length, old.from_pretrained_dtype, old.warmup) == ("max_seq_length", "torch_dtype",
                                                                          "warmup_ratio")
    new = snippet_options({"trl": "1.16.0", "transformers": "5.24.0"})
    assert (new.sft_max_length, new.from_pretrained_dtype, new.warmup) == ("max_length", "dtype", "warmup_steps")
    edge = snippet_options({"trl": "0.16.0", "transformers": "4.56.0"})
    assert (edge.sft_max_length, edge.from_pretrained_dtype, edge.warmup) == ("max_length", "dtype", "warmup_ratio")
    assert snippet_options({"trl": "0.15.2", "transformers": "4.55.4"}).sft_max_length == "max_seq_length"


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_trl_snippets_per_version(method: str) -> None:
    old = _plan("trl", {"trl": "0.11.4", "transformers": "4.44.2"}, methods=[method]).plans[0].code
    compile(old.python, "<s>", "exec")
    assert "max_seq_length=2048" in old.sft_config and "max_length=" not in old.sft_config
    assert "warmup_ratio=0.03" in old.sft_config and "warmup_steps" not in old.sft_config
    assert "torch_dtype=torch.bfloat16" in old.python and "SFTTrainer(" in old.python
    assert old.framework == "trl" and old.versions["trl"] == "0.11.4"
    new = _plan("trl", {"trl": "1.16.0", "transformers": "5.24.0"}, methods=[method]).plans[0].code
    compile(new.python, "<s>", "exec")
    assert "max_length=2048" in new.sft_config and "max_seq_length" not in new.sft_config
    assert "warmup_steps=0.03" in new.sft_config and " dtype=torch.bfloat16" in new.python
    if method == "qlora":  # the named TRL decides the casts: no explicit prepare call
        assert "prepare_model_for_kbit_training(model" not in old.python + new.python


def test_default_snippet_follows_named_versions() -> None:
    """No --framework: the TRL SFTTrainer snippet, at the versions given."""
    code = _plan(None, {"trl": "0.11.4", "transformers": "4.44.2"}).plans[0].code
    compile(code.python, "<s>", "exec")
    assert "SFTConfig(" in code.python and "max_seq_length=" in code.sft_config and "torch_dtype=" in code.python


@pytest.mark.parametrize(("versions", "dtype_key", "warmup_key"),
                         [({"transformers": "4.44.2"}, "torch_dtype", "warmup_ratio"),
                          ({"transformers": "5.24.0"}, "dtype", "warmup_steps")])
def test_trainer_snippet_is_plain_trainer(versions: dict[str, str], dtype_key: str, warmup_key: str) -> None:
    for method in ("lora", "qlora", "full"):
        rec = _plan("trainer", versions, model="llama-3.2-1b", gpu="a100-80gb", methods=[method])
        code = rec.plans[0].code
        compile(code.python, "<s>", "exec")
        assert "TrainingArguments(" in code.sft_config and "Trainer(model=model" in code.python
        assert "trl" not in code.python and "SFTConfig" not in code.python and "max_length=" not in code.sft_config
        assert f" {dtype_key}=torch." in code.python and f"{warmup_key}=0.03" in code.sft_config
        assert ("get_peft_model(model, peft_config)" in code.python) == (method != "full")


def test_unsloth_snippet_uses_unsloths_api() -> None:
    for method in ("lora", "qlora"):
        code = _plan("unsloth", methods=[method]).plans[0].code
        compile(code.python, "<s>", "exec")
        assert code.python.startswith("from unsloth import FastLanguageModel")
        assert "FastLanguageModel.from_pretrained(" in code.python and "max_seq_length=2048" in code.python
        assert f"load_in_4bit={method == 'qlora'}" in code.python
        assert "FastLanguageModel.get_peft_model(" in code.python and "lora_alpha=" in code.python
        targets = re.search(r"target_modules=(\[.*\])", code.python)
        assert targets and json.loads(targets.group(1)) == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                            "up_proj", "down_proj"]
        assert ('use_gradient_checkpointing="unsloth"' in code.python
                or "use_gradient_checkpointing=False" in code.python)
        assert "SFTTrainer(model=model" in code.python and "LoraConfig" not in code.python


AXOLOTL_KEYS = {"base_model", "load_in_4bit", "adapter", "lora_r", "lora_alpha", "lora_dropout", "lora_target_linear",
                "lora_target_modules", "sequence_len", "micro_batch_size", "gradient_accumulation_steps", "num_epochs",
                "optimizer", "learning_rate", "lr_scheduler", "warmup_ratio", "gradient_checkpointing", "bf16",
                "fp16", "sdp_attention", "output_dir", "datasets"}
"""Keys read from axolotl 0.12.2 src/axolotl/utils/schemas/ (profiles/stacks/snippets.json)."""


@pytest.mark.parametrize(("method", "targets"), [("qlora", None), ("lora", None), ("full", None)])
def test_axolotl_config_keys(method: str, targets: None) -> None:
    yaml = pytest.importorskip("yaml")
    rec = _plan("axolotl", model="llama-3.2-1b", gpu="a100-80gb", methods=[method])
    plan = rec.plans[0]
    code = plan.code
    assert code.python is None and code.yaml is not None and code.framework == "axolotl"
    config = yaml.safe_load(code.yaml)
    assert set(config) <= AXOLOTL_KEYS
    assert config["sequence_len"] == plan.seq_len and config["micro_batch_size"] == plan.micro_batch
    assert config["gradient_accumulation_steps"] == plan.grad_accum
    assert config.get("adapter") == {"qlora": "qlora", "lora": "lora", "full": None}[method]
    assert config.get("load_in_4bit", False) == (method == "qlora")
    if method != "full":
        assert config["lora_r"] == plan.rank and config["lora_target_linear"] is True


TORCHTUNE_KEYS = {"batch_size", "gradient_accumulation_steps", "epochs", "model.lora_rank", "model.lora_alpha",
                  "model.lora_dropout", "model.lora_attn_modules", "model.apply_lora_to_mlp", "tokenizer.max_seq_len",
                  "optimizer.lr", "optimizer._component_", "lr_scheduler.num_warmup_steps",
                  "enable_activation_checkpointing", "dtype"}
"""Override keys present in every torchtune v0.6.1 config loraplan maps (profiles/stacks/snippets.json)."""


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_torchtune_command(method: str) -> None:
    plan = _plan("torchtune", methods=[method], dataset_tokens=2e7).plans[0]
    code = plan.code
    assert code.python is None and code.shell is not None and code.note is None
    assert f"tune run lora_finetune_single_device --config llama3/8B_{method}_single_device" in code.shell
    overrides = dict(re.findall(r'^  "?([\w.]+)=([^ "]+)"? ?\\?$', code.shell, re.M))
    assert set(overrides) <= TORCHTUNE_KEYS and overrides["batch_size"] == str(plan.micro_batch)
    assert overrides["gradient_accumulation_steps"] == str(plan.grad_accum)
    assert overrides["model.lora_rank"] == str(plan.rank) and overrides["tokenizer.max_seq_len"] == str(plan.seq_len)
    assert overrides["enable_activation_checkpointing"] == str(plan.grad_ckpt)


def test_torchtune_without_a_config_says_so() -> None:
    code = _plan("torchtune", model="qwen2.5-7b", methods=["lora"]).plans[0].code
    assert code.shell is None and code.note == "snippet not available for torchtune: loraplan maps no torchtune " \
        "config to qwen2.5-7b"
    res = _run("recommend", "qwen2.5-7b", "--gpu", "4090", "--top", "1", "--framework", "torchtune")
    assert res.exit_code == 0 and "snippet not available" in res.output


def test_litgpt_plans_have_no_checkpointing() -> None:
    """litgpt's single-device finetune_lora cannot checkpoint: only plans without it, and a command for them."""
    rec = _plan("litgpt", model="llama-3.2-1b", gpu="4090")
    assert rec.plans and not any(p.grad_ckpt for p in rec.plans)
    shell = rec.plans[0].code.shell
    assert shell.startswith("litgpt finetune_lora meta-llama/Llama-3.2-1B")
    for flag in ("--precision bf16-true", f"--lora_r {rec.plans[0].rank}", "--train.max_seq_length 2048",
                 f"--train.micro_batch_size {rec.plans[0].micro_batch}", "--train.global_batch_size 16"):
        assert flag in shell
    none = _plan("litgpt", model="gemma-2-9b", gpu="4090")
    assert not none.plans and "no checkpointing: litgpt has none" in none.reason


def test_text_output_shows_the_axolotl_config() -> None:
    res = _run("recommend", "llama-3-8b", "--gpu", "4090", "--top", "1", "--framework", "axolotl")
    assert res.exit_code == 0, res.output
    assert "axolotl config" in res.output and "lora_r: " in res.output


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("command", [("recommend", "llama-3-8b", "--gpu", "4090"), ("instances", "llama-3-8b")])
def test_unknown_framework_is_one_line_exit_2(command: tuple[str, ...]) -> None:
    res = _run(*command, "--framework", "unslot")
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.strip().splitlines() if line]
    assert len(lines) == 1 and "unslot" in lines[0] and "Traceback" not in res.output


def test_api_rejects_unknown_framework() -> None:
    from planner.errors import PlannerError

    with pytest.raises(PlannerError, match="framework"):
        make_request(framework="unslot")
