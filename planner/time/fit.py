"""Offline fit of the time model's few free constants on the published runs; writes ``throughput.json`` ``fitted``.

Run ``python -m planner.time.fit`` after changing ``profiles/throughput_runs.json`` or the counted terms; it
prints the per-row tables (fitted, held-out, other stacks) and rewrites the ``fitted`` block with its
provenance. Runtime code only reads the constants (no fitting at import or per call).

Free constants (everything else is counted physics): the large-GEMM utilization of each GPU generation that
has fit rows, the two halves of the GEMM-size factor, and the fixed dispatch seconds per layer and per adapted
module. Objective: least squares of log(predicted / measured tokens/s) over the ``fit`` rows (Nelder-Mead on
the log parameters, pure Python). The held-out rows (``holdout_groups``, chosen by source and model series)
never enter the objective; their p10 / p90 of measured / predicted, widened to include 1, is the error band
``recommend`` and ``instances`` show.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from planner.catalog import profiles_dir
from planner.time.constants import time_constants
from planner.time.mfu import generation
from planner.time.points import FIT, HOLDOUT, Point, published_points
from planner.time.schemas import Provenance, Utilization
from planner.time.step import time_breakdown


@dataclass(frozen=True)
class Params:
    mfu: dict[str, float]
    gemm_half_tokens: float
    gemm_half_dim: float
    overhead_s_per_layer: float
    overhead_s_per_module: float

    def util(self, gen: str) -> Utilization:
        return Utilization(mfu=self.mfu[gen], gemm_half_tokens=self.gemm_half_tokens, gemm_half_dim=self.gemm_half_dim,
                           overhead_s_per_layer=self.overhead_s_per_layer,
                           overhead_s_per_module=self.overhead_s_per_module, basis="fit", provenance=Provenance.FITTED,
                           from_gpu=None, generation=gen, sources=())


def predict(point: Point, params: Params, gen_of: Callable[[Point], str]) -> float:
    """Predicted tokens/s of ``point`` at ``params`` (the generation's utilization, or the one it borrows)."""
    return time_breakdown(point.config, point.train, point.gpu, params.util(gen_of(point)), point.impl).tokens_per_s


def _vector_to_params(x: Sequence[float], gens: list[str]) -> Params:
    n = len(gens)
    return Params(mfu={g: min(1.0, math.exp(v)) for g, v in zip(gens, x[:n])}, gemm_half_tokens=math.exp(x[n]),
                  gemm_half_dim=math.exp(x[n + 1]), overhead_s_per_layer=math.exp(x[n + 2]),
                  overhead_s_per_module=math.exp(x[n + 3]))


def nelder_mead(f: Callable[[list[float]], float], x0: list[float], step: float = 0.5, iters: int = 1500,
                tol: float = 1e-10) -> list[float]:
    """Minimize ``f`` from ``x0`` (standard Nelder-Mead: reflection 1, expansion 2, contraction 0.5, shrink 0.5)."""
    pts = [list(x0)] + [[v + (step if i == j else 0.0) for j, v in enumerate(x0)] for i in range(len(x0))]
    vals = [f(p) for p in pts]
    for _ in range(iters):
        order = sorted(range(len(pts)), key=vals.__getitem__)
        pts, vals = [pts[i] for i in order], [vals[i] for i in order]
        if vals[-1] - vals[0] < tol:
            break
        centroid = [sum(p[j] for p in pts[:-1]) / (len(pts) - 1) for j in range(len(x0))]
        refl = [c + (c - w) for c, w in zip(centroid, pts[-1])]
        fr = f(refl)
        if fr < vals[0]:
            exp = [c + 2.0 * (c - w) for c, w in zip(centroid, pts[-1])]
            fe = f(exp)
            pts[-1], vals[-1] = (exp, fe) if fe < fr else (refl, fr)
        elif fr < vals[-2]:
            pts[-1], vals[-1] = refl, fr
        else:
            con = [c + 0.5 * (w - c) for c, w in zip(centroid, pts[-1])]
            fc = f(con)
            if fc < vals[-1]:
                pts[-1], vals[-1] = con, fc
            else:
                pts = [pts[0]] + [[b + 0.5 * (v - b) for b, v in zip(pts[0], p)] for p in pts[1:]]
                vals = [vals[0]] + [f(p) for p in pts[1:]]
    return pts[min(range(len(pts)), key=vals.__getitem__)]


def gen_mapper(fitted_gens: set[str]) -> Callable[[Point], str]:
    """Point -> the generation whose utilization it runs at (its own if fitted, else the inferred one)."""
    consts = time_constants()

    def gen_of(point: Point) -> str:
        gen = generation(point.gpu)
        return gen if gen in fitted_gens else consts.infer_from.get(gen, "ampere-datacenter")

    return gen_of


def fit(points: Sequence[Point]) -> Params:
    """Least-squares fit (log residuals) of the free constants on the ``fit`` rows."""
    rows = [p for p in points if p.split == FIT]
    gens = sorted({generation(p.gpu) for p in rows})
    gen_of = gen_mapper(set(gens))

    def loss(x: list[float]) -> float:
        params = _vector_to_params(x, gens)
        return sum(math.log(predict(p, params, gen_of) / p.tokens_per_s) ** 2 for p in rows)

    x0 = [math.log(0.5)] * len(gens) + [math.log(128.0), math.log(128.0), math.log(1e-3), math.log(1e-4)]
    best = nelder_mead(loss, x0)
    best = nelder_mead(loss, best, step=0.2)
    return _vector_to_params(best, gens)


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default), pure Python."""
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary(errors: Sequence[float]) -> dict[str, float]:
    """Median and p90 absolute relative error, and the bias (median signed error)."""
    absolute = [abs(e) for e in errors]
    return {"n": len(errors), "median_abs": statistics.median(absolute), "p90_abs": quantile(absolute, 0.9),
            "bias": statistics.median(errors)}


def _table(title: str, rows: list[tuple[Point, float]]) -> str:
    lines = [f"\n{title}", f"{'gpu':<10} {'method':<7} {'id':<28} {'measured':>9} {'predicted':>9} {'error':>7}"]
    for p, pred in sorted(rows, key=lambda r: (r[0].gpu.name, r[0].train.method.value, r[0].id)):
        method = "dora" if p.train.dora else p.train.method.value
        lines.append(f"{p.gpu.name:<10} {method:<7} {p.id:<28} {p.tokens_per_s:>9.0f} {pred:>9.0f} "
                     f"{pred / p.tokens_per_s - 1:>+7.1%}")
    s = summary([pred / p.tokens_per_s - 1 for p, pred in rows])
    lines.append(f"n={s['n']}  median |error| {s['median_abs']:.1%}  p90 |error| {s['p90_abs']:.1%}  bias {s['bias']:+.1%}")
    return "\n".join(lines)


def cross_generation(params: Params, points: Sequence[Point]) -> list[tuple[Point, float]]:
    """Every fit / held-out row predicted at another fitted generation's utilization (what inferring costs)."""
    out = []
    for p in points:
        if p.split not in (FIT, HOLDOUT):
            continue
        own = generation(p.gpu)
        for other in params.mfu:
            if other != own:
                out.append((p, predict(p, params, lambda _p, g=other: g)))
    return out


