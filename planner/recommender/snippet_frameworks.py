"""A plan's code for the framework the user runs: TRL ``SFTTrainer``, plain ``transformers.Trainer``, Unsloth,
an axolotl config, a torchtune or litgpt command line; a note where the plan cannot be written for it (a model
without a torchtune config, litgpt with checkpointing, no bf16).

Which snippet a framework gets and the option names at its versions: ``profiles/stacks/snippets.json``
(:mod:`planner.stack.snippet_options`); the option lists were read from the sources cited there.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.recommender import snippets
from planner.specs import DType, Method, TrainSpec
from planner.stack.optimizers import optimizer_info
from planner.stack.snippet_options import SnippetOptions, snippet_kind, snippet_source, torchtune_config
from planner.stack.snippet_options import torchtune_optimizer


@dataclass(frozen=True)
class PlanCode:
    """What a plan's snippet needs besides its :class:`TrainSpec`."""

    hub_id: str
    modules: str | list[str] | None
    """PEFT ``target_modules`` (``"all-linear"`` or names)."""
    explicit_modules: list[str]
    """The same modules by name (for APIs without PEFT's ``all-linear`` preset: Unsloth)."""
    learning_rate: float
    scheduler: str
    warmup: float
    epochs: float
    model: str = ""
    """loraplan model name (torchtune's config is chosen by it)."""
    optimizer_steps: int | None = None
    """Optimizer steps of the job (torchtune's warmup is in steps); None without a dataset size."""
    world: int = 1
    attn_implementation: str = "sdpa"
    """transformers' ``attn_implementation`` for the attention the stack runs (Gemma 2 on transformers >= 5.21:
    eager, which is the only one it accepts with softcapping besides FlashAttention-2)."""
    """GPUs in the plan (multi-GPU: the effective batch is micro-batch x grad-accum x GPUs)."""


def _sft(t: TrainSpec, p: PlanCode, names: SnippetOptions, call: str = "SFTConfig", max_length: bool = True,
         checkpointing: bool = True) -> str:
    return snippets.sft_config(
        micro_batch=t.micro_batch, grad_accum=t.grad_accum, grad_ckpt=t.grad_ckpt, optim=t.optim,
        learning_rate=p.learning_rate, scheduler=p.scheduler, warmup=p.warmup, epochs=p.epochs, dtype=t.dtype,
        max_length=t.seq_len if max_length else None, names=names, call=call, checkpointing=checkpointing,
        world=p.world,
    )


def _lora(t: TrainSpec, modules: str | list[str] | None) -> str | None:
    if t.method is Method.FULL or modules is None:
        return None
    return snippets.lora_config(t.rank, t.alpha, modules, t.lora_dropout, False)


def _bnb(t: TrainSpec) -> str | None:
    return snippets.bnb_config(t.dtype, t.double_quant) if t.method is Method.QLORA else None


