"""Run one system over evaluation items and time it; bundle its traces with their metrics.

Every system in a comparison (base model, self-consistency, debate, students) is run on the *same*
items through this function, so accuracies pair item by item and wall times are measured alike.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from pydantic import BaseModel

from agentark.evaluate.metrics import Pricing, SystemMetrics, compute_metrics
from agentark.mas.base import MultiAgentSystem, RunContext
from agentark.tasks.base import Item
from agentark.traces.schema import QuestionTrace

logger = logging.getLogger(__name__)


def evaluate_system(system: MultiAgentSystem, ctx: RunContext, items: Sequence[Item],
                    batch_size: int = 16) -> tuple[list[QuestionTrace], float]:
    """Traces of ``system`` on ``items`` (in order) and the wall time of the whole run in seconds.

    Questions go in batches of ``batch_size`` (each round of a batch is one engine call, all agents x
    questions), the way a deployment would serve them; the wall time covers every batch and is what
    throughput and GPU-hour cost are computed from.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    traces: list[QuestionTrace] = []
    start = time.perf_counter()
    for first in range(0, len(items), batch_size):
        traces.extend(system.run(ctx, list(items[first : first + batch_size])))
    wall_time_s = time.perf_counter() - start
    logger.info("%s on %d items: %.1f s", system.name, len(items), wall_time_s)
    return traces, wall_time_s


class EvalResult(BaseModel):
    """One evaluated system under its report name (e.g. ``"student-rsft"``): traces, wall time, metrics."""

    name: str
    traces: list[QuestionTrace]
    wall_time_s: float
    metrics: SystemMetrics

    @classmethod
    def from_traces(cls, name: str, traces: Sequence[QuestionTrace], wall_time_s: float,
                    pricing: Pricing | None = None) -> EvalResult:
        metrics = compute_metrics(traces, pricing, wall_time_s=wall_time_s, name=name)
        return cls(name=name, traces=list(traces), wall_time_s=wall_time_s, metrics=metrics)
