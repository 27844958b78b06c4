"""Single-agent evaluation of models (students, their base) on the same held-out questions.

Each model's answers are generated through the resumable generate stage (greedy, one agent), so an
interrupted evaluation continues where it stopped and an unchanged model is not re-run; a student
retrained in place is re-run because its manifest fingerprint is part of the run's settings.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentark.config import GenerateConfig
from agentark.distill.training import read_manifest
from agentark.evaluate.metrics import Pricing
from agentark.evaluate.run import EvalResult
from agentark.mas.generate import generate
from agentark.tasks import get_task
from agentark.traces import read_traces


def base_model_of(model: str) -> str | None:
    """The model a distilled student started from (from its manifest), or None for other models."""
    manifest = read_manifest(model) if Path(model).is_dir() else None
    return (manifest or {}).get("base_model")


def model_label(model: str) -> str:
    """A short, path-safe name for a model in tables and eval directories."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model.rstrip("/").split("/")[-1] if Path(model).exists() else model)


def evaluate_models(
    models: list[str],
    out: str | Path,
    task: str = "arithmetic",
    task_options: dict[str, Any] | None = None,
    split: str = "held-out",
    n: int = 50,
    max_new_tokens: int = 256,
    engine: str = "hf",
    engine_options: dict[str, Any] | None = None,
    batch_size: int = 32,
    chunk_size: int = 16,
    backend: str = "local",
    workers: int = 2,
    pricing: Pricing | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> list[EvalResult]:
    """Greedy single-agent answers of every model on the first ``n`` items of ``split`` (``backend="ray"``:
    chunks over ``workers`` Ray actors, as ``agentark generate --backend ray``)."""
    results = []
    for model in models:
        label = model_label(model)
        manifest = read_manifest(model) if Path(model).is_dir() else None
        config = GenerateConfig(
            task=task, task_options=task_options or {}, split=split, n=n, system="single", model=model,
            model_revision=(manifest or {}).get("fingerprint", ""), engine=engine, engine_options=engine_options or {},
            temperature=0.0, max_new_tokens=max_new_tokens, batch_size=batch_size, chunk_size=chunk_size,
            backend=backend, workers=workers, out=str(Path(out) / label),
        )
        store = generate(config, on_progress=(lambda d, t, label=label: on_progress(label, d, t)) if on_progress else None)
        by_id = {t.item_id: t for t in read_traces(store.path)}
        traces = [by_id[item.id] for item in get_task(task, **(task_options or {})).items(split, n)]
        # Every question of a chunk waits for the chunk's one batch, so the summed per-question
        # latencies divided by the chunk size is the wall time the run took (also after a resume).
        wall = sum(t.round_turns(0)[0].latency_s for t in traces) / min(chunk_size, len(traces))
        results.append(EvalResult.from_traces(label, traces, wall_time_s=wall, pricing=pricing))
    return results
