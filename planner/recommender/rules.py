"""Quality rules for ``loraplan recommend``: which plans are preferred, and the hyperparameters of a plan.

Every rule names its source. The recommender keeps memory and time physical (estimator, time model);
these rules only decide what counts as a good plan and the learning rate / rank / schedule it carries.
"""

from __future__ import annotations

import math
from enum import Enum

from planner.specs import Frozen, Method, Optim


class Task(str, Enum):
    CHAT = "chat"
    INSTRUCTION = "instruction"
    CODE = "code"
    MATH = "math"
    CLASSIFICATION = "classification"


class Source(Frozen):
    key: str
    title: str
    url: str


SOURCES: dict[str, Source] = {
    s.key: s
    for s in (
        Source(key="qlora", title="Dettmers et al. 2023, QLoRA: Efficient Finetuning of Quantized LLMs",
               url="https://arxiv.org/abs/2305.14314"),
        Source(key="qlora-scripts", title="artidoro/qlora scripts/finetune_guanaco_{7b,13b,33b,65b}.sh",
               url="https://github.com/artidoro/qlora/tree/main/scripts"),
        Source(key="lwr", title="Schulman et al. 2025, LoRA Without Regret (Thinking Machines Lab)",
               url="https://thinkingmachines.ai/blog/lora/"),
        Source(key="alpaca", title="Taori et al. 2023, Stanford Alpaca training recipe (README)",
               url="https://github.com/tatsu-lab/stanford_alpaca"),
        Source(key="rslora", title="Kalajdzievski 2023, A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA",
               url="https://arxiv.org/abs/2312.03732"),
        Source(key="lora", title="Hu et al. 2021, LoRA: Low-Rank Adaptation of Large Language Models",
               url="https://arxiv.org/abs/2106.09685"),
    )
}


# --------------------------------------------------------------------------- preference order

TARGET_PREFERENCE: tuple[str, ...] = ("all-linear", "attn", "qv")
"""Adapters on every linear layer first: the QLoRA paper found LoRA on all linear transformer-block
layers is needed to match full fine-tuning, and LoRA Without Regret that attention-only LoRA
underperforms, the MLP layers mattering most."""

METHOD_PREFERENCE: tuple[Method, ...] = (Method.LORA, Method.QLORA)
"""16-bit LoRA first (no quantization error, no dequantization time); QLoRA when LoRA does not fit -
NF4 QLoRA with adapters on all linear layers still matches 16-bit fine-tuning (QLoRA paper)."""

OPTIM_PREFERENCE: tuple[Optim, ...] = (Optim.ADAMW, Optim.ADAMW_8BIT, Optim.PAGED_ADAMW_8BIT, Optim.PAGED_ADAMW)
"""Exact fp32 AdamW first; bitsandbytes 8-bit state only when it is needed to fit; paged state last
(it can spill to host RAM and stall). The first optimizer that fits is kept: the others are dominated."""

TARGET_REASONS = {
    "all-linear": "adapters on all linear layers (attention and MLP): needed to match full fine-tuning "
    f"[{SOURCES['qlora'].title}; {SOURCES['lwr'].title}]",
    "attn": "attention-only adapters (q, k, v, o): attention-only LoRA underperforms all-layer LoRA, the MLP layers "
    f"mattering most [{SOURCES['lwr'].title}]",
    "qv": "q/v adapters only (the original LoRA setting [Hu et al. 2021]): expect lower quality than all-linear "
    f"[{SOURCES['lwr'].title}]",
}


def target_reason(targets: str, alternative_to: str | None = None) -> str:
    """Why these targets; ``alternative_to`` names better targets that also fit (this plan then ranks below)."""
    reason = TARGET_REASONS[targets]
    if targets == "all-linear":
        return reason
    if alternative_to:
        return f"{reason}; listed as an alternative: {alternative_to} also fits and ranks first"
    return f"{reason}; the only targets that fit"


# --------------------------------------------------------------------------- rank

RANK_LADDER: tuple[int, ...] = (8, 16, 32, 64, 128, 256)

# Dataset size (training tokens per epoch) -> rank. A loraplan heuristic, not a published table:
# LoRA Without Regret shows LoRA tracks full fine-tuning until the adapter runs out of capacity, low
# ranks (4-16) diverging first on large SFT sets (Tulu3, OpenThoughts3) and high ranks (256) tracking
# full fine-tuning there; for small-to-medium sets the rank barely matters (also QLoRA paper: "LoRA r is
# unrelated to final performance if LoRA is used on all layers", on instruction data). So rank grows with
# the dataset, starting at the common r=16.
RANK_BY_TOKENS: tuple[tuple[float, int], ...] = (
    (2e6, 8),
    (2e7, 16),
    (1e8, 32),
    (5e8, 64),
    (2e9, 128),
    (math.inf, 256),
)

