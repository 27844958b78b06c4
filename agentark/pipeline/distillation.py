"""The distill stage: one strategy's student from one run's traces (``agentark distill`` and the pilot).

A student directory's record is its trainer's ``manifest.json``, not a ``stage.json``: its
fingerprint covers the strategy's settings *and the hash of the training samples*, so the trainer
itself can tell a finished student from a stale one (also when called from Python, without this
stage), and a crash mid-training leaves no manifest, so the next call trains (from the last
checkpoint where ``save_steps`` is set).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentark.distill.registry import get_strategy
from agentark.distill.training import read_manifest
from agentark.pipeline.cache import free_memory
from agentark.traces.store import read_traces

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Distilled:
    """What the stage made: a student (``path``, its manifest ``fingerprint``) or why it made none."""

    strategy: str
    path: Path | None
    fingerprint: str | None
    cached: bool
    skipped: str | None = None


def distill_config(strategy: str, traces: str | Path, settings: dict[str, Any]) -> Any:
    """The strategy's typed config (its class from the registry) on ``traces``."""
    return get_strategy(strategy).config(traces, **settings)


def distill(strategy: str, config: Any, traces: str | Path,
            on_progress: Callable[[int, int], None] | None = None) -> Distilled:
    """Train (or keep, when up to date) ``strategy``'s student with ``config`` on ``traces``.

    A strategy whose data builder keeps no sample from these traces is skipped with the reason, not
    an error: the pilot reports it and goes on with the other strategies."""
    spec = get_strategy(strategy)
    reason = spec.empty(config, list(read_traces(traces)))
    if reason:
        logger.warning("distill %s skipped: %s", strategy, reason)
        return Distilled(strategy, None, None, cached=False, skipped=reason)
    before = (read_manifest(config.out) or {}).get("fingerprint")
    path = spec.train(config, Path(traces), on_progress)
    free_memory()
    fingerprint = (read_manifest(path) or {})["fingerprint"]
    return Distilled(strategy, path, fingerprint, cached=before == fingerprint)
