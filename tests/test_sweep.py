"""``loraplan sweep``: axis parsing, monotone points, the JSON, the terminal chart (snapshot) and --plot files."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from planner.cli import cli
from planner.cli.render.sweep import render_sweep
from planner.errors import PlannerError
from planner.estimator.api import resolve
from planner.specs import Method, Optim, TrainSpec
from planner.sweep import Axis, make_request, parse_choices, parse_values, run_sweep

SNAPSHOTS = Path(__file__).parent / "snapshots"
SEQ = (256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.mark.parametrize(("text", "values"), [
    ("2048", (2048,)),
    ("512:8192", (512, 1024, 2048, 4096, 8192)),
    ("512:6000", (512, 1024, 2048, 4096)),
    ("1:64:x4", (1, 4, 16, 64)),
    ("256:1024:+256", (256, 512, 768, 1024)),
    ("256:1024:256", (256, 512, 768, 1024)),
    ("1,2,4,8", (1, 2, 4, 8)),
    ("8, 4,4, 16", (8, 4, 16)),
])
def test_parse_values(text: str, values: tuple[int, ...]) -> None:
    assert parse_values(text, "--x") == values


@pytest.mark.parametrize("text", ["", "a", "0", "-2", "8:4", "1:2:3:4", "1:8:x1", "1,b", "1:100000:+1", "1.5"])
def test_parse_values_rejects(text: str) -> None:
    with pytest.raises(PlannerError, match="--seq-len"):
        parse_values(text, "--seq-len")


def test_parse_choices() -> None:
    assert parse_choices("lora, qlora,lora", Method, "--method") == (Method.LORA, Method.QLORA)
    with pytest.raises(PlannerError, match="choose from lora, qlora, full"):
        parse_choices("lora,dpo", Method, "--method")


@pytest.mark.parametrize(("values", "needle"), [
    ({Axis.SEQ_LEN: (2048,)}, "nothing to sweep"),
    ({Axis.SEQ_LEN: (1, 2), Axis.MICRO_BATCH: (1, 2), Axis.RANK: (8, 16)}, "at most two axes"),
    ({Axis.SEQ_LEN: SEQ, Axis.MICRO_BATCH: tuple(range(1, 10))}, "at most 8"),
])
def test_bad_requests(values: dict, needle: str) -> None:
    with pytest.raises(PlannerError, match=needle):
        make_request(TrainSpec(), values, [Method.LORA], [Optim.ADAMW])


def test_x_axis_must_be_swept() -> None:
    with pytest.raises(PlannerError, match="not swept"):
        make_request(TrainSpec(), {Axis.SEQ_LEN: (1, 2)}, [Method.LORA], [Optim.ADAMW], x_axis=Axis.RANK)


@pytest.mark.parametrize("model", ["llama-3-8b", "qwen2.5-7b", "mixtral-8x7b", "gemma-2-2b", "gpt2"])
@pytest.mark.parametrize("axis", [Axis.SEQ_LEN, Axis.MICRO_BATCH, Axis.RANK])
def test_device_peak_is_monotone(model: str, axis: Axis) -> None:
    """More tokens per step (seq-len, micro-batch) or a larger rank never needs less memory."""
    values = {Axis.SEQ_LEN: SEQ, Axis.MICRO_BATCH: (1, 2, 4, 8, 16), Axis.RANK: (1, 4, 8, 16, 64, 256)}[axis]
    methods = [Method.LORA, Method.QLORA] if axis is Axis.RANK else list(Method)
    request = make_request(TrainSpec(seq_len=512), {axis: values}, methods, [Optim.ADAMW, Optim.PAGED_ADAMW_8BIT])
    for ckpt in (True, False):
        result = run_sweep(resolve(model, "h100"), request.model_copy(update={
            "base": request.base.model_copy(update={"grad_ckpt": ckpt})}))
        for series in result.series:
            peaks = [p.peak_gib.device for p in series.points]
            assert peaks == sorted(peaks), (series.label, ckpt, peaks)
            allocated = [p.peak_gib.allocated for p in series.points]
            assert allocated == sorted(allocated)


def test_sweep_points_equal_estimate() -> None:
    res = run("sweep", "llama-3-8b", "--gpu", "4090", "--seq-len", "1024,4096", "--method", "lora,qlora", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    for series in data["series"]:
        for point in series["points"]:
            est = json.loads(run("estimate", "llama-3-8b", "--gpu", "4090", "--seq-len", str(point["x"]),
                                 "--method", series["method"], "--json").output)
            assert point["peak_gib"] == est["peak_gib"]
            assert point["memory_gib"] == est["memory_gib"]
            assert point["fits"] == est["fits"]


def test_json_has_every_point_and_the_largest_fitting_value() -> None:
    res = run("sweep", "llama-3-8b", "--gpu", "4090", "--seq-len", "256:32768", "--micro-batch", "1,2,4,8", "--json")
    data = json.loads(res.output)
    assert data["x_axis"] == "seq_len" and data["group_axis"] == "micro_batch"
    assert [s["label"] for s in data["series"]] == ["mb 1", "mb 2", "mb 4", "mb 8"]
    assert sum(len(s["points"]) for s in data["series"]) == 32
    assert data["usable_gib"] == pytest.approx(23.64, abs=0.01)
    for series in data["series"]:
        fitting = [p["x"] for p in series["points"] if p["fits"]]
        assert series["largest_fitting"] == (max(fitting) if fitting else None)
        assert all(p["train"]["micro_batch"] == series["group_value"] for p in series["points"])
    # TRL's fused head (the default framework) never builds the b*s*vocab logits; the plain Trainer does.
    assert [s["largest_fitting"] for s in data["series"]] == [8192, 4096, 2048, 1024]
    trainer = json.loads(run("sweep", "llama-3-8b", "--gpu", "4090", "--seq-len", "256:32768", "--micro-batch",
                             "1,2,4,8", "--framework", "trainer", "--json").output)
    assert [s["largest_fitting"] for s in trainer["series"]] == [2048, 1024, 512, 256]


def test_rank_sweep_keeps_alpha_twice_rank() -> None:
    data = json.loads(run("sweep", "llama-3-8b", "--rank", "8,64", "--json").output)
    assert [(p["train"]["rank"], p["train"]["alpha"]) for p in data["series"][0]["points"]] == [(8, 16.0), (64, 128.0)]
    data = json.loads(run("sweep", "llama-3-8b", "--rank", "8,64", "--alpha", "16", "--json").output)
    assert {p["train"]["alpha"] for p in data["series"][0]["points"]} == {16.0}


@pytest.mark.parametrize(("args", "needle"), [
    (("--seq-len", "512:abc"), "--seq-len"),
    (("--seq-len", "2048"), "nothing to sweep"),
    (("--seq-len", "512:8192", "--method", "dpo"), "--method"),
    (("--seq-len", "512:8192", "--optim", "adam"), "--optim"),
    (("--seq-len", "512:8192", "--x", "rank"), "not swept"),
    (("--seq-len", "512:8192", "--plot", "chart.pdf"), "use .png, .svg or .html"),
    (("--seq-len", "512:8192", "--gpu", "4091"), "did you mean"),
])
def test_bad_input_is_one_line_exit_2(args: tuple[str, ...], needle: str) -> None:
    res = run("sweep", "llama-3-8b", *args)
    assert res.exit_code == 2, res.output
    assert needle in res.output and "Traceback" not in res.output


def _chart(width: int = 80) -> str:
    request = make_request(TrainSpec(), {Axis.SEQ_LEN: (512, 1024, 2048, 4096, 8192)},
                           [Method.LORA, Method.QLORA], [Optim.ADAMW])
    console = Console(width=width, file=io.StringIO(), color_system=None, record=True)
    render_sweep(run_sweep(resolve("llama-3-8b", "4090"), request), console)
    return "".join(line.rstrip() + "\n" for line in console.export_text().splitlines())


def test_terminal_chart_snapshot() -> None:
    """``loraplan sweep llama-3-8b --gpu 4090 --seq-len 512:8192 --method lora,qlora`` at 80 columns.

    Update deliberately with ``LORAPLAN_UPDATE_SNAPSHOTS=1``.
    """
    path = SNAPSHOTS / "sweep_llama-3-8b_4090_seq-len_lora-qlora.txt"
    text = _chart()
    if os.environ.get("LORAPLAN_UPDATE_SNAPSHOTS"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")
    assert max(len(line) for line in text.splitlines()) <= 80


def test_chart_shows_limit_and_largest_fitting() -> None:
    text = _chart(120)
    assert "┄" in text and "RTX 4090 usable 23.64 GiB" in text
    assert "lora: largest fitting seq-len 2048" in text and "qlora: largest fitting seq-len 4096" in text
    assert "○" in text  # lora at 4096 and 8192 does not fit: hollow


def test_sweep_without_gpu_has_no_limit() -> None:
    res = run("sweep", "llama-3.2-1b", "--micro-batch", "1:16")
    assert res.exit_code == 0, res.output
    assert "usable" not in res.output and "largest fitting" not in res.output
    assert "micro-batch (sequences)" in res.output


@pytest.fixture()
def matplotlib() -> None:
    pytest.importorskip("matplotlib")


AXIS_LABELS = ("sequence length (tokens)", "device peak memory (GiB)")


def test_plot_svg_names_its_axes(tmp_path: Path, matplotlib: None) -> None:
    out = tmp_path / "chart.svg"
    res = run("sweep", "llama-3-8b", "--gpu", "4090", "--seq-len", "512:8192", "--method", "lora,qlora",
              "--plot", str(out))
    assert res.exit_code == 0, res.output
    svg = out.read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    for label in (*AXIS_LABELS, "llama-3-8b on RTX 4090", "RTX 4090 usable"):
        assert label in svg


def test_plot_png(tmp_path: Path, matplotlib: None) -> None:
    out = tmp_path / "chart.png"
    res = run("sweep", "llama-3-8b", "--gpu", "4090", "--micro-batch", "1,2,4,8", "--plot", str(out), "--json")
    assert res.exit_code == 0, res.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_plot_html_is_self_contained(tmp_path: Path, matplotlib: None) -> None:
    out = tmp_path / "chart.html"
    res = run("sweep", "qwen2.5-7b", "--gpu", "l4", "--rank", "8:128", "--method", "lora,qlora", "--plot", str(out))
    assert res.exit_code == 0, res.output
    page = out.read_text()
    assert page.startswith("<!doctype html>") and "<svg" in page and "<script" not in page and "http" not in page.split("<svg")[0]
    assert "LoRA rank r" in page and "device peak memory (GiB)" in page


def test_plot_without_matplotlib_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    res = run("sweep", "llama-3-8b", "--seq-len", "512:8192", "--plot", str(tmp_path / "c.png"))
    assert res.exit_code == 2
    assert "pip install 'loraplan[plot]'" in res.output


def test_plot_unwritable(tmp_path: Path, matplotlib: None) -> None:
    res = run("sweep", "llama-3-8b", "--seq-len", "512:8192", "--plot", str(tmp_path / "missing" / "c.svg"))
    assert res.exit_code == 2 and "cannot write" in res.output


def test_sweep_benchmark(benchmark) -> None:
    """32 points (8 sequence lengths x 4 micro-batches), in process."""
    inputs = resolve("llama-3-8b", "4090")
    request = make_request(TrainSpec(), {Axis.SEQ_LEN: SEQ, Axis.MICRO_BATCH: (1, 2, 4, 8)}, [Method.LORA],
                           [Optim.ADAMW])
    result = benchmark(run_sweep, inputs, request)
    assert sum(len(s.points) for s in result.series) == 32
