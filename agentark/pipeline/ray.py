"""The generate stage on Ray: chunks of questions spread over actors, each holding one engine.

Why actors and not tasks: an engine (a model in memory, a llama.cpp server, a vLLM instance) is
expensive to build, so each actor builds one once and then runs chunk after chunk through the same
:func:`~agentark.pipeline.chunk.run_chunk` the single-process path uses. A chunk's sampling seed
depends only on the run seed and its question ids, so a chunk gives the same traces on any worker,
and greedy runs equal the single-process traces record for record.

Only the driver writes the trace store, one finished chunk at a time, in the order chunks finish;
resuming skips finished question ids exactly as locally. A worker that dies is restarted by Ray and
its chunk re-run (``max_restarts`` / ``max_task_retries``); its half-done chunk was never written,
so nothing is lost or duplicated. Any engine works inside a worker: hf, llamacpp, vllm (give
``worker_gpus``), or an OpenAI-compatible client fanning out to remote servers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from agentark.engines import get_engine
from agentark.mas import get_system
from agentark.pipeline.chunk import GenerateConfig, run_chunk
from agentark.tasks import get_task
from agentark.tasks.base import Item
from agentark.traces.schema import QuestionTrace

logger = logging.getLogger(__name__)

MAX_RESTARTS = 3
"""How often Ray restarts a dead worker (and re-runs its chunk) before the run fails."""


class GenerateWorker:
    """One engine, many chunks. Instantiated by Ray as an actor (see :func:`run_on_ray`)."""

    def __init__(self, config: dict, threads: int):
        import torch  # lazy: only a Ray worker sets torch's threads, and `agentark --help` need not load torch

        torch.set_num_threads(max(1, threads))  # this actor's CPU share, not the whole machine
        self.config = GenerateConfig.model_validate(config)
        c = self.config
        self.task = get_task(c.task, **c.task_options)
        self.system = get_system(c.system, **c.system_options())
        options = c.engine_options_with_batch()
        if c.engine == "llamacpp":
            options.setdefault("n_threads", max(1, threads))
        self.engine = get_engine(c.engine, c.model, **options)
        self.items = {item.id: item for item in c.questions(self.task)}

    def run(self, item_ids: list[str]) -> list[dict]:
        chunk: list[Item] = [self.items[i] for i in item_ids]
        return [trace.model_dump() for trace in run_chunk(self.config, self.task, self.system, self.engine, chunk)]


def run_on_ray(config: GenerateConfig, chunks: list[list[Item]]) -> Iterator[list[QuestionTrace]]:
    """The traces of each chunk as soon as any worker finishes it."""
    try:
        import ray
        from ray.util import ActorPool
    except ImportError as exc:
        raise ImportError("backend ray needs Ray: pip install 'agentark[ray]'") from exc

    if not ray.is_initialized():
        ray.init(address=config.ray_address, include_dashboard=False, log_to_driver=False)
    n_workers = min(config.workers, len(chunks))
    actor = ray.remote(max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS)(GenerateWorker)
    threads = max(1, int(config.worker_cpus))
    workers = [
        actor.options(num_cpus=config.worker_cpus, num_gpus=config.worker_gpus).remote(config.model_dump(), threads)
        for _ in range(n_workers)
    ]
    logger.info("ray: %d workers x %.1f CPU, %d chunks", n_workers, config.worker_cpus, len(chunks))
    try:
        pool = ActorPool(workers)
        ids = [[item.id for item in chunk] for chunk in chunks]
        for traces in pool.map_unordered(lambda worker, chunk_ids: worker.run.remote(chunk_ids), ids):
            yield [QuestionTrace.model_validate(t) for t in traces]
    finally:
        for worker in workers:
            ray.kill(worker)
