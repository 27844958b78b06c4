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
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from agentark.config import StageConfig, WithSampling, stable_hash
from agentark.engines import Engine, close_engine, engine_settings, get_engine, resolve_engine_kind, with_batch_size
from agentark.mas import MultiAgentSystem, RunContext, get_system
from agentark.models.packs import DEFAULT_MODEL
from agentark.pipeline.cache import EngineSlot, StageRecord, check_stage, run_stage
from agentark.tasks import Task, get_task, task_settings
from agentark.tasks.base import Item
from agentark.traces.schema import QuestionTrace
from agentark.traces.store import TRACES_FILE, TraceStore, read_json, write_json_atomic

logger = logging.getLogger(__name__)

WALL_FILE = "wall.json"


class GenerateConfig(StageConfig, WithSampling):
    """``agentark generate``: run a multi-agent system over a task and store traces."""

    task: str = Field("arithmetic", description="Task name (arithmetic, gsm8k, jsonl, choice).")
    task_options: dict[str, Any] = Field(default_factory=dict, description="The task's settings (typed per task: "
                                         "agentark.tasks.TASK_SETTINGS), e.g. path for file tasks.")
    split: Literal["train", "held-out"] = "train"
    n: int = Field(50, ge=1, description="Number of questions (the first n of the split after `skip`).")
    skip: int = Field(0, ge=0, description="Questions of the split passed over first: a dev slice past the ones a "
                      "team debated (`split: train, skip: 200`), to tune on without reading held-out items.")
    system: str = Field("debate", description="single, self_consistency or debate.")
    agents: int = Field(3, ge=1, description="Debate agents, or k samples for self_consistency.")
    rounds: int = Field(2, ge=1, description="Debate rounds (1 = no revision).")
    early_stop: bool = Field(True, description="Stop a question's debate once all agents agree.")
    summarizer: bool = Field(False, description="A summariser agent decides the final answer.")
    model: str = Field(DEFAULT_MODEL, description="Model pack name, local path or HF hub id.")
    model_revision: str = Field("", description="Identity of the weights behind `model` when the path alone is not "
                                "enough (a student retrained in place): its manifest fingerprint.")
    engine: str = Field("auto", description="llamacpp, hf, openai, vllm, or auto (the fastest this machine has); "
                        "stored resolved, so the config hash names the engine that produced the traces.")
    engine_options: dict[str, Any] = Field(default_factory=dict, description="The engine's settings (typed per "
                                           "engine: agentark.engines.ENGINE_SETTINGS); those that change outputs "
                                           "(e.g. dtype) are in the hash.")
    batch_size: int = Field(32, ge=1, description="Sequences decoded together (hf batch, llamacpp parallel slots).")
    chunk_size: int = Field(16, ge=1, description="Questions per debate batch; traces are saved after each.")
    chunks_in_flight: int = Field(2, ge=1, description="Chunks run at once on an engine that serves concurrent "
                                  "calls (llamacpp, openai): the next chunk's turns fill the slots that a round's longest "
                                  "answers leave idle. Traces are saved in order either way.")
    out: str = Field("runs/debate", description="Run directory (traces.jsonl, stage.json).")
    backend: Literal["local", "ray"] = Field("local", description="local: one process; ray: chunks spread over "
                                             "Ray actors, one engine each (same traces, resumable alike).")
    workers: int = Field(2, ge=1, description="Ray actors (backend ray).")
    worker_cpus: float = Field(1.0, gt=0, description="CPUs per Ray actor (its engine's threads).")
    worker_gpus: float = Field(0.0, ge=0, description="GPUs per Ray actor.")
    ray_address: str | None = Field(None, description="Ray cluster to join (None: start a local one).")

    operational_fields: ClassVar[frozenset[str]] = frozenset(
        {"n", "batch_size", "chunk_size", "chunks_in_flight", "out", "engine_options", "backend", "workers", "worker_cpus", "worker_gpus",
         "ray_address"})

    @field_validator("engine")
    @classmethod
    def _concrete_engine(cls, value: str) -> str:
        return resolve_engine_kind(value)

    @model_validator(mode="after")
    def _typed_options(self) -> GenerateConfig:
        # Typos and wrong types in the option bags fail here, naming the field, before anything runs.
        engine_settings(self.engine, self.engine_options)
        task_settings(self.task, self.task_options)
        get_system(self.system, **self.system_options())
        return self

    def questions(self, task: Task) -> list[Item]:
        """The ``n`` questions of the split after the first ``skip``: one rule for every process."""
        return task.items(self.split, self.skip + self.n)[self.skip:]

    def config_hash(self) -> str:
        """What decides the traces: task, system, model (or its revision), engine kind, sampling, and the engine options
        that change outputs (only when set away from their defaults, so that runs made before an
        option existed keep their hash and resume)."""
        identity = self.model_dump(exclude={*self.operational_fields, "sampling", *(() if self.skip else ("skip",))})
        identity["task_options"] = task_settings(self.task, self.task_options).identity()  # defaults left out
        if self.model_revision:  # a student's weights are named by their fingerprint, not by where they lie
            identity["model"] = ""
        identity.update(self.sampling.model_dump())
        if engine_identity := engine_settings(self.engine, self.engine_options).identity():
            identity["engine_options"] = engine_identity
        return stable_hash(identity)

    def system_options(self) -> dict[str, Any]:
        if self.system == "debate":
            return {"agents": self.agents, "rounds": self.rounds, "early_stop": self.early_stop, "summarizer": self.summarizer}
        if self.system == "self_consistency":
            return {"k": self.agents}
        return {}

    def engine_options_with_batch(self) -> dict[str, Any]:
        return with_batch_size(self.engine, self.engine_options, self.batch_size)


def run_chunk(config: GenerateConfig, task: Task, system: MultiAgentSystem, engine: Engine,
              chunk: list[Item]) -> list[QuestionTrace]:
    """One chunk of questions through the system, sampled by the config's one seed rule
    (:meth:`SamplingConfig.params`), so the same chunk gives the same traces in any process."""
    sampling = config.sampling.params([item.id for item in chunk])
    return system.run(RunContext(task=task, engine=engine, sampling=sampling, config_hash=config.config_hash()), chunk)


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
            from agentark.pipeline.ray import run_on_ray

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
        record = run_stage("generate", fingerprint, out, run, on_change=on_change, config=config.model_dump(mode="json"))
    finally:
        if owned is not None:
            close_engine(owned)
    return replace(record, cached=record.cached or not todo)
