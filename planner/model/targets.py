"""LoRA target resolution: which modules of a layer a PEFT ``target_modules`` list selects, and the dropout PEFT allows.

Rules from peft v0.21.2 ``peft/tuners/tuners_utils.py`` (``check_target_module_exists``,
``_maybe_include_all_linear_layers``) and ``peft/tuners/lora/layer.py`` (``ParamWrapper``).
"""

from __future__ import annotations

from functools import cache

from planner.errors import PlannerError
from planner.model.architecture import Architecture, Linear, architecture
from planner.specs import ModelConfig


@cache
def resolve_targets(config: ModelConfig, targets: tuple[str, ...]) -> tuple[Linear, ...]:
    """The modules (and MoE parameters) of one layer that a PEFT ``target_modules`` list selects.

    Presets: ``all-linear`` (PEFT's own preset: every nn.Linear but the output head, plus, for
    transformers-5 MoE models, the router and expert tensors PEFT remaps), ``attn`` (attention
    projections), ``qv`` (q_proj and v_proj). Names match PEFT's rule: the module's full name
    equals the target or ends with ``.`` + target (``check_target_module_exists``).

    Raises:
        PlannerError: a target that matches no module, listing the modules that exist.
    """
    arch = architecture(config)
    names: list[str] = []
    for t in targets:
        if t == "all-linear":
            return arch.linears + arch.param_targets
        if t == "attn":
            names += arch.attn_targets
        elif t == "qv":
            if not arch.qv_targets:
                raise PlannerError(f"{config.model_type} has no separate q/v projections; modules: {_module_list(arch)}")
            names += arch.qv_targets
        else:
            names.append(t)
    chosen: list[Linear] = []
    for name in names:
        hits = [lin for lin in arch.linears if lin.path == name or lin.path.endswith("." + name) or lin.name == name]
        hits += [p for p in arch.param_targets if name in p.aliases]
        if not hits:
            raise PlannerError(f"target {name!r} matches no module of {config.model_type}; modules: {_module_list(arch)}")
        chosen += [h for h in hits if h not in chosen]
    fused = [p for p in arch.param_targets if len(p.aliases) > 1]
    for p in fused:
        named = [a for a in p.aliases if a in names]
        if named and len(named) < len(p.aliases):
            raise PlannerError(f"targets {', '.join(p.aliases)} are fused into {p.name}: target all of them or none")
    everything = arch.linears + arch.param_targets
    return tuple(lin for lin in everything if lin in chosen)


def dropout_allowed(config: ModelConfig, targets: tuple[str, ...]) -> bool:
    """False when ``targets`` include MoE expert tensors (PEFT ``ParamWrapper`` takes no dropout)."""
    return not any(lin.experts > 1 for lin in resolve_targets(config, targets))


def lora_dropout(config: ModelConfig, targets: tuple[str, ...], requested: float | None) -> float:
    """The LoRA dropout to use: ``requested``, or by default 0.05 (the QLoRA scripts' value for large
    models), except 0 where PEFT forbids dropout: ``ParamWrapper`` (MoE expert tensors) raises
    "does not work with lora_dropout != 0" (peft/tuners/lora/layer.py).

    Raises:
        PlannerError: a requested non-zero dropout on targets that PEFT cannot apply it to.
    """
    allowed = dropout_allowed(config, targets)
    if requested is None:
        return 0.05 if allowed else 0.0
    if requested > 0 and not allowed:
        raise PlannerError(
            "PEFT adapts MoE expert tensors with ParamWrapper, which requires --lora-dropout 0 "
            "(or use --targets attn to leave the experts alone)"
        )
    return requested


def peft_target_modules(config: ModelConfig, targets: tuple[str, ...]) -> list[str] | str:
    """What to pass as ``LoraConfig(target_modules=...)`` for ``targets``."""
    if "all-linear" in targets:
        return "all-linear"
    names: list[str] = []
    for lin in resolve_targets(config, targets):
        names += list(lin.aliases) if lin.aliases else [lin.path if _ambiguous(config, lin) else lin.name]
    return names


def _ambiguous(config: ModelConfig, lin: Linear) -> bool:
    return sum(other.name == lin.name for other in architecture(config).linears) > 1


def _module_list(arch: Architecture) -> str:
    names = [lin.name if sum(o.name == lin.name for o in arch.linears) == 1 else lin.path for lin in arch.linears]
    return ", ".join(names + [a for p in arch.param_targets for a in p.aliases])
