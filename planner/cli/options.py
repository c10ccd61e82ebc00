"""Click options shared by ``estimate``, ``probe``, ``recommend`` and ``instances``.

One definition of each training option; :func:`train_spec` turns the parsed values into a
:class:`~planner.specs.TrainSpec`. No rendering here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from planner.inputs import limit
from planner.specs import Attn, DType, Method, Optim, TrainSpec

_DEFAULT = TrainSpec()


def _positive_int(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    if value is not None and value <= 0:
        raise click.BadParameter(f"must be a positive integer, got {value}")
    return value


def _positive_float(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and value <= 0:
        raise click.BadParameter(f"must be > 0, got {value}")
    return value


def _choice(enum: type) -> click.Choice:
    return click.Choice([e.value for e in enum], case_sensitive=False)


def method_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--method", type=_choice(Method), default=_DEFAULT.method.value, show_default=True,
                        help="Fine-tuning method.")(f)


def model_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Options that describe one training configuration (``estimate``/``probe``)."""
    options = [
        click.option("--gpu", "gpu", default=None, help="GPU profile name or alias (e.g. 4090, a100-80gb)."),
        method_option,
        click.option("--rank", type=int, default=_DEFAULT.rank, show_default=True, callback=_positive_int,
                     help="LoRA rank r."),
        click.option("--alpha", type=float, default=None, callback=_positive_float,
                     help="LoRA alpha [default: 2 x rank]."),
        click.option("--targets", default="all-linear", show_default=True,
                     help="all-linear | attn | qv | comma-separated module names (q_proj,v_proj)."),
        click.option("--lora-dropout", type=click.FloatRange(0, 1, max_open=True), default=None,
                     help="LoRA dropout (p > 0 stores a mask per adapted module) [default: 0.05; 0 on MoE experts, "
                          "where PEFT allows none]."),
        click.option("--dora/--no-dora", default=False, show_default=True, help="Weight-decomposed LoRA (DoRA)."),
        click.option("--micro-batch", type=int, default=_DEFAULT.micro_batch, show_default=True,
                     callback=_positive_int, help="Sequences per forward pass."),
        click.option("--seq-len", type=int, default=_DEFAULT.seq_len, show_default=True, callback=_positive_int,
                     help="Tokens per sequence."),
        click.option("--grad-accum", type=int, default=_DEFAULT.grad_accum, show_default=True,
                     callback=_positive_int, help="Gradient accumulation steps (>1 keeps gradients through forward)."),
        click.option("--grad-ckpt/--no-grad-ckpt", default=_DEFAULT.grad_ckpt, show_default=True,
                     help="Gradient checkpointing (recompute each decoder layer in backward)."),
        click.option("--optim", type=_choice(Optim), default=_DEFAULT.optim.value, show_default=True,
                     help="Optimizer."),
        click.option("--attn", type=_choice(Attn), default=_DEFAULT.attn.value, show_default=True,
                     help="Attention implementation."),
        click.option("--dtype", type=_choice(DType), default=_DEFAULT.dtype.value, show_default=True,
                     help="Weight/compute dtype."),
        click.option("--fp32-master/--no-fp32-master", default=False, show_default=True,
                     help="LoRA/full: fp32 weights with --dtype autocast (mixed precision) instead of pure --dtype."),
        click.option("--double-quant/--no-double-quant", default=True, show_default=True,
                     help="QLoRA: bitsandbytes double quantization of the NF4 constants."),
        click.option("--kbit-prepare/--no-kbit-prepare", default=True, show_default=True,
                     help="QLoRA: peft.prepare_model_for_kbit_training (fp32 embeddings, lm_head and norms); "
                          "current TRL SFTTrainer skips it (16-bit)."),
        click.option("--optimizer-in-backward/--no-optimizer-in-backward", default=False, show_default=True,
                     help="Full fine-tuning on --framework torchtune: optimizer_in_bwd (each parameter steps in its "
                          "gradient hook; the gradients never all exist)."),
        click.option("--quant-bits", type=click.Choice(["4", "8"]), default="4", show_default=True,
                     help="QLoRA base weights: 4 = NF4 (load_in_4bit), 8 = LLM.int8 (load_in_8bit)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def parse_targets(text: str) -> tuple[str, ...]:
    """``"q_proj, v_proj"`` -> ``("q_proj", "v_proj")``."""
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    if not parts:
        raise click.BadParameter("--targets is empty")
    if "all-linear" in parts and len(parts) > 1:
        raise click.BadParameter("all-linear already adapts every linear layer; give it alone, not with "
                                 f"{', '.join(p for p in parts if p != 'all-linear')}")
    return parts


def train_spec(**values: Any) -> TrainSpec:
    """Build a :class:`TrainSpec` from parsed click values (extra keys are ignored).

    Flags the method would ignore are a usage error (:mod:`planner.cli.conflicts`).
    """
    from planner.cli.conflicts import check_train_flags

    check_train_flags(values)
    rank = values["rank"]
    alpha = values.get("alpha")
    if alpha is None and rank > limit("rank"):  # 2 x a 400-digit rank overflows a float: TrainSpec names rank
        alpha = 1.0
    return TrainSpec(
        method=Method(values["method"]),
        rank=rank,
        alpha=alpha if alpha is not None else 2.0 * rank,
        targets=parse_targets(values["targets"]),
        lora_dropout=values["lora_dropout"],
        dora=values["dora"],
        micro_batch=values["micro_batch"],
        seq_len=values["seq_len"],
        grad_accum=values["grad_accum"],
        grad_ckpt=values["grad_ckpt"],
        optim=Optim(values["optim"]),
        attn=Attn(values["attn"]),
        dtype=DType(values["dtype"]),
        fp32_master=values["fp32_master"],
        double_quant=values["double_quant"],
        quant_bits=int(values.get("quant_bits") or 4),
        kbit_prepare=values.get("kbit_prepare", True),
        optimizer_in_backward=values.get("optimizer_in_backward", False),
    )
