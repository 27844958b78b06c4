"""Settings of every stage as pydantic models: YAML/CLI in, validated object and stable hash out.

The hash covers only the fields that change what a stage produces, so operational knobs (batch
size, output path, number of questions) can change between a run and its resumption.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentark.models.packs import DEFAULT_MODEL


def stable_hash(obj: Any) -> str:
    """Short SHA-256 of canonical JSON: equal settings give equal hashes across machines."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class StageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Fields that do not change a stage's output (where it goes, how fast it runs, how many items).
    operational_fields: ClassVar[frozenset[str]] = frozenset()

    def config_hash(self) -> str:
        return stable_hash(self.model_dump(exclude=set(self.operational_fields)))

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any):
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
        return cls(**{**data, **overrides})


class GenerateConfig(StageConfig):
    """``agentark generate``: run a multi-agent system over a task and store traces."""

    task: str = "arithmetic"
    task_options: dict[str, Any] = Field(default_factory=dict)
    split: Literal["train", "held-out"] = "train"
    n: int = Field(50, ge=1, description="Number of questions (the first n of the split).")
    system: str = "debate"
    agents: int = Field(3, ge=1, description="Debate agents, or k samples for self_consistency.")
    rounds: int = Field(2, ge=1)
    early_stop: bool = True
    summarizer: bool = False
    model: str = DEFAULT_MODEL
    model_revision: str = Field("", description="Identity of the weights behind `model` when the path alone is not "
                                "enough (a student retrained in place): its manifest fingerprint.")
    engine: str = Field("auto", description="llamacpp, hf, openai, vllm, or auto (the fastest this machine has); "
                        "stored resolved, so the config hash names the engine that produced the traces.")
    engine_options: dict[str, Any] = Field(default_factory=dict)
    temperature: float = Field(0.7, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(256, ge=1)
    seed: int = 0
    batch_size: int = Field(32, ge=1, description="Sequences decoded together (hf batch, llamacpp parallel slots).")
    chunk_size: int = Field(16, ge=1, description="Questions per debate batch; traces are saved after each.")
    out: str = "runs/debate"
    backend: Literal["local", "ray"] = Field("local", description="local: one process; ray: chunks spread over "
                                             "Ray actors, one engine each (same traces, resumable alike).")
    workers: int = Field(2, ge=1, description="Ray actors (backend ray).")
    worker_cpus: float = Field(1.0, gt=0, description="CPUs per Ray actor (its engine's threads).")
    worker_gpus: float = Field(0.0, ge=0, description="GPUs per Ray actor.")
    ray_address: str | None = Field(None, description="Ray cluster to join (None: start a local one).")

    operational_fields: ClassVar[frozenset[str]] = frozenset(
        {"n", "batch_size", "chunk_size", "out", "engine_options", "backend", "workers", "worker_cpus", "worker_gpus",
         "ray_address"})

    @field_validator("engine")
    @classmethod
    def _concrete_engine(cls, value: str) -> str:
        from agentark.engines import resolve_engine_kind

        return resolve_engine_kind(value)

    def system_options(self) -> dict[str, Any]:
        if self.system == "debate":
            return {"agents": self.agents, "rounds": self.rounds, "early_stop": self.early_stop, "summarizer": self.summarizer}
        if self.system == "self_consistency":
            return {"k": self.agents}
        return {}
