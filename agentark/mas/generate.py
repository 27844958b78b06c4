"""The generate stage: a system over a task's questions, saved chunk by chunk, resumable.

Questions go through the system in chunks (every agent x question of a chunk's round is one engine
call); each finished chunk is appended to the trace store before the next starts. Killing the run
loses at most the chunk in flight, and re-running the same command skips finished ids.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from agentark.config import GenerateConfig
from agentark.engines import Engine, SamplingParams, close_engine, get_engine, with_batch_size
from agentark.mas import MultiAgentSystem, RunContext, get_system
from agentark.tasks import Task, get_task
from agentark.tasks.base import Item
from agentark.traces.schema import QuestionTrace
from agentark.traces.store import TraceStore, write_json_atomic

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"


class RunConfigMismatch(ValueError):
    """The output dir holds traces made with different settings; mixing them would be silent corruption."""


def check_run_dir(config: GenerateConfig) -> None:
    """Refuse to append to a run made with other settings; record this run's settings otherwise."""
    path = Path(config.out) / CONFIG_FILE
    if path.exists():
        stored = json.loads(path.read_text())
        if stored.get("config_hash") != config.config_hash():
            raise RunConfigMismatch(
                f"{config.out} holds traces made with different settings (config hash {stored.get('config_hash')} "
                f"!= {config.config_hash()}); use another --out, or the same settings to resume"
            )
    Path(config.out).mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"config_hash": config.config_hash(), "config": config.model_dump()})


def task_of_run(run_dir: str | Path) -> Task:
    """The task (with its options, e.g. a data path) that a run directory's traces were made on."""
    path = Path(run_dir)
    path = (path if path.is_dir() else path.parent) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: not a run directory made by `agentark generate`")
    config = json.loads(path.read_text())["config"]
    return get_task(config["task"], **config.get("task_options", {}))


def chunk_seed(seed: int, item_ids: list[str]) -> int:
    """A sampling seed fixed by the run seed and the chunk's questions, so a resumed chunk samples alike."""
    return zlib.crc32(("|".join(item_ids) + f"#{seed}").encode())


def run_chunk(config: GenerateConfig, task: Task, system: MultiAgentSystem, engine: Engine,
              chunk: list[Item]) -> list[QuestionTrace]:
    """One chunk of questions through the system. Its sampling seed depends only on the run seed and
    the chunk's ids, so the same chunk gives the same traces in any process (local or a Ray worker)."""
    sampling = SamplingParams(
        temperature=config.temperature,
        top_p=config.top_p,
        max_new_tokens=config.max_new_tokens,
        seed=chunk_seed(config.seed, [item.id for item in chunk]),
    )
    return system.run(RunContext(task=task, engine=engine, sampling=sampling, config_hash=config.config_hash()), chunk)


def generate(
    config: GenerateConfig,
    engine: Engine | None = None,
    task: Task | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> TraceStore:
    """Run ``config.system`` on the first ``config.n`` questions, appending to ``<out>/traces.jsonl``.

    With ``config.backend == "ray"`` the chunks are spread over Ray actors (``agentark.mas.distributed``);
    either way only this process writes the store, one finished chunk at a time.
    """
    task = task or get_task(config.task, **config.task_options)
    system = get_system(config.system, **config.system_options())
    check_run_dir(config)
    store = TraceStore(config.out)
    items = task.items(config.split, config.n)
    todo = [item for item in items if item.id not in store.done_ids]
    logger.info("%s: %d of %d questions done, %d to go", config.out, len(items) - len(todo), len(items), len(todo))
    done = len(items) - len(todo)
    if on_progress:
        on_progress(done, len(items))
    if not todo:
        return store
    chunks = [todo[start : start + config.chunk_size] for start in range(0, len(todo), config.chunk_size)]
    owned: Engine | None = None  # an engine this call built, and so closes
    if config.backend == "ray":
        from agentark.mas.distributed import run_on_ray

        results: Iterator[list[QuestionTrace]] = run_on_ray(config, chunks)
    else:
        if engine is None:
            engine = owned = get_engine(config.engine, config.model,
                                        **with_batch_size(config.engine, config.engine_options, config.batch_size))
        results = (run_chunk(config, task, system, engine, chunk) for chunk in chunks)
    try:
        for traces in results:
            store.append(traces)
            done += len(traces)
            if on_progress:
                on_progress(done, len(items))
    finally:
        if owned is not None:
            close_engine(owned)
    return store
