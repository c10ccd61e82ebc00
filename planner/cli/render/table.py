"""Table style and number formats shared by every rich table: readable in an 80-column terminal.

Tables use a light style (a rule under the header, two spaces between columns) and never wrap a
cell: columns are ``no_wrap``, so a value is never split mid-word; detail goes below the table.
"""

from __future__ import annotations

from rich import box
from rich.table import Table


def compact_table(*columns: tuple[str, str], title: str | None = None) -> Table:
    """A table with the shared style; ``columns`` are ``(header, "left" | "right")`` pairs."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 0, 0, 1),
                  title=title, title_justify="left", title_style="bold")
    for header, justify in columns:
        table.add_column(header, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    return table


def sci(value: float) -> str:
    """A learning rate in short scientific notation: ``0.0002`` -> ``2e-4``, ``0.00015`` -> ``1.5e-4``."""
    mantissa, exponent = f"{value:.2e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"
