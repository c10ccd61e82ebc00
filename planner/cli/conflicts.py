"""Flags that the chosen method would ignore, or that contradict each other: a usage error (exit 2).

"Explicitly given" is click's ``ctx.get_parameter_source`` (command line or environment, not the default),
so ``--method full`` alone is fine while ``--method full --rank 8`` says why ``--rank`` has no effect
instead of echoing it in the JSON ``train`` block as if it had been used.
"""

from __future__ import annotations

from typing import Any

import click
from click.core import ParameterSource

_LORA_ONLY = ("rank", "alpha", "targets", "lora_dropout", "dora")
_QLORA_ONLY = ("quant_bits", "double_quant", "kbit_prepare")
_GIVEN = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def given(ctx: click.Context, name: str) -> bool:
    """Whether option ``name`` (its Python name) was set by the user rather than defaulted."""
    return ctx.get_parameter_source(name) in _GIVEN


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_train_flags(values: dict[str, Any], ctx: click.Context | None = None) -> None:
    """Raise a :class:`click.UsageError` for a flag the method ignores or flags that conflict.

    Args:
        values: the parsed options of :func:`planner.cli.options.model_options`.
        ctx: the click context (default: the current one; none outside click: nothing to check).
    """
    ctx = ctx or click.get_current_context(silent=True)
    if ctx is None:
        return
    method = str(values.get("method", "lora")).lower()
    present = [n for n in ctx.params if given(ctx, n)]
    if method == "full":
        ignored = [n for n in _LORA_ONLY if n in present]
        if ignored:
            raise click.UsageError(f"{_flag(ignored[0])} has no effect with --method full (no adapters are trained)")
    if method != "qlora":
        ignored = [n for n in _QLORA_ONLY if n in present]
        if ignored:
            raise click.UsageError(f"{_flag(ignored[0])} applies only to --method qlora (got --method {method})")
    elif values.get("fp32_master") and "fp32_master" in present:
        raise click.UsageError("--fp32-master has no effect with --method qlora (the base weights are quantized; "
                               "use --dtype for the compute dtype)")
    if values.get("optimizer_in_backward") and method != "full":
        raise click.UsageError(f"--optimizer-in-backward applies only to --method full (torchtune's full recipes' "
                               f"optimizer_in_bwd), not --method {method}")
    if values.get("optimizer_in_backward") and (values.get("grad_accum") or 1) > 1:
        raise click.UsageError("--optimizer-in-backward cannot accumulate gradients: torchtune raises for "
                               "gradient_accumulation_steps > 1 with optimizer_in_bwd")
    gpu = values.get("gpu", ctx.params.get("gpu"))
    if gpu is not None and not str(gpu).strip():
        raise click.UsageError("--gpu is empty; give a GPU name such as 4090 or a100-80gb")
