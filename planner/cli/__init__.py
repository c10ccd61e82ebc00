"""``loraplan`` command line: thin click commands over the planner API; rendering in planner.cli.render."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from planner.cli.estimate_extras import check_needs_gpu, estimate_json, exit_for_check, explain_check_options
from planner.cli.estimate_extras import explanation_for
from planner.cli.options import model_options, train_spec
from planner.errors import PlannerError


class _Group(click.Group):
    """Turns user errors into one line on stderr and exit code 2 (never a traceback)."""

    def main(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        kwargs["standalone_mode"] = False
        try:
            rv = super().main(*args, **kwargs)
        except PlannerError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(err.exit_code)
        except click.exceptions.NoArgsIsHelpError as err:
            click.echo(err.ctx.get_help() if err.ctx else str(err))
            sys.exit(0)
        except click.UsageError as err:
            where = f" ({err.ctx.command_path})" if err.ctx else ""
            click.echo(f"error{where}: {err.format_message()}", err=True)
            sys.exit(2)
        except click.exceptions.Abort:
            click.echo("aborted", err=True)
            sys.exit(130)
        except click.exceptions.Exit as err:
            sys.exit(err.exit_code)
        except click.ClickException as err:
            click.echo(f"error: {err.format_message()}", err=True)
            sys.exit(err.exit_code)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="loraplan")
def cli() -> None:
    """Will this fine-tuning job fit, and what settings should I use?"""


def emit_json(data: Any) -> None:
    """Print one JSON object (the ``--json`` contract)."""
    click.echo(json.dumps(data, indent=2))


@cli.command()
@click.argument("model")
@model_options
@click.option("--calibrate", "calibrate", type=click.Path(dir_okay=False), default=None,
              help="Use a probe result (loraplan probe --save) for this GPU's CUDA context and allocator reserve.")
@explain_check_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def estimate(model: str, gpu: str | None, calibrate: str | None, as_json: bool, explain: bool, check: bool,
             **options: Any) -> None:
    """Estimate GPU memory of fine-tuning MODEL (name, alias, hub id, or local config.json)."""
    from planner.estimator.api import estimate_with_advice

    train = train_spec(**options)
    check_needs_gpu(check, gpu)
    est = estimate_with_advice(model, train, gpu, calibrate)
    explanation = explanation_for(model, train, gpu, calibrate, est) if explain else None
    if as_json:
        emit_json(estimate_json(est, explanation))
    else:
        from planner.cli.render.estimate import render_estimate

        render_estimate(est)
        if explanation is not None:
            from planner.cli.render.explain import render_explanation

            render_explanation(explanation)
    if check:
        exit_for_check(est)


def _register() -> None:
    """Attach the commands that live in their own modules (each imports its heavy parts lazily)."""
    from planner.cli.probe import probe
    from planner.cli.recommend import instances, recommend
    from planner.cli.sweep import sweep

    for command in (probe, recommend, instances, sweep):
        cli.add_command(command)


def main() -> None:
    """Console-script entry point."""
    cli.main()


_register()
