"""The generate stage: a system over a task's questions, saved chunk by chunk, resumable.

Questions go through the system in chunks (every agent x question of a chunk's round is one engine
call); each finished chunk is appended to the trace store before the next starts. Killing the run
loses at most the chunk in flight, and re-running the same command skips finished ids. The wall time
of the chunks is measured and kept in ``wall.json`` (summed over resumptions), so an evaluation made
through this stage reports the time it took, not an estimate.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from agentark.engines import Engine, close_engine, get_engine
from agentark.mas import MultiAgentSystem, get_system
from agentark.pipeline.cache import EngineSlot, StageRecord, check_stage, run_stage
from agentark.pipeline.chunk import GenerateConfig, run_chunk
from agentark.pipeline.ray import run_on_ray
from agentark.tasks import Task, get_task
from agentark.tasks.base import Item
from agentark.traces.schema import QuestionTrace
from agentark.traces.store import TRACES_FILE, TraceStore, read_json, write_json_atomic

logger = logging.getLogger(__name__)

WALL_FILE = "wall.json"


def run_chunks(config: GenerateConfig, task: Task, system: MultiAgentSystem, engine: Engine,
               chunks: list[list[Item]]) -> Iterator[list[QuestionTrace]]:
    """Every chunk's traces, in order. A round of a chunk waits for its longest answer, decoded at a
    batch of one or two while the other slots idle; an engine that serves concurrent calls
    (``thread_safe``: llamacpp, openai) therefore gets ``chunks_in_flight`` chunks at once, so those slots decode
    the next chunk's turns. No more than that many run, and an error stops the rest."""
    depth = config.chunks_in_flight if getattr(engine, "thread_safe", False) else 1
    if depth == 1:
        yield from (run_chunk(config, task, system, engine, chunk) for chunk in chunks)
        return
    with ThreadPoolExecutor(max_workers=depth, thread_name_prefix="chunk") as pool:
        pending: deque[Future[list[QuestionTrace]]] = deque()
        for chunk in chunks:
            pending.append(pool.submit(run_chunk, config, task, system, engine, chunk))
            if len(pending) == depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def generate(
    config: GenerateConfig,
    engine: Engine | EngineSlot | None = None,
    task: Task | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    *,
    items: list[Item] | None = None,
    system: MultiAgentSystem | None = None,
    fingerprint: str | None = None,
    on_change: Literal["refuse", "rerun"] = "refuse",
) -> StageRecord:
    """Run ``config.system`` on ``config.questions``, appending to ``<out>/traces.jsonl``.

    Returns the stage's record: ``result`` holds ``questions`` (stored) and ``wall_time_s`` (measured
    over every run of the stage), ``cached`` says that nothing was left to generate.

    The evaluation stage runs its jobs through here too, with their own ``items`` (perturbed ones),
    ``system`` (the review probe), a ``fingerprint`` that also covers those, and the ``rerun`` policy
    (:mod:`agentark.pipeline.cache`). With ``config.backend == "ray"`` the chunks are spread over Ray
    actors (:mod:`agentark.pipeline.ray`); either way only this process writes the store, one
    finished chunk at a time. An engine is built (and closed) here unless one is passed; it is built
    before the run directory is recorded, so a model that does not load leaves no directory behind.
    """
    task = task or get_task(config.task, **config.task_options)
    system_is_registry = system is None
    system = system or get_system(config.system, **config.system_options())
    own_items = items is None
    items = config.questions(task) if own_items else items
    fingerprint = fingerprint or config.config_hash()
    out = Path(config.out)
    resumable = check_stage(out, fingerprint, on_change) is not None  # raises before any model loads
    # The store is opened once (it reads every record): here when the run resumes, else after
    # run_stage has made (or cleared) the directory.
    store = TraceStore(out) if resumable and (out / TRACES_FILE).exists() else None
    todo = [item for item in items if store is None or item.id not in store.done_ids]
    if config.backend == "ray" and not (own_items and system_is_registry):
        raise ValueError("backend ray runs registry systems on a task's own split (the workers rebuild both)")
    owned: Engine | None = None  # an engine this call built, and so closes
    if todo and config.backend == "local":
        if isinstance(engine, EngineSlot):  # the pilot's one-model-in-memory slot: borrowed, not closed
            engine = engine.get(config.model, config.engine, config.engine_options_with_batch())
        elif engine is None:
            engine = owned = get_engine(config.engine, config.model, **config.engine_options_with_batch())

    def run() -> dict[str, Any]:
        nonlocal store
        store = store or TraceStore(out)
        logger.info("%s: %d of %d questions done, %d to go", out, len(items) - len(todo), len(items), len(todo))
        if on_progress:
            on_progress(len(items) - len(todo), len(items))
        wall = (read_json(out / WALL_FILE) or {}).get("wall_time_s", 0.0)
        chunks = [todo[start : start + config.chunk_size] for start in range(0, len(todo), config.chunk_size)]
        if config.backend == "ray" and chunks:
            results: Iterator[list[QuestionTrace]] = run_on_ray(config, chunks)
        else:
            results = run_chunks(config, task, system, engine, chunks)
        start, total = time.perf_counter(), wall
        for traces in results:
            store.append(traces)
            total = wall + time.perf_counter() - start
            write_json_atomic(out / WALL_FILE, {"wall_time_s": total})
            if on_progress:
                on_progress(len(store), len(items))
        return {"questions": len(store), "wall_time_s": total}

    try:
        record = run_stage(
            "generate", fingerprint, out, run, on_change=on_change, config=config.model_dump(mode="json")
        )
    finally:
        if owned is not None:
            close_engine(owned)
    return replace(record, cached=record.cached or not todo)