def code_for(framework: str | None, t: TrainSpec, p: PlanCode, names: SnippetOptions) -> snippets.Code:
    """The snippet of ``framework`` for plan ``t`` (None: none given, the library API without a stack: the TRL
    ``SFTTrainer`` one)."""
    kind = snippet_kind(framework)
    versions = dict(names.versions)
    if kind is None:
        return snippets.Code(lora_config=None, bnb_config=None, sft_config=None, python=None,
                             framework=str(framework), versions=versions,
                             note=f"snippet not available for {framework}: {snippet_source(framework)}")
    lora, bnb = _lora(t, p.modules), _bnb(t)
    if kind == "trl":
        sft = _sft(t, p, names)
        kbit_note = None
        if framework is not None and bnb:
            kbit_note = ("SFTTrainer calls prepare_model_for_kbit_training itself (TRL < 0.26)" if t.kbit_prepare
                         else "no prepare_model_for_kbit_training: SFTTrainer casts the adapters to bf16 (TRL >= 1.0)")
        python = snippets.script(hub_id=p.hub_id, dtype=t.dtype, lora=lora, bnb=bnb, sft=sft,
                                 attn=p.attn_implementation,
                                 fp32_master=t.fp32_master, kbit_prepare=t.kbit_prepare, names=names,
                                 kbit_note=kbit_note)
        return snippets.Code(lora_config=lora, bnb_config=bnb, sft_config=sft, python=python, framework="trl",
                             versions=versions)
    if kind == "trainer":
        args = _sft(t, p, names, call="TrainingArguments", max_length=False)
        return snippets.Code(lora_config=lora, bnb_config=bnb, sft_config=args, framework="trainer",
                             versions=versions, python=trainer_script(t, p, lora, bnb, args, names))
    if kind == "unsloth":
        sft = _sft(t, p, names, checkpointing=False)
        return snippets.Code(lora_config=None, bnb_config=None, sft_config=sft, framework="unsloth",
                             versions=versions, python=unsloth_script(t, p, sft))
    if kind == "axolotl":
        return snippets.Code(lora_config=None, bnb_config=None, sft_config=None, python=None, framework="axolotl",
                             versions=versions, yaml=axolotl_yaml(t, p))
    shell, why = (torchtune_command(t, p) if kind == "torchtune" else litgpt_command(t, p))
    return snippets.Code(lora_config=None, bnb_config=None, sft_config=None, python=None, framework=kind,
                         versions=versions, shell=shell,
                         note=None if shell else f"snippet not available for {kind}: {why}")


def trainer_script(t: TrainSpec, p: PlanCode, lora: str | None, bnb: str | None, args: str,
                   names: SnippetOptions) -> str:
    """Plain ``transformers.Trainer`` + ``TrainingArguments``: tokenize and collate yourself."""
    imports = ["import torch", "from transformers import AutoModelForCausalLM, AutoTokenizer"
               + (", BitsAndBytesConfig" if bnb else "")
               + ", DataCollatorForLanguageModeling, Trainer, TrainingArguments"]
    if lora:
        imports.append("from peft import LoraConfig, get_peft_model"
                       + (", prepare_model_for_kbit_training" if bnb and t.kbit_prepare else ""))
    body = snippets.config_lines(bnb, lora, args)
    quant = ", quantization_config=bnb_config" if bnb else ""
    body += [
        f'tokenizer = AutoTokenizer.from_pretrained("{p.hub_id}")',
        "tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token",
        f'model = AutoModelForCausalLM.from_pretrained("{p.hub_id}", '
        f'{names.from_pretrained_dtype}={snippets.weights_dtype(t.dtype, t.fp32_master)}, '
        f'attn_implementation="{p.attn_implementation}"{quant})',
    ]
    if bnb and t.kbit_prepare:
        body.append("model = prepare_model_for_kbit_training(model, "
                    "use_gradient_checkpointing=args.gradient_checkpointing)")
    elif bnb:
        body.append("# no prepare_model_for_kbit_training: embeddings and norms stay 16-bit")
    if lora:
        body.append("model = get_peft_model(model, peft_config)")
    body += [
        "dataset = ...  # your training set, tokenized: "
        f'dataset.map(lambda b: tokenizer(b["text"], truncation=True, max_length={t.seq_len}), batched=True)',
        "collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)  # labels = input_ids, padding masked",
        "trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator)",
        "trainer.train()",
    ]
    return "\n".join(imports + body) + "\n"


def _list(names: list[str]) -> str:
    return "[" + ", ".join(f'"{n}"' for n in names) + "]"


