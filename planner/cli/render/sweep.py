"""Terminal rendering of a :class:`~planner.sweep.SweepResult`: a character chart of device peak vs the
swept axis (one line per series, the GPU's usable memory as a horizontal limit), then a table.

Plain characters and rich styles only (no plotting library). Points that do not fit the GPU are drawn
hollow; the legend gives each series' largest fitting value.
"""

from __future__ import annotations

import math

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from planner.cli.render.console import make_console
from planner.cli.render.table import compact_table
from planner.sweep import SweepResult, SweepSeries, fixed_options

MARKERS = (("●", "○"), ("■", "□"), ("▲", "△"), ("◆", "◇"),
           ("▼", "▽"), ("★", "☆"), ("✚", "+"), ("✖", "x"))
"""(fits or no GPU, does not fit) per series, in series order."""
COLORS = ("cyan", "magenta", "yellow", "green", "blue", "bright_white", "bright_cyan", "bright_magenta")
PLOT_ROWS = 16
MAX_WIDTH = 100
LIMIT = "┄"
Cell = tuple[str, str]


def _nice_step(span: float, ticks: int = 4) -> float:
    """A 1/2/2.5/5 x 10^k step that splits ``span`` into about ``ticks`` intervals."""
    raw = span / ticks
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)


def _marker(series_index: int, fits: bool | None) -> str:
    filled, hollow = MARKERS[series_index % len(MARKERS)]
    return hollow if fits is False else filled


class _Canvas:
    """A grid of (character, style) cells; row 0 is the bottom of the plot."""

    def __init__(self, width: int, y_max: float) -> None:
        self.width, self.y_max = width, y_max
        self.cells: list[list[Cell]] = [[(" ", "")] * width for _ in range(PLOT_ROWS)]

    def row(self, y: float) -> int:
        return min(PLOT_ROWS - 1, max(0, round(y / self.y_max * (PLOT_ROWS - 1))))

    def put(self, col: int, row: int, cell: Cell, over: tuple[str, ...] = (" ", LIMIT)) -> None:
        if self.cells[row][col][0] in over:
            self.cells[row][col] = cell

    def segment(self, c0: int, y0: float, c1: int, y1: float, style: str) -> None:
        for col in range(c0 + 1, c1):
            y = y0 + (y1 - y0) * (col - c0) / (c1 - c0)
            self.put(col, self.row(y), ("·", style))


