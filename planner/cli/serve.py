"""``loraplan serve``: thin click command over :func:`planner.serve.estimate.serve`."""

from __future__ import annotations

import click
from pydantic import ValidationError

from planner.cli.options import _choice, _positive_int, parse_targets
from planner.cli.output import emit_json
from planner.errors import PlannerError
from planner.serve.spec import Engine, KvDtype, Quant, ServeSpec
from planner.specs import DType

_DEFAULT = ServeSpec()


@click.command()
@click.argument("model")
@click.option("--gpu", "gpu", default=None, help="GPU profile name or alias (e.g. 4090, a100-80gb).")
@click.option("--dtype", type=click.Choice(["bf16", "fp16"], case_sensitive=False), default="bf16",
              show_default=True, help="Weight / compute dtype.")
@click.option("--quant", type=_choice(Quant), default="none", show_default=True,
              help="Stored weights: nf4 / int8 (bitsandbytes), awq / gptq (4-bit, group 128).")
@click.option("--adapters", type=click.IntRange(min=0), default=0, show_default=True,
              help="LoRA adapters resident on the GPU (vLLM: --max-loras).")
@click.option("--rank", type=int, default=_DEFAULT.rank, show_default=True, callback=_positive_int,
              help="LoRA rank r of each adapter.")
@click.option("--targets", default="all-linear", show_default=True,
              help="all-linear | attn | qv | comma-separated module names (HF; vLLM adapts every linear).")
@click.option("--merged/--no-merged", default=False, show_default=True,
              help="The one adapter is merged into the weights (no adapter memory).")
@click.option("--batch", type=int, default=_DEFAULT.batch, show_default=True, callback=_positive_int,
              help="Sequences served together (HF: static-cache batch; vLLM: concurrent sequences).")
@click.option("--context", type=int, default=_DEFAULT.context, show_default=True, callback=_positive_int,
              help="Tokens per sequence: prompt + generated (vLLM --max-model-len).")
@click.option("--engine", type=_choice(Engine), default="hf", show_default=True,
              help="hf = transformers generate, static cache; vllm = paged KV pool.")
@click.option("--kv-dtype", type=_choice(KvDtype), default="auto", show_default=True,
              help="KV cache dtype: auto (model dtype) or fp8 (vLLM only).")
@click.option("--gpu-memory-utilization", type=float, default=_DEFAULT.gpu_memory_utilization, show_default=True,
              help="vLLM: fraction of GPU memory the engine takes.")
@click.option("--prefill-chunk", type=int, default=None, callback=_positive_int,
              help="Tokens per prefill forward (vLLM --max-num-batched-tokens) [default: the engine's].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def serve(model: str, gpu: str | None, dtype: str, quant: str, adapters: int, rank: int, targets: str, merged: bool,
          batch: int, context: int, engine: str, kv_dtype: str, gpu_memory_utilization: float,
          prefill_chunk: int | None, as_json: bool) -> None:
    """Memory of serving MODEL: weights, adapters, KV cache, prefill; how many users and adapters fit."""
    from planner.serve.estimate import serve as serve_estimate

    if engine == "hf" and gpu_memory_utilization != _DEFAULT.gpu_memory_utilization:
        raise click.BadParameter("only --engine vllm reserves a fraction of GPU memory",
                                 param_hint="--gpu-memory-utilization")
    if not 0 < gpu_memory_utilization <= 1:
        raise click.BadParameter(f"must be in (0, 1], got {gpu_memory_utilization}",
                                 param_hint="--gpu-memory-utilization")
    try:
        spec = ServeSpec(dtype=DType(dtype.lower()), quant=Quant(quant), adapters=adapters, rank=rank,
                         targets=parse_targets(targets), merged=merged, batch=batch, context=context,
                         engine=Engine(engine), kv_dtype=KvDtype(kv_dtype),
                         gpu_memory_utilization=gpu_memory_utilization, prefill_chunk=prefill_chunk)
    except ValidationError as err:  # a combination the spec rejects: its own sentence, not pydantic's
        first = err.errors()[0]
        if first["type"] == "value_error" and not first["loc"]:
            raise PlannerError(str(first["ctx"]["error"])) from None
        raise
    est = serve_estimate(model, spec, gpu)
    if as_json:
        emit_json(est.model_dump(mode="json"))
    else:
        from planner.cli.render.serve import render_serve

        render_serve(est)
