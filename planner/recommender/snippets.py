"""Ready-to-paste Python for a plan: PEFT ``LoraConfig``, bitsandbytes ``BitsAndBytesConfig``, TRL ``SFTConfig``.

Option names follow the stack's library versions (:class:`~planner.stack.snippet_options.SnippetOptions`,
``profiles/stacks/snippets.json``); at the newest modelled ones: transformers 5 ``TrainingArguments``
(``optim`` values of ``OptimizerNames``; ``warmup_steps`` takes a float < 1 as a fraction of the steps,
``warmup_ratio`` was removed), ``from_pretrained(dtype=...)``, TRL ``SFTConfig`` (``max_length``, default
``gradient_checkpointing=True``, ``bf16=True``), PEFT ``LoraConfig`` and transformers ``BitsAndBytesConfig``.
Other frameworks' snippets: :mod:`planner.recommender.snippet_frameworks`.
"""

from __future__ import annotations

from planner.specs import DType, Frozen, Optim
from planner.stack.optimizers import optimizer_info
from planner.stack.snippet_options import SnippetOptions

NEWEST_NAMES = SnippetOptions(sft_max_length="max_length", from_pretrained_dtype="dtype", warmup="warmup_steps",
                              versions={})
"""The option names of the newest releases (what the functions here write unless given others)."""


class Code(Frozen):
    """Snippets for one plan; ``bnb_config`` only for QLoRA, ``lora_config`` not for full fine-tuning."""

    lora_config: str | None
    bnb_config: str | None
    sft_config: str | None
    """TRL ``SFTConfig`` (TRL, Unsloth) or transformers ``TrainingArguments`` (``--framework trainer``)."""
    python: str | None
    """All of it as one script skeleton (model loading included); None for a config-file framework."""
    yaml: str | None = None
    """The framework's config file (axolotl: ``axolotl train config.yml``)."""
    shell: str | None = None
    """The framework's command line (torchtune ``tune run``, litgpt ``finetune_lora``)."""
    framework: str = "trl"
    """Whose API the snippet uses: trl (TRL SFTTrainer), trainer, unsloth, axolotl; or the named framework
    that has none (then ``note`` says why)."""
    versions: dict[str, str] = {}
    """Library versions the option names were chosen for (``profiles/stacks/snippets.json``)."""
    note: str | None = None
    """Why there is no snippet (a framework whose config loraplan cannot write yet)."""


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def _call(name: str, args: list[tuple[str, object, str]]) -> str:
    lines = [f"{name}("]
    for key, value, comment in args:
        text = value if key == "target_modules" and isinstance(value, str) and value.startswith("[") else _fmt(value)
        lines.append(f"    {key}={text},{('  # ' + comment) if comment else ''}")
    lines.append(")")
    return "\n".join(lines)


def lora_config(rank: int, alpha: float, target_modules: str | list[str], dropout: float, use_rslora: bool) -> str:
    targets = target_modules if isinstance(target_modules, str) else "[" + ", ".join(f'"{t}"' for t in target_modules) + "]"
    return _call(
        "LoraConfig",
        [
            ("r", rank, ""),
            ("lora_alpha", int(alpha) if float(alpha).is_integer() else alpha, ""),
            ("target_modules", targets, ""),
            ("lora_dropout", dropout, ""),
            ("use_rslora", use_rslora, ""),
            ("bias", "none", ""),
            ("task_type", "CAUSAL_LM", ""),
        ],
    )


def bnb_config(dtype: DType, double_quant: bool) -> str:
    compute = "torch.bfloat16" if dtype is DType.BF16 else "torch.float16"
    return "\n".join(
        [
            "BitsAndBytesConfig(",
            "    load_in_4bit=True,",
            '    bnb_4bit_quant_type="nf4",',
            f"    bnb_4bit_use_double_quant={double_quant},",
            f"    bnb_4bit_compute_dtype={compute},",
            ")",
        ]
    )


