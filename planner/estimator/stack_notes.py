"""What an estimate says about its stack: the ``stack`` JSON object and the stack's warnings.

- the resolution's warnings (a version outside every modelled range, nearest assumed);
- an untraced stack (modelled from the cited sources, not run by the trace suite);
- a stack that moves the device peak by more than :data:`CHANGE_WARN_FRACTION` against the default stack.
"""

from __future__ import annotations

from collections.abc import Callable

from planner.results import Estimate
from planner.specs import Method, TrainSpec
from planner.stack.resolve import Resolution
from planner.stack.stack import default_stack

CHANGE_WARN_FRACTION = 0.10
"""Warn when the stack changes the device peak by more than this fraction against the default stack
(issue 8: "warns where the stack changes memory by more than 10% against the default")."""


def with_stack(est: Estimate, resolution: Resolution, on_default: Callable[[TrainSpec], Estimate]) -> Estimate:
    """``est`` with its ``stack`` object (``detected`` set) and the stack's warnings.

    Args:
        est: The estimate on ``resolution.stack``.
        resolution: The resolved stack.
        on_default: Estimates a spec on the default stack (for the >10% comparison).
    """
    stack = resolution.stack
    notes = list(resolution.warnings)
    default = default_stack()
    same = {k: b.value for k, b in stack.behaviours.items()} == {k: b.value for k, b in default.behaviours.items()}
    if not same:
        untraced = stack.untraced_note((est.train.method.value,))
        if untraced:
            notes.append(untraced)
        base_train = est.train
        if est.train.method is Method.QLORA and not est.train.kbit_prepare:
            base_train = est.train.model_copy(update={"kbit_prepare": True})
        if est.train.optimizer_in_backward:  # the default stack steps after backward (torchtune only has it)
            base_train = base_train.model_copy(update={"optimizer_in_backward": False})
        base = on_default(base_train)
        if base.peak_gib.device > 0:
            change = est.peak_gib.device / base.peak_gib.device - 1.0
            if abs(change) > CHANGE_WARN_FRACTION:
                why = _why(stack, default) + ("; optimizer_in_bwd" if est.train.optimizer_in_backward else "")
                notes.append(f"this stack changes the device peak by {100 * change:+.0f}% against {default.name} "
                             f"({base.peak_gib.device:.1f} GiB there, {est.peak_gib.device:.1f} GiB here): " + why)
    return est.model_copy(update={"stack": stack.ref(resolution.detected),
                                  "warnings": tuple(est.warnings) + tuple(notes)})


def _why(stack: object, default: object) -> str:
    """The behaviours that differ between ``stack`` and ``default``, as ``name value`` pairs."""
    mine, theirs = stack.behaviours, default.behaviours  # type: ignore[attr-defined]
    diff = [f"{k} {b.value} (not {theirs[k].value})" for k, b in mine.items() if k in theirs and theirs[k].value != b.value]
    return "; ".join(diff) or "same behaviours"
