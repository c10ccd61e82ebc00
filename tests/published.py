"""Map rows of ../shared/validation/published.csv onto loraplan specs and compare.

Only rows whose model loraplan ships (or whose shapes are identical to a shipped profile: LLaMA-1
7B/13B have Llama-2 7B/13B shapes) and whose conditions are stated are compared. Counters are
compared like with like: ``max_allocated`` -> ``peak_gib.allocated``, ``max_reserved`` ->
``peak_gib.reserved``, anything read off nvidia-smi or unnamed -> ``peak_gib.device``.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from planner.estimator import estimate
from planner.specs import Attn, DType, Method, Optim, TrainSpec
from planner.stack.resolve import resolve_stack
from planner.stack.stack import Stack

CSV = Path(__file__).resolve().parents[1].parent / "shared" / "validation" / "published.csv"
SHIPPED = Path(__file__).resolve().parent / "data" / "published_single_gpu.csv"

MODEL_MAP = {
    "meta-llama/Llama-2-7b-hf": "llama-2-7b",
    "meta-llama/Llama-2-13b-hf": "llama-2-13b",
    "meta-llama/Llama-2-70b-hf": "llama-2-70b",
    "meta-llama/Meta-Llama-3-8B": "llama-3-8b",
    "meta-llama/Meta-Llama-3-8B-Instruct": "llama-3-8b",
    "meta-llama/Llama-3.1-8B-Instruct": "llama-3.1-8b",
    "meta-llama/Llama-3.1-70B-Instruct": "llama-3.1-70b",
    "meta-llama/Llama-3.2-1B": "llama-3.2-1b",
    "meta-llama/Llama-3.2-3B": "llama-3.2-3b",
    "mistralai/Mistral-7B-v0.1": "mistral-7b",
    "tiiuae/falcon-7b": "falcon-7b",
    "google/gemma-2-9b": "gemma-2-9b",
    "google/gemma-7b": "gemma-7b",
    "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T": "tinyllama-1.1b",
    "microsoft/Phi-3-mini-4k-instruct": "phi-3-mini",
    # LLaMA-1 has the Llama-2 shapes (same dims, layers and 32000 vocab).
    "decapoda-research/llama-7b-hf": "llama-2-7b",
    "decapoda-research/llama-13b-hf": "llama-2-13b",
}

FUSED_QKV = {"falcon-7b": "query_key_value", "phi-3-mini": "qkv_proj"}

# Frameworks whose step is the one loraplan models (transformers + PEFT + bitsandbytes + Trainer).
HF_STACK = ("peft", "blog", "unsloth")


@dataclass(frozen=True)
class Row:
    source: str
    model: str
    profile: str
    train: TrainSpec
    gpu: str
    counter: str  # allocated | reserved | device | fit
    measured_gib: float | None
    notes: str
    stack: str = "trainer"
    """``--framework`` the row's source ran (shipped copy's ``stack`` column; else the HF Trainer)."""
    versions: str = ""
    """``--versions`` of that run (empty: the newest modelled)."""
    status: str = "modelled"

    @property
    def framework(self) -> str:
        return self.source.split(":")[0]


def _int(text: str) -> int | None:
    m = re.match(r"\s*(?:<=)?\s*(\d+)", text)
    return int(m.group(1)) if m else None


def _targets(text: str) -> tuple[str, ...] | None:
    t = text.lower()
    if t.startswith("q,v") and "+" not in t:
        return ("q_proj", "v_proj")
    if t.startswith("q,k,v") and "+" not in t and "o" not in t.split(",")[3:]:
        return ("q_proj", "k_proj", "v_proj")
    if t.startswith("all") or "mlp" in t or t == "all-linear":
        return ("all-linear",)
    return None


def _optim(text: str, method: Method) -> Optim | None:
    t = text.lower()
    if "paged" in t:
        return Optim.PAGED_ADAMW_8BIT if "8" in t else Optim.PAGED_ADAMW
    if "8-bit" in t or "8bit" in t:
        return Optim.ADAMW_8BIT
    if "sgd" in t:
        return Optim.SGD
    if "adamw" in t:
        return Optim.ADAMW
    return None


def _counter(kind: str) -> str:
    k = kind.lower()
    if "fit/oom" in k:
        return "fit"
    if "max_allocated" in k or "active" in k:
        return "allocated"
    if "reserved" in k or "torchtune log" in k:
        return "reserved"  # torchtune logs torch.cuda peak reserved
    return "device"


def load_rows(path: Path | None = None) -> list[Row]:
    """Rows with a shipped model and fully stated conditions (single GPU), from ``path`` (default: the shared
    CSV; ``SHIPPED`` is its single-GPU copy with ``stack``/``versions``/``status`` columns, comment lines ``#``)."""
    rows = []
    lines = [line for line in (path or CSV).read_text().splitlines() if not line.startswith("#")]
    for r in csv.DictReader(lines):
        profile = MODEL_MAP.get(r["model"])
        if profile is None or "SUSPECT" in r["notes"] or "FSDP" in r["gpu"] or "x" in r["gpu"].split("x")[0][:1]:
            continue
        if not r["gpu"].startswith("1x"):
            continue
        method = {"lora": Method.LORA, "qlora": Method.QLORA, "full": Method.FULL}.get(r["method"].split()[0].lower())
        mb, seq = _int(r["micro_batch"]), _int(r["seq_len"])
        optim = _optim(r["optimizer"], method) if method else None
        targets = _targets(r["targets"]) if method is not Method.FULL else ("all-linear",)
        hf_defaults = r["source"].split(":")[0] in HF_STACK and r["targets"].strip() == "n/s"
        if hf_defaults:
            # Unstated adapter settings on the HF stack: PEFT's defaults (r=8, Llama targets q_proj/v_proj
            # from TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING).
            targets = ("q_proj", "v_proj")
        if targets == ("q_proj", "v_proj") and profile in FUSED_QKV:
            targets = (FUSED_QKV[profile],)  # q and v live in one fused projection
        rank = _int(r["rank"]) or 8
        ckpt = r["grad_ckpt"].lower().startswith("yes")
        if None in (method, mb, seq, optim, targets) or r["grad_ckpt"].lower().startswith("n/s"):
            continue
        if "torchao" in r["base_dtype"] or "offload" in r["grad_ckpt"] or "in bwd" in r["optimizer"]:
            continue  # not the bitsandbytes / PEFT step
        blog_2023 = r["source"].startswith("blog:") and r["attn"].strip() == "n/s"
        ga = re.search(r"GA (\d+)", r["notes"])
        train = TrainSpec(
            # transformers <= 4.35 (mid-2023, the HF 4-bit blog) had only eager attention for Llama.
            attn=Attn.EAGER if blog_2023 else Attn.SDPA,
            dtype=DType.FP16 if "fp16 compute" in r["base_dtype"] else DType.BF16,
            grad_accum=int(ga.group(1)) if ga else 1,
            method=method,
            rank=rank,
            alpha=2.0 * rank,
            targets=targets,
            lora_dropout=0.05,
            micro_batch=mb,
            seq_len=seq,
            grad_ckpt=ckpt,
            optim=optim,
            double_quant="dq" in r["base_dtype"],
            fp32_master="fp32 master" in r["base_dtype"],
            optimizer_in_backward="optimizer_in_bwd" in r["optimizer"],  # torchtune's full low-memory configs
        )
        peak = r["peak_gib"].strip()
        value = float(re.match(r"[\d.]+", peak).group(0)) if peak else None
        gpu = r["gpu"].split("x", 1)[1].split("-")[0].strip().lower()
        gpu = {"a100": "a100-40gb" if "40" in r["gpu"] else "a100-80gb"}.get(gpu, gpu)
        rows.append(Row(r["source"], r["model"], profile, train, gpu, _counter(r["measure_kind"]), value, r["notes"],
                        r.get("stack") or "trainer", r.get("versions") or "", r.get("status") or "modelled"))
    return rows


def row_stack(row: Row) -> Stack:
    """The stack the row's source ran (``--framework``/``--versions`` as the CLI resolves them)."""
    versions = dict(item.split("=", 1) for item in row.versions.split(",") if item)
    return resolve_stack(row.stack, versions, detect=False).stack


def compare(row: Row, stacked: bool = False) -> tuple[float | None, bool | None]:
    """(estimate in the row's counter, whether the estimate says it fits the row's GPU); with ``stacked``, on
    the row's own stack, with the kbit-prepare that stack implies (as ``--framework`` sets it in the CLI)."""
    if stacked:
        stack = row_stack(row)
        train = row.train
        if train.method is Method.QLORA:
            train = train.model_copy(update={"kbit_prepare": stack.kbit_prepare.calls_prepare})
        est = estimate(row.profile, train, row.gpu, stack=stack)
    else:  # the default stack has no optimizer-in-backward (torchtune's): its step after backward
        est = estimate(row.profile, row.train.model_copy(update={"optimizer_in_backward": False}), row.gpu)
    if row.counter == "fit":
        return None, est.fits
    value = {"allocated": est.peak_gib.allocated, "reserved": est.peak_gib.reserved, "device": est.peak_gib.device}
    return value[row.counter], est.fits
