"""What the user asked for (everything but the model and GPU), validated."""

from __future__ import annotations

from collections.abc import Iterable

from planner.errors import PlannerError, unknown
from planner.inputs import check_number
from planner.estimator.fits import DEFAULT_HEADROOM, check_headroom
from planner.recommender import rules
from planner.recommender.rules import Task
from planner.recommender.schemas import Dataset
from planner.specs import Frozen, Method
from planner.stack.resolve import framework_names
from planner.stack.stack import Stack, default_stack


class Request(Frozen):
    """What the user asked for (everything but the model and GPU)."""

    dataset_tokens: float | None = None
    examples: int | None = None
    avg_tokens: float | None = None
    seq_len: int = 2048
    effective_batch: int = 16
    epochs: float = 3.0
    task: Task = Task.INSTRUCTION
    headroom: float = DEFAULT_HEADROOM
    top: int = 3
    methods: tuple[Method, ...] = rules.METHOD_PREFERENCE
    stack: Stack | None = None
    """The training stack every candidate is estimated on (None: the default stack)."""
    stack_detected: bool = False
    """The stack's versions came from package metadata (the ``stack`` object's ``detected``)."""
    stack_warnings: tuple[str, ...] = ()
    """What resolving the stack warned (a version outside every modelled range)."""
    framework: str | None = None
    """The framework whose API the snippets use and whose trainer decides QLoRA casts; None: none given (the TRL
    ``SFTTrainer`` snippet, QLoRA searched with and without kbit-prepare)."""
    code_versions: dict[str, str] = {}
    """Library versions the snippets are written for, over the stack's (e.g. ``trl`` on a trainer stack)."""

    def resolved_stack(self) -> Stack:
        """The stack the plans assume (:attr:`stack`, else the default)."""
        return self.stack if self.stack is not None else default_stack()
    gpus: int = 1
    """GPUs to plan for (``--gpus``; one node at most)."""
    max_gpus: int | None = None
    """Search GPU counts up to this (``--max-gpus``; whole nodes beyond one), fewest first."""
    host_ram_gib: float | None = None
    """Host RAM per node for offloaded state (``--host-ram``; None: not checked)."""

    def tokens(self) -> float | None:
        """Training tokens per epoch: given, or examples x average tokens (capped at seq_len); None if unknown."""
        if self.dataset_tokens is not None:
            return self.dataset_tokens
        if self.examples is not None and self.avg_tokens is not None:
            return self.examples * min(self.avg_tokens, self.seq_len)
        return None

    def time_seq_len(self) -> int:
        """Sequence length the time model runs at: the average example when given (no padding), else seq_len."""
        if self.avg_tokens is not None:
            return max(1, min(self.seq_len, int(round(self.avg_tokens))))
        return self.seq_len

    def gpu_counts(self) -> list[int]:
        """GPU counts to search, fewest first: ``[gpus]``, or 1, 2, 4, 8, 16, ... up to ``max_gpus``."""
        if self.max_gpus is None:
            return [self.gpus]
        from planner.recommender.counts import gpu_counts

        return gpu_counts(self.max_gpus)

    def dataset(self) -> Dataset:
        """The dataset part of a result (``dataset`` in the JSON)."""
        return Dataset(tokens=self.tokens(), examples=self.examples, avg_tokens=self.avg_tokens, epochs=self.epochs)


def _check_dataset_size(dataset_tokens: float | None, examples: int | None, avg_tokens: float | None) -> None:
    if dataset_tokens is not None and (examples is not None or avg_tokens is not None):
        raise PlannerError("give either --dataset-tokens or --examples with --avg-tokens, not both")
    if (examples is None) != (avg_tokens is None):
        raise PlannerError("--examples and --avg-tokens go together (dataset tokens = examples x avg tokens)")


def _check_gpus(gpus: int, max_gpus: int | None) -> None:
    """``--gpus``: 1 to one node's GPUs; ``--max-gpus``: at least 1 and not below ``--gpus``."""
    from planner.recommender.counts import gpus_per_node

    node = gpus_per_node()
    if not isinstance(gpus, int) or isinstance(gpus, bool) or gpus < 1:
        raise PlannerError(f"--gpus must be a whole number of at least 1, got {gpus!r}")
    if gpus > node:
        raise PlannerError(f"--gpus {gpus} is more GPUs than one node has ({node}): use --max-gpus "
                           f"{-(-gpus // node) * node} to plan across nodes")
    if max_gpus is not None:
        if not isinstance(max_gpus, int) or isinstance(max_gpus, bool) or max_gpus < 1:
            raise PlannerError(f"--max-gpus must be a whole number of at least 1, got {max_gpus!r}")
        check_number("max_gpus", max_gpus, integer=True, label="--max-gpus")
        if max_gpus < gpus:
            raise PlannerError(f"--max-gpus {max_gpus} is fewer than --gpus {gpus}")


def make_request(
    *,
    dataset_tokens: float | None = None,
    examples: int | None = None,
    avg_tokens: float | None = None,
    seq_len: int = 2048,
    effective_batch: int = 16,
    epochs: float = 3.0,
    task: Task | str = Task.INSTRUCTION,
    headroom: float = DEFAULT_HEADROOM,
    top: int = 3,
    methods: Iterable[Method | str] | None = None,
    stack: Stack | None = None,
    stack_detected: bool = False,
    stack_warnings: Iterable[str] = (),
    framework: str | None = None,
    code_versions: dict[str, str] | None = None,
    gpus: int = 1,
    max_gpus: int | None = None,
    host_ram_gib: float | None = None,
) -> Request:
    """Validate user input into a :class:`Request` (one-line :class:`PlannerError` on bad input).

    ``stack`` (a resolved :class:`~planner.stack.stack.Stack`, e.g. from
    :func:`planner.stack.resolve.resolve_stack`) is what every candidate is estimated on; ``framework`` the
    framework the user named (the snippets use its API); ``code_versions`` versions the snippets follow
    where the stack names none.
    """
    _check_dataset_size(dataset_tokens, examples, avg_tokens)
    for name, value, integer in (("dataset_tokens", dataset_tokens, False), ("examples", examples, True),
                                 ("avg_tokens", avg_tokens, False), ("seq_len", seq_len, True),
                                 ("effective_batch", effective_batch, True), ("epochs", epochs, False),
                                 ("top", top, True)):
        check_number(name, value, integer=integer)  # finite, > 0, within profiles/limits.json
    headroom = check_headroom(headroom)
    _check_gpus(gpus, max_gpus)
    check_number("host_ram_gib", host_ram_gib, label="--host-ram")
    try:
        task = Task(task)
    except ValueError:
        raise PlannerError(f"unknown task {task!r}; choose from {', '.join(t.value for t in Task)}") from None
    if framework is not None and framework not in framework_names():
        raise unknown("framework", framework, framework_names())
    wanted = list(methods or ())
    try:
        chosen = tuple(Method(m) for m in wanted) if wanted else rules.METHOD_PREFERENCE
    except ValueError:
        raise PlannerError(f"unknown method in {wanted!r}; choose from {', '.join(m.value for m in Method)}") from None
    return Request(
        dataset_tokens=dataset_tokens, examples=examples, avg_tokens=avg_tokens, seq_len=seq_len,
        effective_batch=effective_batch, epochs=epochs, task=task, headroom=headroom, top=top, methods=chosen,
        stack=stack, stack_detected=stack_detected, stack_warnings=tuple(stack_warnings), framework=framework,
        code_versions=dict(code_versions or {}),
        gpus=gpus, max_gpus=max_gpus, host_ram_gib=host_ram_gib,
    )