def _columns(count: int, width: int) -> list[int]:
    return [round(i * (width - 1) / (count - 1)) if count > 1 else width // 2 for i in range(count)]


def _draw(result: SweepResult, canvas: _Canvas, cols: dict[int, int]) -> None:
    if result.usable_gib is not None:
        limit_row = canvas.row(result.usable_gib)
        for col in range(canvas.width):
            canvas.put(col, limit_row, (LIMIT, "red"))
    for i, series in enumerate(result.series):
        style = COLORS[i % len(COLORS)]
        pts = sorted(series.points, key=lambda p: p.x)
        for a, b in zip(pts, pts[1:]):
            canvas.segment(cols[a.x], a.peak_gib.device, cols[b.x], b.peak_gib.device, style)
    for i, series in enumerate(result.series):
        style = COLORS[i % len(COLORS)]
        for p in series.points:
            canvas.put(cols[p.x], canvas.row(p.peak_gib.device), (_marker(i, p.fits), style),
                       over=(" ", LIMIT, "·"))


def _tick_line(values: list[int], cols: dict[int, int], left: int, width: int) -> str:
    line = [" "] * (left + width + 6)
    end = -1
    for v in values:
        label = str(v)
        start = left + cols[v] - len(label) // 2
        if start <= end + 1:
            continue  # would touch the previous label: skip this one
        line[start:start + len(label)] = label
        end = start + len(label) - 1
    return "".join(line).rstrip()


def chart_lines(result: SweepResult, width: int = 80) -> list[Text]:
    """The chart as lines of styled text, at most ``width`` columns (capped at :data:`MAX_WIDTH`)."""
    width = min(width, MAX_WIDTH)
    peaks = [p.peak_gib.device for s in result.series for p in s.points]
    top = max(peaks + [result.usable_gib or 0.0])
    step = _nice_step(top)
    y_max = step * math.ceil(top * 1.05 / step)
    ticks = {}
    tick = 0.0
    while tick <= y_max + 1e-9:
        ticks.setdefault(round(tick / y_max * (PLOT_ROWS - 1)), f"{tick:g}")
        tick += step
    label_w = max(len(t) for t in ticks.values())
    left = label_w + 2
    canvas = _Canvas(width - left - 2, y_max)
    values = sorted(result.x_values)
    cols = dict(zip(values, _columns(len(values), canvas.width)))
    _draw(result, canvas, cols)
    lines = [Text("GiB (device peak)", style="dim")]
    for row in range(PLOT_ROWS - 1, -1, -1):
        label = ticks.get(row)
        line = Text(f"{label:>{label_w}} ┤" if label else " " * label_w + " │", style="dim")
        for char, style in canvas.cells[row]:
            line.append(char, style=style)
        lines.append(line)
    axis = ["─"] * canvas.width
    for c in cols.values():
        axis[c] = "┬"
    lines.append(Text(" " * label_w + " └" + "".join(axis), style="dim"))
    lines.append(Text(_tick_line(values, cols, left, canvas.width)))
    lines.append(Text(f"{result.x_axis.label:>{left + canvas.width}}", style="dim"))
    return lines


def _legend(result: SweepResult, i: int, series: SweepSeries) -> Text:
    text = Text(f" {_marker(i, True)} ", style=COLORS[i % len(COLORS)])
    text.append(series.label)
    if result.gpu is not None:
        largest = series.largest_fitting
        text.append(f": largest fitting {result.x_axis.flag[2:]} {largest}" if largest is not None
                    else ": no point fits", style="bold" if largest is not None else "red")
    return text


def render_sweep(result: SweepResult, console: Console | None = None) -> None:
    """Title, chart, legend, table of every point, and warnings."""
    console = console or make_console()
    gpu = f" on {result.gpu.name}" if result.gpu else ""
    console.print(f"[bold]{escape(result.model)}[/]{escape(gpu)}: device peak vs {result.x_axis.label}",
                  highlight=False)
    console.print(f"[dim]{escape(fixed_options(result))}[/]", highlight=False)
    for line in chart_lines(result, console.width):
        console.print(line, no_wrap=True, crop=True)
    for i, series in enumerate(result.series):
        console.print(_legend(result, i, series))
    if result.gpu is not None and result.usable_gib is not None:
        console.print(f" [red]{LIMIT * 2}[/] {escape(result.gpu.name)} usable {result.usable_gib:.2f} GiB; "
                      "hollow markers and ✗: does not fit", highlight=False)
    console.print(_points_table(result, console.width))
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")


def _points_table(result: SweepResult, width: int) -> Table:
    """Every point's device peak, one column per series headed by its marker and label (marker only when
    the labels would not fit ``width``: the legend above names them)."""
    by_x = [{p.x: p for p in s.points} for s in result.series]
    rows = []
    for x in result.x_values:
        cells = [str(x)]
        for points in by_x:
            p = points[x]
            cells.append(f"{p.peak_gib.device:.2f}" if p.fits is not False else f"[red]{p.peak_gib.device:.2f} ✗[/]")
        rows.append(cells)
    labels = [f"{_marker(i, True)} {s.label}" for i, s in enumerate(result.series)]
    cell_width = max(len(Text.from_markup(c)) for row in rows for c in row[1:])
    needed = len(result.x_axis.flag) + sum(max(len(label), cell_width) + 2 for label in labels)
    if needed > width:
        labels = [_marker(i, True) for i in range(len(result.series))]
    table = compact_table((result.x_axis.flag[2:], "right"), *((label, "right") for label in labels),
                          title="device peak (GiB)")
    for cells in rows:
        table.add_row(*cells)
    return table
