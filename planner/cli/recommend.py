"""``loraplan recommend`` and ``loraplan instances``: thin click commands over :mod:`planner.recommender`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from planner import recommender
from planner.cli.dataset_options import dataset_options, pop_dataset
from planner.cli import gpu as gpu_detection
from planner.cli.output import emit_json
from planner.cli.stack_options import stack_from_options, stack_options
from planner.estimator.fits import DEFAULT_HEADROOM
from planner.recommender.rules import Task

_METHODS = ("auto", "lora", "qlora", "full")


def _float_si(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """Accept 20000000, 2e7, 20M, 1.5B for token counts."""
    if value is None:
        return None
    text = value.strip().lower().replace(",", "").replace("_", "")
    scale = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9}.get(text[-1:], 1.0)
    try:
        number = float(text[:-1] if scale != 1.0 else text) * scale
    except ValueError:
        raise click.BadParameter(f"expected a number such as 20000000, 2e7 or 20M, got {value!r}") from None
    if number <= 0:
        raise click.BadParameter(f"must be > 0, got {value}")
    return number


def request_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by ``recommend`` and ``instances``."""
    options = [
        click.option("--examples", type=int, default=None, help="Training examples (with --avg-tokens)."),
        click.option("--avg-tokens", type=float, default=None, help="Average tokens per example (with --examples)."),
        click.option("--dataset-tokens", callback=_float_si, default=None,
                     help="Training tokens per epoch (20000000, 2e7 or 20M). Without a dataset size: tokens/s only."),
        click.option("--seq-len", type=int, default=2048, show_default=True,
                     help="Max tokens per sequence (TRL max_length); memory is sized for it."),
        click.option("--effective-batch", type=int, default=16, show_default=True,
                     help="Sequences per optimizer step (micro-batch x gradient accumulation)."),
        click.option("--epochs", type=float, default=3.0, show_default=True, help="Passes over the dataset."),
        click.option("--task", type=click.Choice([t.value for t in Task], case_sensitive=False),
                     default=Task.INSTRUCTION.value, show_default=True, help="Task (sizes the LoRA rank)."),
        click.option("--headroom", type=float, default=DEFAULT_HEADROOM, show_default=True,
                     help="Fraction of usable GPU memory to keep free."),
        click.option("--method", "method", type=click.Choice(_METHODS, case_sensitive=False), default="auto",
                     show_default=True, help="auto = 16-bit LoRA first, QLoRA when that does not fit."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _stack_request(values: dict[str, Any]) -> dict[str, Any]:
    """Resolve and remove the stack options: the request's stack, its warnings, the framework (its snippets)
    and the ``--versions`` the snippets follow (e.g. ``trl`` on a trainer stack)."""
    framework = values.get("framework")
    code_versions = dict(values.get("versions") or {})
    resolution = stack_from_options(values)
    return {"stack": resolution.stack, "stack_detected": resolution.detected,
            "stack_warnings": resolution.warnings, "framework": framework, "code_versions": code_versions}


def _request(values: dict[str, Any], stack: dict[str, Any]) -> Any:
    method = values.get("method") or "auto"
    return recommender.make_request(
        dataset_tokens=values.get("dataset_tokens"),
        examples=values.get("examples"),
        avg_tokens=values.get("avg_tokens"),
        seq_len=values["seq_len"],
        effective_batch=values["effective_batch"],
        epochs=values["epochs"],
        task=values["task"],
        headroom=values["headroom"],
        top=values.get("top", 1),
        methods=None if method == "auto" else [method],
        **stack,
        gpus=values.get("gpus") or 1,
        max_gpus=values.get("max_gpus"),
        host_ram_gib=values.get("host_ram"),
    )


def _at_least_one(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    if value is not None and value < 1:
        raise click.BadParameter(f"must be at least 1, got {value}")
    return value


@click.command()
@click.argument("model")
@click.option("--gpu", default=None, help="GPU profile name or alias; default: the local GPU.")
@request_options
@stack_options
@dataset_options
@click.option("--top", type=int, default=3, show_default=True, help="Plans to show.")
@click.option("--gpus", type=int, default=None, callback=_at_least_one,
              help="GPUs to plan for, in one node (default: the detected count, else 1); peak GiB is per GPU.")
@click.option("--max-gpus", "max_gpus", type=int, default=None, callback=_at_least_one,
              help="Search 1, 2, 4, 8 GPUs, then nodes of 8, up to this; fewest GPUs first, then fastest.")
@click.option("--host-ram", "host_ram", type=float, default=None,
              help="Host RAM per node (GiB): offload plans (tried when nothing else fits) must stay within it.")
@click.option("--prices", type=click.Path(dir_okay=False), default=None,
              help="Price file merged over the instance catalogue (for the nothing-fits alternatives).")
@click.option("--code/--no-code", default=True, show_default=True, help="Print the ready-to-paste code (text output).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def recommend(model: str, gpu: str | None, prices: str | None, code: bool, as_json: bool, **values: Any) -> None:
    """Recommend LoRA/QLoRA settings for MODEL that fit a GPU, fastest first.

    Nothing fitting is an answer, not an error: exit 0 with no plans and a reason.
    """
    from planner.cli.recommend_dataset import apply_dataset, dataset_file_report

    stack = _stack_request(values)
    data_values = pop_dataset(values)
    analysis = apply_dataset(model, values, data_values)
    gpu_profile: Any = gpu
    if gpu is None:
        gpu_profile, count = gpu_detection.detect_gpu_profile_and_count()
        if values.get("gpus") is None and values.get("max_gpus") is None:
            values["gpus"] = count
    result = recommender.recommend(model, gpu_profile, gpu_detected=gpu is None, request=_request(values, stack),
                                   prices=prices)
    report = dataset_file_report(analysis, model, result, gpu, values, data_values)
    if as_json:
        data = result.model_dump(mode="json")
        if report is not None:
            data["dataset_file"] = report.model_dump(mode="json")
        emit_json(data)
        return
    from planner.cli.render.recommend import render_recommendation  # rich (and pygments): text output only

    render_recommendation(result, show_code=code)
    if report is not None:
        from planner.cli.render.dataset import render_dataset

        render_dataset(report)


@click.command()
@click.argument("model")
@request_options
@stack_options
@click.option("--provider", default=None, help="Comma-separated providers (aws,gcp,azure,lambda,runpod).")
@click.option("--max-price-per-hour", type=float, default=None, help="Skip instances above this USD/hour.")
@click.option("--prices", type=click.Path(dir_okay=False), default=None,
              help="Price file merged over the catalogue (also $LORAPLAN_INSTANCES).")
@click.option("--all", "show_all", is_flag=True, help="Also list instances where nothing fits (text output).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def instances(model: str, provider: str | None, max_price_per_hour: float | None, prices: str | None,
              show_all: bool, as_json: bool, **values: Any) -> None:
    """Where to run MODEL's fine-tuning: each cloud instance's best plan, time and cost, cheapest first."""
    stack = _stack_request(values)
    report = recommender.plan_instances(
        model, request=_request(values, stack), prices=prices,
        providers=provider.split(",") if provider is not None else None, max_price_per_hour=max_price_per_hour,
    )
    if as_json:
        emit_json(report.model_dump(mode="json"))
        return
    from planner.cli.render.recommend import render_instances  # rich: text output only

    render_instances(report, show_all=show_all)