def sft_config(
    *,
    micro_batch: int,
    grad_accum: int,
    grad_ckpt: bool,
    optim: Optim,
    learning_rate: float,
    scheduler: str,
    warmup: float,
    epochs: float,
    dtype: DType,
    max_length: int | None,
    names: SnippetOptions = NEWEST_NAMES,
    call: str = "SFTConfig",
    checkpointing: bool = True,
    world: int = 1,
) -> str:
    """``SFTConfig(...)`` (or ``call``: ``TrainingArguments``) with the option names of ``names``.

    ``max_length`` None leaves out the sequence length (``TrainingArguments`` has none); ``checkpointing`` False
    leaves out the checkpointing keys (Unsloth sets them in ``get_peft_model``). ``world`` > 1 (GPUs): the
    comment says the effective batch is micro-batch x grad-accum x GPUs.
    """
    effective = (f"effective batch {micro_batch} x {grad_accum} x {world} GPUs = {micro_batch * grad_accum * world}"
                 if world > 1 else f"effective batch {micro_batch * grad_accum}")
    args: list[tuple[str, object, str]] = [
        ("output_dir", "out", ""),
        ("per_device_train_batch_size", micro_batch, ""),
        ("gradient_accumulation_steps", grad_accum, effective),
    ]
    if checkpointing:
        args.append(("gradient_checkpointing", grad_ckpt, ""))
    if grad_ckpt and checkpointing:
        args.append(("gradient_checkpointing_kwargs", {"use_reentrant": False}, ""))
    args += [
        ("optim", optimizer_info(optim).trainer_name, ""),  # transformers OptimizerNames
        ("learning_rate", learning_rate, ""),
        ("lr_scheduler_type", scheduler, ""),
        (names.warmup, warmup, "fraction of steps (transformers >= 5; on 4.x: warmup_ratio)"
         if names.warmup == "warmup_steps" else "fraction of steps (transformers < 5)"),
        ("num_train_epochs", epochs, ""),
        ("bf16" if dtype is DType.BF16 else "fp16", True, ""),
    ]
    if max_length is not None:
        args.append((names.sft_max_length, max_length, "sequences are truncated to this"))
    if dtype is not DType.BF16 and call == "SFTConfig":  # TRL's SFTConfig defaults bf16=True; TrainingArguments not
        args.append(("bf16", False, "this GPU has no bf16"))
    return _call(call, args)


def config_lines(bnb: str | None, lora: str | None, args: str) -> list[str]:
    """A blank line, then ``bnb_config = ...``, ``peft_config = ...`` (when given) and ``args = ...``."""
    body = [""]
    if bnb:
        body.append("bnb_config = " + bnb)
    if lora:
        body.append("peft_config = " + lora)
    body.append("args = " + args)
    return body


def script(
    *,
    hub_id: str,
    dtype: DType,
    lora: str | None,
    bnb: str | None,
    sft: str,
    fp32_master: bool = False,
    kbit_prepare: bool = True,
    names: SnippetOptions = NEWEST_NAMES,
    kbit_note: str | None = None,
    attn: str = "sdpa",
) -> str:
    """One script skeleton: configs, model loading, trainer.

    ``fp32_master`` loads fp32 weights (mixed precision under autocast); ``kbit_prepare`` False leaves the
    quantized model as TRL ``SFTTrainer`` does (16-bit embeddings and norms) instead of calling
    ``prepare_model_for_kbit_training``; ``kbit_note`` (a named TRL, whose ``SFTTrainer`` decides) replaces
    either with a comment.
    """
    torch_dtype = weights_dtype(dtype, fp32_master)
    imports = ["import torch", "from transformers import AutoModelForCausalLM" + (", BitsAndBytesConfig" if bnb else "")]
    if lora:
        imports.append("from peft import LoraConfig" + (", prepare_model_for_kbit_training"
                                                         if bnb and kbit_prepare and not kbit_note else ""))
    imports.append("from trl import SFTConfig, SFTTrainer")
    body = config_lines(bnb, lora, sft)
    quant = ", quantization_config=bnb_config" if bnb else ""
    body.append(
        f'model = AutoModelForCausalLM.from_pretrained("{hub_id}", {names.from_pretrained_dtype}={torch_dtype}, '
        f'attn_implementation="{attn}"{quant})'
    )
    if bnb and kbit_note:
        body.append(f"# {kbit_note}")
    elif bnb and kbit_prepare:
        body.append("model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=args.gradient_checkpointing)")
    elif bnb:
        body.append("# no prepare_model_for_kbit_training: embeddings and norms stay 16-bit (what TRL's SFTTrainer does)")
    body.append("dataset = ...  # your training set (see TRL's dataset formats)")
    peft = ", peft_config=peft_config" if lora else ""
    body.append(f"trainer = SFTTrainer(model=model, args=args, train_dataset=dataset{peft})")
    body.append("trainer.train()")
    return "\n".join(imports + body) + "\n"


def weights_dtype(dtype: DType, fp32_master: bool = False) -> str:
    """The ``torch`` dtype the weights load in: fp32 under ``fp32_master``, else the training dtype."""
    return "torch.float32" if fp32_master else ("torch.bfloat16" if dtype is DType.BF16 else "torch.float16")
