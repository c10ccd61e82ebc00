"""Build the :class:`~planner.stack.stack.Stack` a user runs from a framework, library versions and loss choices.

Data: ``profiles/stacks/behaviours.json`` (library behaviours keyed by version ranges) and
``profiles/stacks/frameworks.json`` (per framework: the behaviours it sets over the libraries', the losses
and Liger it allows, the newest modelled versions). Versions come from ``--versions``, else from package
metadata (:func:`planner.stack.versions.installed_versions`), else the newest modelled ones. The trainer
framework at the versions of ``trainer-transformers5.json`` resolves to that profile itself, so default
outputs are the trace-verified ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from functools import cache
from typing import Any

from planner.catalog import _read_json, profiles_dir
from planner.errors import PlannerError, unknown
from planner.stack.stack import DEFAULT_STACK, Behaviour, Stack, load_stack, register_stack
from planner.stack.versions import _cmp, installed_versions, release, satisfies

DEFAULT_FRAMEWORK = "trl"
"""The framework the CLI assumes without ``--framework``: TRL's ``SFTTrainer``, the path most fine-tuning guides and
loraplan's own ``recommend`` snippets use (issue 8)."""

CORE_LIBRARIES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate")


class Framework(str, Enum):
    TRAINER = "trainer"
    TRL = "trl"
    UNSLOTH = "unsloth"
    AXOLOTL = "axolotl"
    TORCHTUNE = "torchtune"
    LITGPT = "litgpt"


class LossChoice(str, Enum):
    """``--loss``: the loss path where the framework allows a choice."""

    FULL = "full"
    CHUNKED = "chunked"
    FUSED = "fused"
    CCE = "cce"


@dataclass(frozen=True)
class Resolution:
    """A resolved stack, whether its versions were detected, and the warnings resolving it raised."""

    stack: Stack
    detected: bool
    warnings: tuple[str, ...]


@cache
def _behaviours() -> dict[str, Any]:
    return _read_json(profiles_dir() / "stacks" / "behaviours.json")["behaviours"]


@cache
def _frameworks() -> dict[str, Any]:
    return _read_json(profiles_dir() / "stacks" / "frameworks.json")


def newest_versions() -> dict[str, str]:
    """The newest version of each library loraplan models."""
    return dict(_frameworks()["newest"])


def _pick(name: str, variants: list[dict[str, Any]], versions: dict[str, str], warnings: list[str]) -> Behaviour | None:
    """The first variant whose ``when`` ranges hold; outside every range, the nearest one (with a warning).
    None where that variant's value is null (a framework override that defers to the library)."""
    for v in variants:
        if all(satisfies(versions[lib], spec) for lib, spec in v["when"].items()):
            return _behaviour(v)
    # Variants are listed newest first: a version above the newest modelled takes the first, else the last.
    libs = sorted({lib for v in variants for lib in v["when"]})
    newer = any(_cmp(release(versions[lib]), release(newest_versions()[lib])) > 0 for lib in libs)
    v = variants[0] if newer else variants[-1]
    warnings.append(f"{name}: {', '.join(f'{lib} {versions[lib]}' for lib in libs)} is outside every modelled range; "
                    f"assuming the nearest ({_spec_text(v['when'])}: {v['value'] or 'the library behaviour'})")
    return _behaviour(v)


def _behaviour(variant: dict[str, Any]) -> Behaviour | None:
    if variant["value"] is None:
        return None
    return Behaviour(value=variant["value"], holds_for=_spec_text(variant["when"]), source=variant["source"])


def _traced_entry(framework: str, versions: dict[str, str]) -> dict[str, Any] | None:
    """The frameworks.json ``traced_stacks`` entry whose suite runs ``framework`` at ``versions``, if any."""
    for entry in _frameworks()["traced_stacks"]["value"]:
        if entry["framework"] == framework and all(satisfies(versions[lib], spec)
                                                    for lib, spec in entry["when"].items()):
            return entry
    return None


def _spec_text(when: dict[str, str]) -> str:
    return ", ".join(f"{lib}{spec}" for lib, spec in when.items()) or "all modelled versions"


