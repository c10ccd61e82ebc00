"""``loraplan`` command line: the click group and its commands (each in its own module, thin).

Parsing lives in :mod:`planner.cli.options`, ``--json`` in :mod:`planner.cli.output`, GPU detection in
:mod:`planner.cli.gpu`, all rich output in :mod:`planner.cli.render`. Heavy parts (the probe stack,
rich) are imported inside the commands that need them, so ``loraplan estimate`` stays fast.
"""

from __future__ import annotations

import sys
from typing import Any

import click
from pydantic import ValidationError

from planner.cli.estimate import estimate
from planner.cli.probe import probe
from planner.cli.recommend import instances, recommend
from planner.cli.serve import serve
from planner.cli.sweep import sweep
from planner.cli.watch import watch
from planner.errors import PlannerError
from planner.inputs import describe, one_line


class _Group(click.Group):
    """Turns user errors into one line on stderr and exit code 2 (never a traceback)."""

    def main(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        kwargs["standalone_mode"] = False
        try:
            rv = super().main(*args, **kwargs)
        except PlannerError as err:
            click.echo(one_line(f"error: {err}"), err=True)
            sys.exit(err.exit_code)
        except ValidationError as err:  # a spec rejected a value (bounds, finiteness): same as a usage error
            click.echo(one_line(f"error: {describe(err)}"), err=True)
            sys.exit(2)
        except click.exceptions.NoArgsIsHelpError as err:
            click.echo(err.ctx.get_help() if err.ctx else str(err))
            sys.exit(0)
        except click.UsageError as err:
            where = f" ({err.ctx.command_path})" if err.ctx else ""
            click.echo(one_line(f"error{where}: {err.format_message()}"), err=True)
            sys.exit(2)
        except click.exceptions.Abort:
            click.echo("aborted", err=True)
            sys.exit(130)
        except click.exceptions.Exit as err:
            sys.exit(err.exit_code)
        except click.ClickException as err:
            click.echo(one_line(f"error: {err.format_message()}"), err=True)
            sys.exit(err.exit_code)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="loraplan")
def cli() -> None:
    """Will this fine-tuning job fit, and what settings should I use?"""


cli.add_command(estimate)
cli.add_command(probe)
cli.add_command(recommend)
cli.add_command(instances)
cli.add_command(serve)
cli.add_command(sweep)
cli.add_command(watch)


def main() -> None:
    """Console-script entry point."""
    cli.main()
