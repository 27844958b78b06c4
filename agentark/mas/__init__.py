"""Multi-agent systems: ``single``, ``self_consistency``, ``debate``. See :func:`get_system`."""

from __future__ import annotations

import inspect

from agentark.mas.base import MultiAgentSystem, RunContext
from agentark.mas.debate import Debate
from agentark.mas.self_consistency import SelfConsistency
from agentark.mas.single import SingleAgent

SYSTEMS: dict[str, type[MultiAgentSystem]] = {
    "single": SingleAgent,
    "self_consistency": SelfConsistency,
    "debate": Debate,
}
SYSTEM_NAMES = tuple(SYSTEMS)


def get_system(name: str, **options) -> MultiAgentSystem:
    """Build a system by name; options are its constructor arguments (e.g. ``agents=3, rounds=2``)."""
    if name not in SYSTEMS:
        raise ValueError(f"unknown system {name!r}; valid systems: {', '.join(SYSTEM_NAMES)}")
    cls = SYSTEMS[name]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = set(options) - accepted
    if unknown:
        raise ValueError(
            f"system {name!r} does not take {sorted(unknown)}; it takes {sorted(accepted) or 'no options'}"
        )
    return cls(**options)


__all__ = [
    "Debate",
    "MultiAgentSystem",
    "RunContext",
    "SYSTEMS",
    "SYSTEM_NAMES",
    "SelfConsistency",
    "SingleAgent",
    "get_system",
]