def unsloth_script(t: TrainSpec, p: PlanCode, sft: str) -> str:
    """Unsloth ``FastLanguageModel`` (4-bit or 16-bit LoRA, or full fine-tuning), then TRL ``SFTTrainer``."""
    full = t.method is Method.FULL
    lines = [
        "from unsloth import FastLanguageModel  # import unsloth first: it patches transformers and TRL",
        "import torch",
        "from trl import SFTConfig, SFTTrainer",
        "",
        "model, tokenizer = FastLanguageModel.from_pretrained(",
        f'    model_name="{p.hub_id}",',
        f"    max_seq_length={t.seq_len},",
        f"    dtype={snippets.weights_dtype(t.dtype)},",
        f"    load_in_4bit={t.method is Method.QLORA},",
    ]
    if full:
        lines.append("    full_finetuning=True,")
    lines.append(")")
    if not full:
        ckpt = '"unsloth"' if t.grad_ckpt else "False"
        lines += [
            "model = FastLanguageModel.get_peft_model(",
            "    model,",
            f"    r={t.rank},",
            f"    target_modules={_list(p.explicit_modules)},",
            f"    lora_alpha={int(t.alpha) if float(t.alpha).is_integer() else t.alpha},",
            f"    lora_dropout={t.lora_dropout:g},",
            '    bias="none",',
            f"    use_gradient_checkpointing={ckpt},{'  # offloaded checkpoints' if t.grad_ckpt else ''}",
            "    use_rslora=False,",
            ")",
        ]
    lines += [
        "args = " + sft,
        "dataset = ...  # your training set (see TRL's dataset formats)",
        "trainer = SFTTrainer(model=model, args=args, train_dataset=dataset)",
        "trainer.train()",
    ]
    return "\n".join(lines) + "\n"


def _yaml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def axolotl_yaml(t: TrainSpec, p: PlanCode) -> str:
    """An axolotl config (``axolotl train config.yml``) with the plan's settings."""
    rows: list[tuple[str, object]] = [("base_model", p.hub_id)]
    if t.method is Method.QLORA:
        rows += [("load_in_4bit", True), ("adapter", "qlora")]
    elif t.method is Method.LORA:
        rows.append(("adapter", "lora"))
    lines = [f"{k}: {_yaml(v)}" for k, v in rows]
    if t.method is not Method.FULL:
        lines += [f"lora_r: {t.rank}", f"lora_alpha: {_yaml(int(t.alpha) if float(t.alpha).is_integer() else t.alpha)}",
                  f"lora_dropout: {_yaml(float(t.lora_dropout))}"]
        if p.modules == "all-linear":
            lines.append("lora_target_linear: true")
        else:
            lines.append("lora_target_modules:")
            lines += [f"  - {m}" for m in p.explicit_modules]
    half = "bf16" if t.dtype is DType.BF16 else "fp16"
    lines += [
        f"sequence_len: {t.seq_len}",
        f"micro_batch_size: {t.micro_batch}",
        f"gradient_accumulation_steps: {t.grad_accum}  # effective batch {t.micro_batch * t.grad_accum}",
        f"num_epochs: {_yaml(float(p.epochs))}",
        f"optimizer: {optimizer_info(t.optim).trainer_name}",
        f"learning_rate: {_yaml(float(p.learning_rate))}",
        f"lr_scheduler: {p.scheduler}",
        f"warmup_ratio: {_yaml(float(p.warmup))}",
        f"gradient_checkpointing: {_yaml(t.grad_ckpt)}",
        f"{half}: true",
        "sdp_attention: true",
        "output_dir: ./out",
        "datasets:",
        "  - path: your/dataset  # your training set",
        "    type: alpaca  # its prompt format",
    ]
    return "\n".join(lines) + "\n"


_TORCHTUNE_ATTN = {"all-linear": ["q_proj", "k_proj", "v_proj", "output_proj"],
                   "attn": ["q_proj", "k_proj", "v_proj", "output_proj"], "qv": ["q_proj", "v_proj"]}
"""loraplan target presets -> torchtune ``lora_attn_modules`` (``LORA_ATTN_MODULES``); MLP: all-linear only."""