def _range_warnings(named: dict[str, str]) -> list[str]:
    """A named version newer (by minor release) than the newest modelled, or older than the oldest."""
    newest, oldest = newest_versions(), _frameworks()["oldest"]
    out = []
    for lib, v in named.items():
        if lib in newest and _cmp(release(v)[:2], release(newest[lib])[:2]) > 0:
            out.append(f"{lib} {v} is newer than loraplan models ({newest[lib]}); assuming {newest[lib]}'s behaviour")
        elif lib in oldest and _cmp(release(v), release(oldest[lib])) < 0:
            out.append(f"{lib} {v} is older than loraplan models ({oldest[lib]}); assuming {oldest[lib]}'s behaviour")
    return out


def framework_choices(framework: str) -> tuple[tuple[str, ...], bool]:
    """The ``--loss`` values ``framework`` offers and whether it can use ``--liger``."""
    fw = _frameworks()["frameworks"][framework]
    return tuple(fw["losses"]), bool(fw["liger"])


def framework_names() -> list[str]:
    return [f.value for f in Framework]


def resolve_stack(framework: str = DEFAULT_FRAMEWORK, versions: dict[str, str] | None = None,
                  liger: bool = False, loss: LossChoice | str | None = None, detect: bool = True) -> Resolution:
    """The stack for ``framework`` at ``versions`` (named ones win; else detected if ``detect``; else newest).

    Raises:
        PlannerError: an unknown framework (closest suggested), ``--liger`` or a ``--loss`` the framework
            cannot use.
    """
    frameworks = _frameworks()["frameworks"]
    if framework not in frameworks:
        raise unknown("framework", framework, list(frameworks))
    fw = frameworks[framework]
    loss = LossChoice(loss) if loss is not None else None
    if liger and not fw["liger"]:
        raise PlannerError(f"--liger: {framework} cannot use Liger kernels (frameworks that can: "
                           f"{', '.join(k for k, v in frameworks.items() if v['liger'])})")
    if loss is not None and loss.value not in fw["losses"]:
        raise PlannerError(f"--loss {loss.value}: {framework} offers {', '.join(fw['losses'])}")
    if liger and loss is not None and loss is not LossChoice.FUSED:
        raise PlannerError(f"--liger replaces the loss with its fused linear cross-entropy; drop --loss {loss.value}")
    named = dict(versions or {})
    wanted = (*CORE_LIBRARIES, fw["library"], *(("liger-kernel",) if liger else ()))
    wanted = tuple(dict.fromkeys(wanted))
    found = installed_versions(tuple(lib for lib in wanted if lib not in named)) if detect and not named else {}
    merged = {**newest_versions(), **found, **named}
    warnings = _range_warnings(named)
    behaviours = {name: _pick(name, variants, merged, warnings) for name, variants in _behaviours().items()}
    for name, variants in fw["overrides"].items():
        picked = _pick(f"{framework} {name}", variants, merged, warnings)
        if picked is not None:  # a null override: the framework leaves that behaviour to the library
            behaviours[name] = picked
    choice = "liger" if liger else (loss.value if loss not in (None, LossChoice.FULL) else None)
    # The framework's own (first) loss choice is its loss override when it has one (unsloth's fused CE,
    # litgpt's 128-token chunked head, torchtune's 8 chunks): keep that, not the generic choice.
    own = choice == fw["losses"][0] and "loss" in fw["overrides"]
    if choice is not None and not own:
        c = _frameworks()["choices"][choice]
        behaviours["loss"] = Behaviour(value=c["value"], holds_for=f"--{'liger' if liger else 'loss ' + choice}",
                                       source=c["source"])
    stack_versions = {lib: merged[lib] for lib in wanted}
    default = load_stack(DEFAULT_STACK)
    if (framework == default.framework and not liger and loss in (None, LossChoice.FULL)
            and all(default.versions.get(k) == v for k, v in stack_versions.items() if k in default.versions)
            and {k: b.value for k, b in behaviours.items()} == {k: b.value for k, b in default.behaviours.items()}):
        return Resolution(default, bool(found), tuple(warnings))
    name = framework + ("+liger" if liger else "") + (f"+loss={loss.value}" if loss else "") + ":" + ",".join(
        f"{k}={v}" for k, v in stack_versions.items())
    entry = _traced_entry(framework, merged) if fw["traced"] else None
    stack = Stack(name=name, framework=framework, description=fw["description"], versions=stack_versions,
                  behaviours=behaviours, date=_frameworks()["date"], traced=entry is not None,
                  untraced_methods=tuple(entry.get("untraced_methods", ())) if entry else ())
    return Resolution(register_stack(stack), bool(found), tuple(warnings))