def write_fitted(params: Params, points: Sequence[Point], gen_of: Callable[[Point], str]) -> dict:
    """The ``fitted`` block: constants, the error band, the fit's provenance and its summaries."""
    held = [(p, predict(p, params, gen_of)) for p in points if p.split == HOLDOUT]
    fitted = [(p, predict(p, params, gen_of)) for p in points if p.split == FIT]
    ratios = [p.tokens_per_s / pred for p, pred in held]
    crossed = [p.tokens_per_s / pred for p, pred in cross_generation(params, points)]
    gpus = {}
    for p in points:
        if p.split == FIT:
            gpus.setdefault(generation(p.gpu), p.gpu.name)
    return {
        "generations": {g: {"mfu": round(v, 4), "gpu": gpus[g]} for g, v in params.mfu.items()},
        "gemm_half_tokens": round(params.gemm_half_tokens, 2), "gemm_half_dim": round(params.gemm_half_dim, 2),
        "overhead_s_per_layer": round(params.overhead_s_per_layer, 7),
        "overhead_s_per_module": round(params.overhead_s_per_module, 7),
        "error_band": {"low": round(min(1.0, quantile(ratios, 0.1)), 4), "high": round(max(1.0, quantile(ratios, 0.9)), 4),
                       "source": "held-out rows: p10 / p90 of measured / predicted tokens/s, widened to include 1"},
        "error_band_inferred": {
            "low": round(min(1.0, quantile(ratios, 0.1), quantile(crossed, 0.1)), 4),
            "high": round(max(1.0, quantile(ratios, 0.9), quantile(crossed, 0.9)), 4),
            "source": ("for GPUs whose utilization is inferred from another generation: the held-out band widened "
                       "by the p10 / p90 of measured / predicted when every fit and held-out row is predicted at "
                       "the other fitted generation's utilization (cross-generation check)")},
        "summary": {"fit": {k: round(v, 4) for k, v in summary([pr / p.tokens_per_s - 1 for p, pr in fitted]).items()},
                    "holdout": {k: round(v, 4) for k, v in summary([pr / p.tokens_per_s - 1 for p, pr in held]).items()}},
        "provenance": ("python -m planner.time.fit: Nelder-Mead least squares of log(predicted/measured) over the "
                       f"{len(fitted)} 'fit' rows of profiles/throughput_runs.json; {len(held)} held-out rows never "
                       "enter the objective"),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite profiles/throughput.json 'fitted'")
    args = parser.parse_args(argv)
    points = published_points()
    params = fit(points)
    gen_of = gen_mapper(set(params.mfu))
    for title, split in (("fitted rows", FIT), ("held-out rows", HOLDOUT), ("other stacks (not fitted)", "other-stack")):
        print(_table(title, [(p, predict(p, params, gen_of)) for p in points if p.split == split]))
    print(_table("cross-generation check (each row at the other generation's utilization)",
                 cross_generation(params, points)))
    block = write_fitted(params, points, gen_of)
    print("\n" + json.dumps(block, indent=1))
    if args.write:
        path = profiles_dir() / "throughput.json"
        data = json.loads(path.read_text())
        data["fitted"] = block
        path.write_text(json.dumps(data, indent=1) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
