"""The evaluate stage: the one path by which any system is run on evaluation items.

``agentark evaluate`` and the pilot (``agentark run``) both come here: an :class:`EvalJob` is a
generate-stage run (:class:`~agentark.pipeline.generation.GenerateConfig`: model, engine, task, system,
sampling) plus, for the pilot's probes, its own items (perturbed ones), task or system (the review
probe). It runs through :func:`~agentark.pipeline.generation.generate` under the ``rerun`` cache
policy, so an evaluation resumes after a crash, is skipped when nothing changed, and re-runs when
anything that decides its traces *or its wall time* changed (a student retrained in place, the
engine's batch size). The wall time is measured while the chunks run (``wall.json``), never
estimated, and every evaluation directory has the same layout: ``traces.jsonl``, ``stage.json``,
``wall.json``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from agentark.config import SamplingConfig, StageConfig, WithSampling, stable_hash
from agentark.defaults import DEFAULT_BATCH_SIZE, DEFAULT_CHUNK_SIZE
from agentark.distill.training import read_manifest
from agentark.evaluate.metrics import EvalResult, Pricing
from agentark.mas import MultiAgentSystem
from agentark.pipeline.cache import EngineSlot
from agentark.pipeline.chunk import GenerateConfig
from agentark.pipeline.generation import generate
from agentark.tasks import Task
from agentark.tasks.base import Item
from agentark.traces.schema import QuestionTrace
from agentark.traces.store import read_traces


@dataclass
class EvalJob:
    """One system on one item set. ``run`` names the model, engine, task, system and decoding;
    ``items`` / ``task`` / ``system`` replace the run's own where a probe needs that, and then
    ``identity`` says what they are (they are not in ``run``'s hash)."""

    name: str
    run: GenerateConfig
    items: list[Item] | None = None
    task: Task | None = None
    system: MultiAgentSystem | None = None
    identity: dict[str, Any] | None = None

    def fingerprint(self) -> str:
        """What decides the traces *and the wall time*: engine options and batch size count too,
        since latency and cost are read from this run."""
        r = self.run
        return stable_hash({
            "run": r.config_hash(), "n": r.n, "items": items_hash(self.items) if self.items is not None else None,
            "identity": self.identity, "engine_options": r.engine_options_with_batch(), "chunk_size": r.chunk_size,
            # Left out at its default, so fingerprints made before the field existed still match.
            **({"chunks_in_flight": r.chunks_in_flight}
               if r.chunks_in_flight != GenerateConfig.model_fields["chunks_in_flight"].default else {}),
        })


@dataclass(frozen=True)
class Evaluated:
    """A finished evaluation: where its traces are and the wall time measured while making them."""

    name: str
    fingerprint: str
    dir: Path
    wall_time_s: float
    cached: bool = False

    def traces(self) -> list[QuestionTrace]:
        return list(read_traces(self.dir))

    def result(self, pricing: Pricing | None = None) -> EvalResult:
        return EvalResult.from_traces(self.name, self.traces(), self.wall_time_s, pricing)


def items_hash(items: Sequence[Item]) -> str:
    return stable_hash([asdict(item) for item in items])


def evaluate_job(job: EvalJob, engine: EngineSlot | None = None,
                 on_progress: Callable[[int, int], None] | None = None) -> Evaluated:
    """Run (or resume, or reuse) one evaluation; ``engine``: a slot that keeps one model loaded
    across the jobs of that model (else each job builds and closes its own)."""
    fingerprint = job.fingerprint()
    record = generate(job.run, engine=engine, task=job.task, on_progress=on_progress, items=job.items,
                      system=job.system, fingerprint=fingerprint, on_change="rerun")
    return Evaluated(job.name, fingerprint, Path(job.run.out), record.result["wall_time_s"], cached=record.cached)


# --- `agentark evaluate` ----------------------------------------------------------------------------


def base_model_of(model: str) -> str | None:
    """The model a distilled student started from (from its manifest), or None for other models."""
    manifest = read_manifest(model) if Path(model).is_dir() else None
    return (manifest or {}).get("base_model")


def model_label(model: str) -> str:
    """A short, path-safe name for a model in tables and eval directories."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model.rstrip("/").split("/")[-1] if Path(model).exists() else model)


def model_revision(model: str) -> str:
    """A student's manifest fingerprint (its weights' identity; a path alone is not), else ``""``."""
    manifest = read_manifest(model) if Path(model).is_dir() else None
    return (manifest or {}).get("fingerprint", "")


_GENERATE = GenerateConfig.model_fields  # the settings an evaluation passes on to its generate runs


class EvaluateConfig(StageConfig, WithSampling):
    """``agentark evaluate``: models one by one, greedy, single agent, on the same held-out items."""

    operational_fields: ClassVar[frozenset[str]] = frozenset({"out", "backend", "workers", "batch_size"})

    models: list[str] = Field(min_length=1, description="Models to evaluate: students (directories), packs, paths "
                              "or hub ids (on the command line: --model, repeatable).")
    base: bool = Field(True, description="Also evaluate each student's base model (from its manifest).")
    task: str = Field("arithmetic", description=_GENERATE["task"].description)
    task_options: dict[str, Any] = Field(default_factory=dict, description=_GENERATE["task_options"].description)
    split: Literal["train", "held-out"] = Field("held-out", description=_GENERATE["split"].description)
    n: int = Field(50, ge=1, description="Questions (the first n of the split after `skip`).")
    skip: int = Field(0, ge=0, description="Questions of the split passed over first (`split: train, skip: 200`: a dev "
                      "slice past the debated train questions).")
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(temperature=0.0),
                                     description="Greedy by default, as single-model benchmarks are run.")
    engine: str = Field("hf", description="One engine for every model, so that a student and its base compare; hf "
                        "by default: students are HF weights, and a base pack's quantised GGUF is not a like-for-like "
                        "base (llamacpp with outtype f16 is).")
    engine_options: dict[str, Any] = Field(default_factory=dict, description=_GENERATE["engine_options"].description)
    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1, description=_GENERATE["batch_size"].description)
    chunk_size: int = Field(DEFAULT_CHUNK_SIZE, ge=1, description=_GENERATE["chunk_size"].description)
    backend: Literal["local", "ray"] = Field("local", description=_GENERATE["backend"].description)
    workers: int = Field(2, ge=1, description=_GENERATE["workers"].description)
    out: str = Field("runs/eval", description="Directory for evaluation traces (one run per model) and results.json.")

    def all_models(self) -> list[str]:
        """The models, then each student's base, each once (two students of one base share it)."""
        bases = [b for m in self.models if (b := base_model_of(m))] if self.base else []
        return list(dict.fromkeys([*self.models, *bases]))

    def job(self, model: str) -> EvalJob:
        shared = self.model_dump(include={"task", "task_options", "split", "skip", "n", "sampling", "engine",
                                          "engine_options", "batch_size", "chunk_size", "backend", "workers"})
        run = GenerateConfig(**shared, system="single", model=model, model_revision=model_revision(model),
                             out=str(Path(self.out) / model_label(model)))
        return EvalJob(model_label(model), run)


def evaluate_models(config: EvaluateConfig, pricing: Pricing | None = None,
                    on_progress: Callable[[str, int, int], None] | None = None) -> list[EvalResult]:
    """Every model of ``config`` on the same items, one after the other (one model in memory)."""
    results = []
    for model in config.all_models():
        job = config.job(model)
        progress = (lambda d, t, name=job.name: on_progress(name, d, t)) if on_progress else None
        results.append(evaluate_job(job, on_progress=progress).result(pricing))
    return results


@dataclass
class Evaluations:
    """Every evaluated system, grouped by what the report does with it."""

    clean: dict[str, Evaluated] = field(default_factory=dict)
    perturbed: dict[str, Evaluated] = field(default_factory=dict)
    ood: dict[str, Evaluated] = field(default_factory=dict)
    review: dict[str, Evaluated] = field(default_factory=dict)
    confidence: Evaluated | None = None
    gate_student: str = ""
    sc_k: int | None = None

    def all(self) -> list[Evaluated]:
        groups = [self.clean, self.perturbed, self.ood, self.review]
        return [e for g in groups for e in g.values()] + ([self.confidence] if self.confidence else [])
