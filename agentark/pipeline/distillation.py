"""The distill stage: one strategy's student from one run's traces (``agentark distill`` and the pilot).

Cached like every stage (:func:`~agentark.pipeline.cache.run_stage`): the fingerprint is the
strategy's settings (its registry identity, paths left out) and the hash of the traces file, so a
student is retrained exactly when its settings or its data changed, also in a moved run root. A
crash mid-training leaves the stage incomplete, so the next call trains again (from the last
checkpoint where ``save_steps`` is set). The trainer's ``manifest.json`` names the finished weights;
its fingerprint (settings + training samples) is what the evaluations downstream are keyed on.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentark.config import stable_hash
from agentark.distill.registry import get_strategy
from agentark.distill.training import NO_HOOKS, TrainHooks, read_manifest
from agentark.pipeline.cache import free_memory, run_stage
from agentark.traces.store import TRACES_FILE, read_traces

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Distilled:
    """What the stage made: a student (``path``, its manifest ``fingerprint``) or why it made none."""

    strategy: str
    path: Path | None
    fingerprint: str | None
    cached: bool
    skipped: str | None = None


def traces_fingerprint(traces: str | Path) -> str:
    """The content of a run's traces file (a moved or copied run keeps it; one more question changes it)."""
    path = Path(traces)
    path = path / TRACES_FILE if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no traces at {path}: give a run directory made by `agentark generate` "
                                f"(or its {TRACES_FILE})")
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def stage_fingerprint(strategy: str, config: Any, traces: str | Path) -> str:
    """The distill stage's fingerprint: the strategy's settings and the traces' content."""
    return stable_hash({**get_strategy(strategy).identity(config), "traces": traces_fingerprint(traces)})


def distill(strategy: str, config: Any, traces: str | Path, hooks: TrainHooks = NO_HOOKS) -> Distilled:
    """Train ``strategy``'s student with ``config`` on ``traces``, unless the same one is already there
    (``config.force`` retrains). A strategy whose data builder keeps no sample from these traces is
    skipped with the reason, not an error: the pilot reports it and goes on with the others."""
    spec = get_strategy(strategy)
    fingerprint = stage_fingerprint(strategy, config, traces)
    out = Path(config.out)

    def train() -> dict[str, Any]:
        reason = spec.empty(config, list(read_traces(traces)))
        if reason:
            logger.warning("distill %s skipped: %s", strategy, reason)
            return {"skipped": reason}
        path = spec.train(config, Path(traces), hooks)
        free_memory()
        return {"fingerprint": read_manifest(path)["fingerprint"]}

    # force retrains in place: checkpoints and the old manifest are the trainer's
    record = run_stage(f"distill:{strategy}", fingerprint, out, train, config=config.model_dump(mode="json"),
                       force=getattr(config, "force", False))
    if "skipped" in record.result:
        return Distilled(strategy, None, None, record.cached, skipped=record.result["skipped"])
    return Distilled(strategy, out, record.result["fingerprint"], record.cached)