TASK_RANK_STEPS = {
    Task.CLASSIFICATION: -1,  # narrow output: less to learn per token
    Task.CHAT: 0,
    Task.INSTRUCTION: 0,
    Task.CODE: 1,  # reasoning-heavy sets (OpenThoughts3 in LoRA Without Regret) need more capacity
    Task.MATH: 1,
}

RSLORA_MIN_RANK = 64


def recommended_rank(dataset_tokens: float | None, task: Task) -> tuple[int, str]:
    """Rank for the dataset size and task, with the reason."""
    if dataset_tokens is None:
        base, size = 16, "dataset size not given: the common r=16"
    else:
        base = next(r for limit, r in RANK_BY_TOKENS if dataset_tokens < limit)
        size = f"{dataset_tokens / 1e6:,.1f}M tokens"
    i = RANK_LADDER.index(base) + TASK_RANK_STEPS[task]
    rank = RANK_LADDER[max(0, min(len(RANK_LADDER) - 1, i))]
    why = (
        f"rank {rank} for {size} ({task.value}): rank sized to the dataset - LoRA matches full fine-tuning until "
        f"the adapter's capacity is exhausted [{SOURCES['lwr'].title}]; loraplan's size->rank table is a heuristic"
    )
    return rank, why


def alpha_for(rank: int) -> float:
    """lora_alpha = 2 x rank (the scale alpha/r = 2 stays constant across ranks)."""
    return 2.0 * rank


def rslora_note(rank: int) -> str | None:
    if rank < RSLORA_MIN_RANK:
        return None
    return (
        f"r={rank}: consider use_rslora=True (scale alpha/sqrt(r)) so updates do not shrink with rank "
        f"[{SOURCES['rslora'].title}]; if you switch it on, retune alpha (alpha/sqrt(r) = 2 gives alpha = {2 * math.sqrt(rank):.0f})"
    )


# --------------------------------------------------------------------------- learning rate and schedule

# Full fine-tuning learning rate by model size (billions of parameters). 2e-5 for 7B-class models is
# the Stanford Alpaca recipe; larger models take smaller rates - the QLoRA scripts halve the LoRA rate
# from 2e-4 (7B, 13B) to 1e-4 (33B, 65B).
FULL_FT_LR: tuple[tuple[float, float], ...] = ((20.0, 2e-5), (math.inf, 1e-5))
LORA_LR_MULTIPLIER = 10.0
"""LoRA's optimal learning rate is about 10x full fine-tuning's (LoRA Without Regret)."""

WARMUP_RATIO = 0.03
"""Alpaca recipe and the QLoRA scripts: warmup over 3% of steps."""
SCHEDULER = "cosine"
"""Alpaca recipe (cosine decay). The QLoRA scripts used a constant rate; cosine is the common default."""


def learning_rate(method: Method, params_b: float) -> tuple[float, str]:
    full = next(lr for limit, lr in FULL_FT_LR if params_b < limit)
    if method is Method.FULL:
        return full, (
            f"learning rate {full:g}: full fine-tuning rate for a {params_b:.1f}B model "
            f"[{SOURCES['alpaca'].title}: 2e-5 for 7B]"
        )
    lr = full * LORA_LR_MULTIPLIER
    return lr, (
        f"learning rate {lr:g} = 10x the full fine-tuning rate ({full:g}) [{SOURCES['lwr'].title}]; "
        f"matches the QLoRA scripts (2e-4 up to 13B, 1e-4 for 33B/65B) [{SOURCES['qlora-scripts'].title}]"
    )


def lora_dropout(params_b: float) -> float:
    """QLoRA paper / scripts: dropout 0.1 up to 13B, 0.05 for 33B and 65B."""
    return 0.1 if params_b < 20.0 else 0.05


def schedule_reason() -> str:
    return (
        f"{SCHEDULER} schedule with {WARMUP_RATIO:.0%} warmup [{SOURCES['alpaca'].title}; warmup 0.03 also in "
        f"{SOURCES['qlora-scripts'].title}]"
    )


EFFECTIVE_BATCH_NOTE = (
    "effective batch {batch}: LoRA tolerates large batches less well than full fine-tuning "
    f"[{SOURCES['lwr'].title}]; 16 is the QLoRA scripts' batch (4 x 4)"
)
