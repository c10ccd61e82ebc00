"""Sweeps: the device peak of one model over one or two swept axes, one series per method/optimizer.

``loraplan sweep`` parses its axes with :func:`parse_values` (``512:8192`` doubles, ``256:1024:+256``
steps, ``1,2,4,8`` is taken as given), builds a :class:`SweepRequest` with :func:`make_request` and
evaluates every point with the estimator (:func:`run_sweep`). Pure: no I/O, no CLI objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import Enum
from itertools import product
from typing import Any

from planner.errors import PlannerError
from planner.estimator.api import Resolved
from planner.estimator.core import usable_gib
from planner.results import GpuRef, MemoryGiB, PeakGiB
from planner.specs import Frozen, Method, Optim, TrainSpec

MAX_VALUES = 64
"""Most values one axis may take."""
MAX_SERIES = 8
"""Most lines in one chart (methods x optimizers x values of the second axis)."""
MAX_POINTS = 512
"""Most points one sweep evaluates (about 0.1 ms each)."""


class Axis(str, Enum):
    """A sweepable :class:`~planner.specs.TrainSpec` field (value = the field name)."""

    SEQ_LEN = "seq_len"
    MICRO_BATCH = "micro_batch"
    RANK = "rank"

    @property
    def flag(self) -> str:
        """The CLI option (``--seq-len``)."""
        return "--" + self.value.replace("_", "-")

    @property
    def label(self) -> str:
        """Axis label with its unit, for charts."""
        return _LABELS[self]

    @property
    def short(self) -> str:
        """Short name for series labels (``mb 4``)."""
        return _SHORT[self]


_LABELS = {Axis.SEQ_LEN: "sequence length (tokens)", Axis.MICRO_BATCH: "micro-batch (sequences)",
           Axis.RANK: "LoRA rank r"}
_SHORT = {Axis.SEQ_LEN: "seq", Axis.MICRO_BATCH: "mb", Axis.RANK: "r"}
_SYNTAX = "N, START:STOP (doubling), START:STOP:xF, START:STOP:+N, or a list such as 1,2,4,8"


def _positive_int(text: str, flag: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise PlannerError(f"{flag}: expected {_SYNTAX}; {text.strip()!r} is not an integer") from None
    if value <= 0:
        raise PlannerError(f"{flag}: values must be positive integers, got {value}")
    return value


def _range(text: str, flag: str) -> list[int]:
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise PlannerError(f"{flag}: expected {_SYNTAX}, got {text!r}")
    start, stop = _positive_int(parts[0], flag), _positive_int(parts[1], flag)
    if stop < start:
        raise PlannerError(f"{flag}: range {text!r} ends below its start")
    step = parts[2].strip() if len(parts) == 3 else "x2"
    geometric = step[:1] in ("x", "*")
    amount = _positive_int(step[1:] if geometric or step.startswith("+") else step, flag)
    if geometric and amount < 2:
        raise PlannerError(f"{flag}: a multiplying step must be at least x2, got {step!r}")
    values = [start]
    while len(values) <= MAX_VALUES:
        nxt = values[-1] * amount if geometric else values[-1] + amount
        if nxt > stop:
            break
        values.append(nxt)
    return values


def parse_values(text: str, flag: str) -> tuple[int, ...]:
    """Values of one axis: ``2048``, ``512:8192`` (doubling), ``512:8192:x4``, ``256:1024:+256`` or ``1,2,4,8``.

    Ranges include STOP when the steps reach it; lists keep their order (repeats dropped).

    Raises:
        PlannerError: malformed text, non-positive values, or more than :data:`MAX_VALUES` values.
    """
    text = text.strip()
    if ":" in text:
        values = _range(text, flag)
    else:
        values = [_positive_int(part, flag) for part in text.split(",") if part.strip()]
    if not values:
        raise PlannerError(f"{flag}: expected {_SYNTAX}, got {text!r}")
    if len(values) > MAX_VALUES:
        raise PlannerError(f"{flag}: {text!r} gives more than {MAX_VALUES} values")
    return tuple(dict.fromkeys(values))


def parse_choices(text: str, enum: type[Enum], flag: str) -> tuple[Any, ...]:
    """``"lora,qlora"`` -> ``(Method.LORA, Method.QLORA)``; unknown names are a one-line error."""
    names = [p.strip().lower() for p in text.split(",") if p.strip()]
    known = [e.value for e in enum]
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise PlannerError(f"{flag}: unknown {', '.join(bad) or repr(text)}; choose from {', '.join(known)}")
    return tuple(dict.fromkeys(enum(n) for n in names))


class SweepRequest(Frozen):
    """What to sweep: the base configuration, the x axis, an optional second axis, methods and optimizers."""

    base: TrainSpec
    x_axis: Axis
    x_values: tuple[int, ...]
    group_axis: Axis | None = None
    """Second swept axis: one series per value."""
    group_values: tuple[int, ...] = ()
    methods: tuple[Method, ...]
    optims: tuple[Optim, ...]
    alpha_follows_rank: bool = True
    """No ``--alpha`` given: alpha = 2 x rank at every point (as ``estimate`` does)."""

    def series_count(self) -> int:
        return len(self.methods) * len(self.optims) * max(1, len(self.group_values))


def make_request(
    base: TrainSpec,
    values: dict[Axis, Sequence[int]],
    methods: Iterable[Method],
    optims: Iterable[Optim],
    x_axis: Axis | None = None,
    alpha_follows_rank: bool = True,
) -> SweepRequest:
    """Validate a sweep: one or two axes with several values, at most :data:`MAX_SERIES` lines.

    Args:
        base: The configuration every point starts from.
        values: Values per axis; an axis with one value is fixed at it, one with several is swept.
        methods: One series per method.
        optims: One series per optimizer.
        x_axis: The axis along the chart's x; default the first swept of seq-len, micro-batch, rank.
        alpha_follows_rank: Set alpha = 2 x rank at each point.

    Raises:
        PlannerError: no swept axis, three swept axes, an ``x_axis`` that is not swept, too many series/points.
    """
    swept = [a for a in Axis if len(values.get(a, ())) > 1]
    if not swept:
        raise PlannerError("nothing to sweep: give several values to --seq-len (512:8192), --micro-batch (1,2,4,8) "
                           "or --rank (8,16,32,64)")
    if len(swept) > 2:
        raise PlannerError("sweep at most two axes at once (x and one line per value of the other)")
    if x_axis is not None and x_axis not in swept:
        raise PlannerError(f"--x {x_axis.flag[2:]} is not swept; swept: {', '.join(a.flag[2:] for a in swept)}")
    x = x_axis or swept[0]
    group = next((a for a in swept if a is not x), None)
    fixed = {a.value: values[a][0] for a in Axis if a not in swept and values.get(a)}
    request = SweepRequest(
        base=base.model_copy(update=fixed), x_axis=x, x_values=tuple(values[x]), group_axis=group,
        group_values=tuple(values[group]) if group else (), methods=tuple(methods), optims=tuple(optims),
        alpha_follows_rank=alpha_follows_rank,
    )
    if not request.methods or not request.optims:
        raise PlannerError("sweep needs at least one --method and one --optim")
    if request.series_count() > MAX_SERIES:
        raise PlannerError(f"{request.series_count()} lines in one chart (methods x optimizers x values of "
                           f"{group.flag if group else 'the second axis'}); at most {MAX_SERIES}")
    if request.series_count() * len(request.x_values) > MAX_POINTS:
        raise PlannerError(f"{request.series_count() * len(request.x_values)} points; at most {MAX_POINTS}")
    return request


class SweepPoint(Frozen):
    """One evaluated configuration."""

    x: int
    """Value of the x axis."""
    train: TrainSpec
    peak_gib: PeakGiB
    memory_gib: MemoryGiB
    peak_phase: str
    fits: bool | None
    """Device peak under the GPU's usable memory (None without a GPU)."""
    headroom_gib: float | None