def torchtune_command(t: TrainSpec, p: PlanCode) -> tuple[str | None, str]:
    """``tune run lora_finetune_single_device --config ...`` with the plan as overrides, or (None, why not)."""
    prefix = torchtune_config(p.model)
    target = t.targets[0] if len(t.targets) == 1 else None
    component = torchtune_optimizer(t.optim.value)
    why = ("loraplan maps no torchtune config to " + p.model if prefix is None
           else "full fine-tuning (loraplan writes LoRA/QLoRA recipes only)" if t.method is Method.FULL
           else "torchtune trains in bf16 or fp32; this GPU has no bf16" if t.dtype is not DType.BF16
           else f"targets {', '.join(t.targets)}" if target not in _TORCHTUNE_ATTN
           else f"optimizer {t.optim.value}" if component is None else "")
    if why:
        return None, why
    method = "qlora" if t.method is Method.QLORA else "lora"
    args = [
        f"batch_size={t.micro_batch}", f"gradient_accumulation_steps={t.grad_accum}",
        f"epochs={_yaml(float(p.epochs))}", f"model.lora_rank={t.rank}",
        f"model.lora_alpha={_yaml(float(t.alpha))}", f"model.lora_dropout={_yaml(float(t.lora_dropout))}",
        f'"model.lora_attn_modules=[{",".join(_TORCHTUNE_ATTN[str(target)])}]"',
        f"model.apply_lora_to_mlp={target == 'all-linear'}", f"tokenizer.max_seq_len={t.seq_len}",
        f"optimizer.lr={_yaml(float(p.learning_rate))}",
    ]
    if component != "torch.optim.AdamW":
        args += [f"optimizer._component_={component}", "~optimizer.fused"]
    if p.optimizer_steps is not None:
        args.append(f"lr_scheduler.num_warmup_steps={max(1, round(p.warmup * p.optimizer_steps))}")
    args += [f"enable_activation_checkpointing={t.grad_ckpt}", "dtype=bf16"]
    lines = ["# checkpoint and tokenizer: the config's paths (tune download first), or override",
             "# checkpointer.checkpoint_dir=... tokenizer.path=...",
             f"tune run lora_finetune_single_device --config {prefix}_{method}_single_device \\"]
    lines += [f"  {a} \\" for a in args[:-1]] + [f"  {args[-1]}"]
    return "\n".join(lines) + "\n", ""


def litgpt_command(t: TrainSpec, p: PlanCode) -> tuple[str | None, str]:
    """``litgpt finetune_lora <hub id> ...`` with the plan's flags, or (None, why not)."""
    target = t.targets[0] if len(t.targets) == 1 else None
    why = ("full fine-tuning (loraplan writes finetune_lora only)" if t.method is Method.FULL
           else "finetune_lora has no activation checkpointing; this plan needs it" if t.grad_ckpt
           else "this GPU has no bf16 (loraplan writes bf16-true only)" if t.dtype is not DType.BF16
           else f"targets {', '.join(t.targets)}" if target not in _TORCHTUNE_ATTN
           else f"optimizer {t.optim.value} (loraplan writes AdamW only)" if t.optim.value != "adamw"
           else f"{p.epochs:g} epochs (litgpt takes whole epochs)" if not float(p.epochs).is_integer() else "")
    if why:
        return None, why
    mlp = target == "all-linear"
    flags = [
        "--precision bf16-true",
        *(["--quantize " + ("bnb.nf4-dq" if t.double_quant else "bnb.nf4")] if t.method is Method.QLORA else []),
        f"--lora_r {t.rank}", f"--lora_alpha {int(t.alpha)}", f"--lora_dropout {_yaml(float(t.lora_dropout))}",
        "--lora_query true", f"--lora_key {str(target != 'qv').lower()}", "--lora_value true",
        f"--lora_projection {str(target != 'qv').lower()}", f"--lora_mlp {str(mlp).lower()}", "--lora_head false",
        f"--train.micro_batch_size {t.micro_batch}", f"--train.global_batch_size {t.micro_batch * t.grad_accum}",
        f"--train.max_seq_length {t.seq_len}", f"--train.epochs {int(p.epochs)}",
        "--train.lr_warmup_steps 0", f"--train.lr_warmup_fraction {_yaml(float(p.warmup))}",
        "--optimizer '{\"class_path\": \"torch.optim.AdamW\", \"init_args\": {\"lr\": "
        + _yaml(float(p.learning_rate)) + "}}'",
    ]
    lines = [f"litgpt finetune_lora {p.hub_id} \\"] + [f"  {f} \\" for f in flags[:-1]] + [f"  {flags[-1]}"]
    return "\n".join(lines) + "\n", ""
