"""The backbone registry: every installed distribution's entry points in the group `automl.backbones`.

An entry point names either a `Backbone` instance or a zero-argument callable returning one (a factory
keeps importing cheap). Its name must equal the backbone's `name`. The core `automl` distribution is
loaded first, then plugins in distribution-name order, so a plugin can never take over a core name.
A plugin that fails to import or to build its backbone, gives something that is not a `Backbone`, or
registers a name already taken is skipped: a `PluginWarning` is issued and the problem is listed in
`Registry.problems` (and by `automl backbones`); every other backbone keeps working.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points

from automl.backbones.base import Backbone
from automl.errors import InputError

ENTRY_POINT_GROUP = "automl.backbones"
CORE_DISTRIBUTION = "automl"


class PluginWarning(UserWarning):
    """A backbone plugin was skipped; the message says which, from which distribution, and why."""


@dataclass(frozen=True)
class Registered:
    """A backbone with the distribution that registered it."""

    backbone: Backbone
    distribution: str
    version: str
    entry_point: str
    """`module:attribute` the backbone came from."""


@dataclass(frozen=True)
class PluginProblem:
    """An entry point that was skipped, and why."""

    name: str
    distribution: str
    version: str
    entry_point: str
    reason: str


@dataclass
class Registry:
    backbones: dict[str, Registered] = field(default_factory=dict)
    problems: list[PluginProblem] = field(default_factory=list)

    def names(self) -> list[str]:
        return sorted(self.backbones)

    def get(self, name: str) -> Backbone:
        """The backbone called `name`; InputError naming the available ones (and skipped plugins) if none."""
        if name in self.backbones:
            return self.backbones[name].backbone
        skipped = [p for p in self.problems if p.name == name]
        hint = f"available backbones: {', '.join(self.names()) or 'none'}"
        if skipped:
            hint += f"; a plugin offering {name!r} was skipped: {skipped[0].reason}"
        raise InputError(f"unknown backbone {name!r}", hint=hint)


def _distribution(entry_point: EntryPoint) -> tuple[str, str]:
    dist = entry_point.dist
    return (dist.name, dist.version) if dist is not None else ("?", "?")


def _load(entry_point: EntryPoint) -> Backbone:
    """The entry point's backbone; any exception means a broken plugin (the caller reports it)."""
    target = entry_point.load()
    backbone = target if isinstance(target, Backbone) else target() if callable(target) else target
    if not isinstance(backbone, Backbone):
        raise TypeError(f"gave {type(backbone).__name__}, not an automl.backbones.base.Backbone")
    if backbone.name != entry_point.name:
        raise ValueError(f"entry point is named {entry_point.name!r} but its backbone is named {backbone.name!r}")
    return backbone


def discover(group: str = ENTRY_POINT_GROUP) -> Registry:
    """Load every entry point of `group` now (uncached); see the module docstring for the rules."""
    registry = Registry()
    found = sorted(
        entry_points(group=group),
        key=lambda ep: (_distribution(ep)[0] != CORE_DISTRIBUTION, _distribution(ep)[0].lower(), ep.name),
    )
    for entry_point in found:
        distribution, version = _distribution(entry_point)
        taken = registry.backbones.get(entry_point.name)
        if taken is not None:
            reason = f"name {entry_point.name!r} is already registered by {taken.distribution} {taken.version}"
        else:
            try:
                backbone = _load(entry_point)
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
            else:
                registry.backbones[backbone.name] = Registered(backbone, distribution, version, entry_point.value)
                continue
        problem = PluginProblem(entry_point.name, distribution, version, entry_point.value, reason)
        registry.problems.append(problem)
        warnings.warn(
            f"backbone plugin {entry_point.name!r} from {distribution} {version} skipped: {reason}",
            PluginWarning,
            stacklevel=2,
        )
    return registry


@functools.cache
def load_backbones() -> Registry:
    """The registry of this process, loaded once (`load_backbones.cache_clear()` reloads it)."""
    return discover()


def get_backbone(name: str) -> Backbone:
    """The registered backbone called `name`; InputError listing the available names otherwise."""
    return load_backbones().get(name)