class SweepSeries(Frozen):
    """One line of the chart: a method, an optimizer and (with two axes) one value of the second axis."""

    label: str
    method: Method
    optim: Optim
    group_value: int | None
    points: tuple[SweepPoint, ...]
    largest_fitting: int | None
    """Largest x value whose point fits the GPU (None without a GPU, or when none fits)."""


class SweepResult(Frozen):
    """Result of :func:`run_sweep`; field names are the ``loraplan sweep --json`` contract. Memory in GiB."""

    model: str
    x_axis: Axis
    x_values: tuple[int, ...]
    group_axis: Axis | None
    group_values: tuple[int, ...]
    base: TrainSpec
    gpu: GpuRef | None
    usable_gib: float | None
    """The GPU's memory less what the driver reserves: the limit a device peak must stay under."""
    series: tuple[SweepSeries, ...]
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The ``sweep --json`` object: sizes rounded to 4 decimals (GiB), as ``estimate --json``."""
        data = self.model_dump(mode="json")
        for series in data["series"]:
            for point in series["points"]:
                for key in ("peak_gib", "memory_gib"):
                    point[key] = {k: round(v, 4) for k, v in point[key].items()}
        return data


def _label(request: SweepRequest, method: Method, optim: Optim, group_value: int | None) -> str:
    parts = []
    if len(request.methods) > 1 or (len(request.optims) == 1 and group_value is None):
        parts.append(method.value)
    if len(request.optims) > 1:
        parts.append(optim.value)
    if request.group_axis is not None:
        parts.append(f"{request.group_axis.short} {group_value}")
    return " ".join(parts)


def _point_spec(request: SweepRequest, method: Method, optim: Optim, x: int, group_value: int | None) -> TrainSpec:
    update: dict[str, Any] = {"method": method, "optim": optim, request.x_axis.value: x}
    if request.group_axis is not None:
        update[request.group_axis.value] = group_value
    if request.alpha_follows_rank:
        update["alpha"] = 2.0 * update.get("rank", request.base.rank)
    return request.base.model_copy(update=update)


def run_sweep(inputs: Resolved, request: SweepRequest) -> SweepResult:
    """Estimate every point of ``request`` for one model (and GPU); series in method, optimizer, group order."""
    series: list[SweepSeries] = []
    warnings: dict[str, None] = {}
    groups: tuple[int | None, ...] = request.group_values or (None,)
    for method, optim, group_value in product(request.methods, request.optims, groups):
        points = []
        for x in request.x_values:
            est = inputs.run(_point_spec(request, method, optim, x, group_value))
            warnings.update(dict.fromkeys(est.warnings))
            points.append(SweepPoint(x=x, train=est.train, peak_gib=est.peak_gib, memory_gib=est.memory_gib,
                                     peak_phase=est.peak_phase, fits=est.fits, headroom_gib=est.headroom_gib))
        fitting = [p.x for p in points if p.fits]
        series.append(SweepSeries(label=_label(request, method, optim, group_value), method=method, optim=optim,
                                  group_value=group_value, points=tuple(points),
                                  largest_fitting=max(fitting) if fitting else None))
    gpu = inputs.gpu
    return SweepResult(
        model=inputs.model.name, x_axis=request.x_axis, x_values=request.x_values, group_axis=request.group_axis,
        group_values=request.group_values, base=request.base,
        gpu=GpuRef(name=gpu.name, memory_gib=gpu.memory_gib) if gpu else None,
        usable_gib=usable_gib(gpu) if gpu else None, series=tuple(series), warnings=tuple(warnings),
    )


def fixed_options(result: SweepResult) -> str:
    """The options every point shares (the swept ones left out): ``lora r=16 all-linear, mb 1, grad-ckpt, ...``."""
    swept = {result.x_axis, result.group_axis}
    t = result.base
    methods = sorted({s.method for s in result.series}, key=list(Method).index)
    optims = sorted({s.optim for s in result.series}, key=list(Optim).index)
    parts = []
    lora = [m for m in methods if m is not Method.FULL]
    head = " ".join(m.value for m in methods) if len(methods) == 1 else ""
    if lora:
        head += (f" r={t.rank}" if Axis.RANK not in swept else "") + f" {','.join(t.targets)}"
    parts.append(head.strip())
    parts += [f"{a.short} {getattr(t, a.value)}" for a in (Axis.MICRO_BATCH, Axis.SEQ_LEN) if a not in swept]
    parts.append("grad-ckpt" if t.grad_ckpt else "no grad-ckpt")
    if len(optims) == 1:
        parts.append(optims[0].value)
    parts += [t.attn.value, t.dtype.value]
    return ", ".join(p for p in parts if p)
