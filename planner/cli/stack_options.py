"""``--framework``, ``--versions``, ``--liger``, ``--loss``: the stack options, one decorator for every command.

:func:`stack_options` adds the options; :func:`stack_from_options` resolves them
(:func:`planner.stack.resolve.resolve_stack`; versions from ``--versions``, else package metadata, else the
newest modelled) and :func:`apply_stack` sets what the stack implies on a :class:`TrainSpec` unless the user
named it (``--kbit-prepare/--no-kbit-prepare`` stays an explicit override).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from planner.errors import PlannerError
from planner.specs import TrainSpec
from planner.stack.resolve import DEFAULT_FRAMEWORK, LossChoice, Resolution, framework_names, resolve_stack
from planner.stack.versions import parse_versions

F = TypeVar("F", bound=Callable[..., Any])

STACK_KEYS = ("framework", "versions", "liger", "loss")


def _framework(ctx: click.Context, param: click.Parameter, value: str) -> str:
    names = framework_names()
    if value not in names:
        from planner.errors import unknown

        raise click.BadParameter(str(unknown("framework", value, names)).removeprefix("unknown framework "))
    return value


def _versions(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[str, str] | None:
    if value is None:
        return None
    try:
        return parse_versions(value)
    except PlannerError as exc:
        raise click.BadParameter(str(exc)) from None


def stack_options(f: F) -> F:
    """The stack options (apply with one line: ``@stack_options``)."""
    options = [
        click.option("--framework", default=DEFAULT_FRAMEWORK, show_default=True, callback=_framework,
                     metavar="|".join(framework_names()), help="Training framework whose memory behaviour to model."),
        click.option("--versions", default=None, callback=_versions, metavar="LIB=VER,...",
                     help="Library versions, e.g. transformers=4.44.2,peft=0.12.0,trl=0.11.4 (default: the "
                          "installed ones from package metadata, else the newest modelled)."),
        click.option("--liger", is_flag=True, default=False, help="Liger kernels (use_liger_kernel=True): fused "
                     "linear cross-entropy."),
        click.option("--loss", type=click.Choice([c.value for c in LossChoice]), default=None,
                     help="Loss path where the framework offers a choice (default: the framework's)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def stack_from_options(values: dict[str, Any]) -> Resolution:
    """Resolve the parsed stack options (removes them from ``values``).

    Raises:
        click.UsageError: ``--liger``/``--loss`` the framework cannot use (exit 2).
    """
    framework = values.pop("framework", DEFAULT_FRAMEWORK)
    versions = values.pop("versions", None)
    liger = values.pop("liger", False)
    loss = values.pop("loss", None)
    try:
        return resolve_stack(framework, versions, liger=liger, loss=loss)
    except PlannerError as exc:
        raise click.UsageError(str(exc)) from None


def apply_stack(train: TrainSpec, resolution: Resolution) -> TrainSpec:
    """``train`` with what the stack implies where the user did not say: QLoRA's kbit-prepare."""
    ctx = click.get_current_context(silent=True)
    explicit = ctx is not None and ctx.get_parameter_source("kbit_prepare") not in (
        None, click.core.ParameterSource.DEFAULT)
    if not explicit:  # only QLoRA reads it; set for every method so a sweep's QLoRA points inherit it
        prepare = resolution.stack.kbit_prepare.calls_prepare
        if prepare != train.kbit_prepare:
            train = train.model_copy(update={"kbit_prepare": prepare})
    return train
