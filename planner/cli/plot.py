"""``sweep --plot FILE``: the sweep chart as a PNG, SVG or self-contained HTML file, drawn with matplotlib.

matplotlib is an optional extra (``pip install 'loraplan[plot]'``) imported only here, only when a plot
is written. SVG keeps its text as text (``svg.fonttype: none``), so axis labels are searchable; HTML
embeds that SVG and a table of every point in one file.
"""

from __future__ import annotations

import html
import io
from enum import Enum
from pathlib import Path
from typing import Any

from planner.errors import PlannerError
from planner.sweep import SweepResult, fixed_options

Y_LABEL = "device peak memory (GiB)"
_MARKERS = ("o", "s", "^", "D", "v", "*", "P", "X")
_RC = {"svg.fonttype": "none", "svg.hashsalt": "loraplan", "font.size": 9}


class PlotFormat(str, Enum):
    PNG = "png"
    SVG = "svg"
    HTML = "html"


def plot_format(path: str | Path) -> PlotFormat:
    """The format a ``--plot`` path asks for, from its suffix (checked before any work is done)."""
    suffix = Path(path).suffix.lower().lstrip(".")
    try:
        return PlotFormat("html" if suffix == "htm" else suffix)
    except ValueError:
        raise PlannerError(
            f"--plot {path}: unknown format {suffix or '(no suffix)'!r}; use .png, .svg or .html") from None


def _matplotlib() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise PlannerError("--plot needs matplotlib: pip install 'loraplan[plot]'") from None
    return Figure


def title(result: SweepResult) -> str:
    gpu = f" on {result.gpu.name}" if result.gpu else ""
    return f"{result.model}{gpu}: device peak vs {result.x_axis.label}\n{fixed_options(result)}"


def _figure(result: SweepResult) -> Any:
    fig = _matplotlib()(figsize=(7.0, 4.2), layout="constrained")
    ax = fig.subplots()
    for i, series in enumerate(result.series):
        pts = sorted(series.points, key=lambda p: p.x)
        label = series.label + (f" (largest fitting: {series.largest_fitting})" if series.largest_fitting else "")
        line, = ax.plot([p.x for p in pts], [p.peak_gib.device for p in pts], marker=_MARKERS[i % len(_MARKERS)],
                        label=label)
        best = next((p for p in pts if p.x == series.largest_fitting), None)
        if best is not None:
            ax.annotate("largest fit", (best.x, best.peak_gib.device), textcoords="offset points", xytext=(5, -6),
                        ha="left", va="top", fontsize=7, color=line.get_color())
        misses = [p for p in pts if p.fits is False]
        if misses:  # hollow markers where the point does not fit
            ax.plot([p.x for p in misses], [p.peak_gib.device for p in misses], linestyle="none",
                    marker=_MARKERS[i % len(_MARKERS)], markerfacecolor="white", color=line.get_color())
    if result.gpu is not None and result.usable_gib is not None:
        ax.axhline(result.usable_gib, color="red", linestyle="--", linewidth=1,
                   label=f"{result.gpu.name} usable ({result.usable_gib:.1f} GiB)")
    values = sorted(result.x_values)
    ax.set_xscale("log", base=2)
    ax.set_xticks(values, labels=[str(v) for v in values])
    ax.minorticks_off()
    ax.set_ylim(bottom=0)
    ax.set_xlabel(result.x_axis.label)
    ax.set_ylabel(Y_LABEL)
    ax.set_title(title(result))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left")
    return fig


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()


def _html(result: SweepResult, svg: str) -> str:
    body = svg[svg.index("<svg"):]
    head = "".join(f"<th>{html.escape(s.label)}</th>" for s in result.series)
    rows = []
    for x in result.x_values:
        cells = []
        for s in result.series:
            p = next(p for p in s.points if p.x == x)
            cells.append(f"<td>{p.peak_gib.device:.2f}{'' if p.fits is not False else ' (does not fit)'}</td>")
        rows.append(f"<tr><th>{x}</th>{''.join(cells)}</tr>")
    name = html.escape(title(result).splitlines()[0])
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{name}</title>"
            "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:right}</style></head>\n"
            f"<body>\n{body}\n<table><caption>{html.escape(Y_LABEL)}</caption>"
            f"<tr><th>{html.escape(result.x_axis.label)}</th>{head}</tr>\n" + "\n".join(rows) +
            "</table>\n</body></html>\n")


def write_plot(result: SweepResult, path: str | Path) -> Path:
    """Write the chart of ``result`` to ``path`` (format from its suffix); returns the path.

    Raises:
        PlannerError: unknown suffix, matplotlib missing, or the file cannot be written.
    """
    fmt = plot_format(path)
    out = Path(path)
    _matplotlib()
    from matplotlib import rc_context

    with rc_context(_RC):
        _save(result, fmt, out, path)
    return out


def _save(result: SweepResult, fmt: PlotFormat, out: Path, path: str | Path) -> None:
    fig = _figure(result)
    try:
        if fmt is PlotFormat.PNG:
            fig.savefig(out, format="png", dpi=150, metadata={"Software": None})
        elif fmt is PlotFormat.SVG:
            out.write_text(_svg(fig), encoding="utf-8")
        else:
            out.write_text(_html(result, _svg(fig)), encoding="utf-8")
    except OSError as err:
        raise PlannerError(f"--plot {path}: cannot write: {err.strerror or err}") from None
