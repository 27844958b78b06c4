"""The generate stage's settings and its unit of work: one chunk of questions through a system.

Both ways of running the stage use these, the local one (:mod:`agentark.pipeline.generation`) and
the Ray workers (:mod:`agentark.pipeline.ray`), so a chunk gives the same traces in either.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from agentark.config import StageConfig, WithSampling, stable_hash
from agentark.defaults import DEFAULT_BATCH_SIZE, DEFAULT_CHUNK_SIZE
from agentark.engines import Engine, engine_settings, resolve_engine_kind, with_batch_size
from agentark.mas import MultiAgentSystem, RunContext, get_system
from agentark.models.packs import DEFAULT_MODEL
from agentark.tasks import Task, task_settings
from agentark.tasks.base import Item
from agentark.traces.schema import QuestionTrace


class GenerateConfig(StageConfig, WithSampling):
    """``agentark generate``: run a multi-agent system over a task and store traces."""

    task: str = Field("arithmetic", description="Task name (arithmetic, gsm8k, jsonl, choice).")
    task_options: dict[str, Any] = Field(default_factory=dict, description="The task's settings (typed per task: "
                                         "agentark.tasks.TASK_SETTINGS), e.g. path for file tasks.")
    split: Literal["train", "held-out"] = Field("train", description="train or held-out (questions never used for "
                                                "training traces).")
    n: int = Field(50, ge=1, description="Number of questions (the first n of the split after `skip`).")
    skip: int = Field(0, ge=0, description="Questions of the split passed over first: a dev slice past the ones a "
                      "team debated (`split: train, skip: 200`), to tune on without reading held-out items.")
    system: str = Field("debate", description="Multi-agent system: debate, self_consistency or single.")
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
    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1, description="Sequences decoded together (hf batch, llamacpp "
                            "parallel slots).")
    chunk_size: int = Field(DEFAULT_CHUNK_SIZE, ge=1, description="Questions per debate batch; traces are saved "
                            "after each.")
    chunks_in_flight: int = Field(
        2,
        ge=1,
        description="Chunks run at once on an engine that serves concurrent "
        "calls (llamacpp, openai): the next chunk's turns fill the slots that a round's longest "
        "answers leave idle. Traces are saved in order either way.",
    )
    out: str = Field("runs/debate", description="Run directory (traces.jsonl, stage.json).")
    backend: Literal["local", "ray"] = Field("local", description="local: one process; ray: chunks spread over "
                                             "Ray actors, one engine each (same traces, resumable alike).")
    workers: int = Field(2, ge=1, description="Ray actors (backend ray).")
    worker_cpus: float = Field(1.0, gt=0, description="CPUs per Ray actor (its engine's threads).")
    worker_gpus: float = Field(0.0, ge=0, description="GPUs per Ray actor.")
    ray_address: str | None = Field(None, description="Ray cluster to join (default: start a local one).")

    operational_fields: ClassVar[frozenset[str]] = frozenset(
        {
            "n",
            "batch_size",
            "chunk_size",
            "chunks_in_flight",
            "out",
            "engine_options",
            "backend",
            "workers",
            "worker_cpus",
            "worker_gpus",
            "ray_address",
        }
    )

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
            return {
                "agents": self.agents,
                "rounds": self.rounds,
                "early_stop": self.early_stop,
                "summarizer": self.summarizer,
            }
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
