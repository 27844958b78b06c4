"""The pilot's settings (``agentark run pipeline.yaml``): one typed section per stage, and the stage
configs each section turns into (the debate's :class:`GenerateConfig`, each strategy's training config,
each evaluation job's run).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agentark.config import SamplingConfig, StageConfig, WithSampling
from agentark.defaults import DEFAULT_BATCH_SIZE, DEFAULT_CHUNK_SIZE
from agentark.distill.registry import STRATEGY_NAMES, get_strategy
from agentark.engines import resolve_engine_kind, with_batch_size
from agentark.evaluate import PERTURBATION_TYPES, Pricing
from agentark.gate import GateConfig
from agentark.models.packs import DEFAULT_MODEL
from agentark.pipeline.chunk import GenerateConfig
from agentark.tasks import TASK_NAMES

Role = Literal["teacher", "student"]
EventCallback = Callable[[str, str, int, int | None], None]
"""``on_event(stage, message, done, total)``: ``total`` is ``None`` while unknown; a stage's last event
("done", "cached" or "skipped: ...") has ``done == total == 1``, so a progress bar can close on it."""

MANAGED_TRAINING_KEYS = frozenset({"strategy", "traces", "model", "out"})
"""Distillation settings the pipeline sets itself (from ``student`` and ``out``); overrides may not."""

MAS = "debate"
BASE = "base"
SELF_CONSISTENCY = "self_consistency"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DebateSettings(_Section, WithSampling):
    """The teacher: a multi-agent debate, run on the train split and again on the held-out items."""

    agents: int = Field(3, ge=2)
    rounds: int = Field(2, ge=1)
    early_stop: bool = True
    summarizer: bool = False
    n_train: int = Field(50, ge=1, description="Train questions debated (the first n of the train split).")
    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1, description="Sequences per forward pass (hf engine), in every "
                            "stage.")
    chunk_size: int = Field(DEFAULT_CHUNK_SIZE, ge=1, description="Questions per debate batch; traces are saved after "
                            "each.")


class EvaluateSettings(_Section, WithSampling):
    """Which systems run on the held-out items, and how they decode (alike, so they compare fairly)."""

    n_eval: int = Field(50, ge=1, description="Held-out questions every system answers (the first n).")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="Voting systems (debate, "
                                     "self-consistency, the hybrid's confidence samples) sample so: identical "
                                     "greedy voters agree.")
    single_temperature: float = Field(0.0, ge=0.0, description="Single models (base, students, review probe): "
                                      "greedy by default, as single-model benchmarks are run.")
    chunk_size: int = Field(DEFAULT_CHUNK_SIZE, ge=1, description="Questions per batch; traces are saved after each.")
    base: bool = Field(True, description="The student's base model alone: what distillation must beat.")
    self_consistency: bool = Field(True, description="The teacher voting over sc_k samples.")
    sc_k: int | None = Field(None, ge=1, description="None = the debate's token budget (sc_k_for_budget).")
    perturbations: list[str] = Field(default_factory=lambda: list(PERTURBATION_TYPES))
    perturbation_file: str | None = Field(None, description="GSM-Plus-style JSONL of extra perturbed questions.")
    ood_task: str | None = Field(None, description="Out-of-distribution task for base and students.")
    ood_task_options: dict[str, Any] = Field(default_factory=dict)
    review: bool = Field(True, description="Two-turn self-review probe of base and students.")
    hybrid_k: int = Field(3, ge=0, description="Samples of the gate's student for its routing confidence; 0 = off.")

    @model_validator(mode="after")
    def _check(self) -> EvaluateSettings:
        unknown = [p for p in self.perturbations if p not in PERTURBATION_TYPES]
        if unknown:
            raise ValueError(f"unknown perturbations {unknown}; valid: {', '.join(PERTURBATION_TYPES)}")
        if self.self_consistency and self.sc_k is None and not self.base:
            raise ValueError("self_consistency without sc_k takes k from the base run's token budget: "
                             "set sc_k or keep base: true")
        if self.ood_task is not None and self.ood_task not in TASK_NAMES:
            raise ValueError(f"unknown ood_task {self.ood_task!r}; valid tasks: {', '.join(TASK_NAMES)}")
        if self.sampling.temperature <= 0:
            raise ValueError("evaluate.sampling.temperature must be > 0: greedy voters would all agree")
        if self.hybrid_k == 1:
            raise ValueError("hybrid_k=1 gives every answer full confidence; use 0 (off) or >= 2")
        return self


class ServeSettings(_Section):
    """Latency as users see it: the gate's student, the team and the hybrid, each served in turn on this
    machine (``agentark serve``) and measured over HTTP (``agentark loadtest``) at one stated load."""

    enabled: bool = Field(True, description="Off: the latency gates read the offline estimate (and say so).")
    requests: int = Field(16, ge=1, description="Requests per system (the first held-out questions, cycled).")
    concurrency: int | None = Field(2, ge=1, description="Closed loop: requests in flight.")
    rate: float | None = Field(None, gt=0.0, description="Open loop: Poisson arrivals per second (set concurrency "
                               "to null).")

    @model_validator(mode="after")
    def _one_load(self) -> ServeSettings:
        if (self.concurrency is None) == (self.rate is None):
            raise ValueError("serve: give exactly one of concurrency (closed loop) and rate (Poisson arrivals)")
        return self


class PipelineConfig(StageConfig):
    """``agentark run pipeline.yaml``: every setting of a pilot, from the debate to the gate."""

    operational_fields: ClassVar[frozenset[str]] = frozenset({"out", "backend", "workers"})

    out: str = Field("runs/pipeline", description="Run root; every stage writes below it.")
    backend: Literal["local", "ray"] = Field("local", description="The teacher debate in one process or over Ray "
                                             "actors (the evaluation jobs run in this process).")
    workers: int = Field(2, ge=1, description="Ray actors of the debate (backend ray).")
    task: str = "arithmetic"
    task_options: dict[str, Any] = Field(default_factory=dict)
    teacher: str = Field(DEFAULT_MODEL, description="Model of every debate agent (and of self-consistency).")
    student: str | None = Field(None, description="Base model of the students; default: the teacher.")
    engine: str = Field("hf", description="Engine of the teacher (debate, self-consistency).")
    engine_options: dict[str, Any] = Field(default_factory=dict)
    student_engine: str | None = Field(None, description="Engine of the base model and the students; default: engine.")
    student_engine_options: dict[str, Any] | None = Field(
        None, description="Default: engine_options when student_engine is unset, else none.")
    generate: DebateSettings = Field(default_factory=DebateSettings)
    strategies: list[str] = Field(default_factory=lambda: ["rsft"], min_length=1,
                                  description=f"Distillation strategies: {', '.join(STRATEGY_NAMES)}.")
    training: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per strategy, its config's settings (agentark.distill.registry).")
    gate_student: str | None = Field(None, description="Strategy the gate judges; default: the most accurate.")
    evaluate: EvaluateSettings = Field(default_factory=EvaluateSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    pricing: Pricing = Field(default_factory=Pricing)
    gate: GateConfig = Field(default_factory=GateConfig)
    title: str = "AgentArk pilot report"

    @model_validator(mode="after")
    def _check(self) -> PipelineConfig:
        if self.task not in TASK_NAMES:
            raise ValueError(f"unknown task {self.task!r}; valid tasks: {', '.join(TASK_NAMES)}")
        for strategy in [*self.strategies, *self.training]:
            get_strategy(strategy)  # names the valid ones
        if len(set(self.strategies)) != len(self.strategies):
            raise ValueError(f"strategies repeat a name: {self.strategies}")
        if self.gate_student is not None and self.gate_student not in self.strategies:
            raise ValueError(f"gate_student {self.gate_student!r} is not among strategies {self.strategies}")
        self.generate_config()  # engine and task settings are checked (typed) now, not after the debate
        for strategy in self.strategies:
            self.distill_config(strategy)  # a typo in a training override fails now, not after the debate
        return self

    @property
    def root(self) -> Path:
        return Path(self.out)

    @property
    def traces_dir(self) -> Path:
        return self.root / "traces"

    def student_dir(self, strategy: str) -> Path:
        return self.root / "students" / strategy

    @property
    def student_model(self) -> str:
        return self.student or self.teacher

    def generate_config(self) -> GenerateConfig:
        """The teacher debate on the train split, as ``agentark generate`` would run it."""
        g = self.generate
        return GenerateConfig(
            task=self.task, task_options=self.task_options, split="train", n=g.n_train, system="debate",
            agents=g.agents, rounds=g.rounds, early_stop=g.early_stop, summarizer=g.summarizer, model=self.teacher,
            engine=self.engine, engine_options=self.engine_options, sampling=g.sampling, batch_size=g.batch_size,
            chunk_size=g.chunk_size, backend=self.backend, workers=self.workers, out=str(self.traces_dir),
        )

    def distill_config(self, strategy: str) -> Any:
        """One strategy's training settings: the overrides from ``training`` on the pipeline's paths."""
        overrides = dict(self.training.get(strategy, {}))
        managed = sorted(MANAGED_TRAINING_KEYS & set(overrides))
        if managed:
            raise ValueError(f"training.{strategy} sets {managed}; the pipeline sets those (use student / out)")
        spec = get_strategy(strategy)
        if "prm" in spec.config_class.model_fields:
            # The PRM lives beside the students, so a GRPO-only change does not throw the trained PRM away.
            overrides["prm"] = {"out": str(self.root / "students" / "prm"), **overrides.get("prm", {})}
        return spec.config(self.traces_dir, model=self.student_model, out=str(self.student_dir(strategy)), **overrides)

    def engine_for(self, role: Role) -> tuple[str, dict[str, Any]]:
        """(engine kind, options) of the teacher's or the student's jobs; every engine batches
        ``generate.batch_size`` sequences unless its options say otherwise."""
        if role == "teacher":
            kind, options = resolve_engine_kind(self.engine), self.engine_options
        else:
            kind = resolve_engine_kind(self.student_engine or self.engine)
            # The teacher's options carry over only with the teacher's engine.
            inherited = self.engine_options if self.student_engine is None else {}
            options = inherited if self.student_engine_options is None else self.student_engine_options
        return kind, with_batch_size(kind, options, self.generate.batch_size)

    def eval_run(self, name: str, system: str, model: str, role: Role, revision: str = "", **system_options: Any
                 ) -> GenerateConfig:
        """One evaluation job's run on the first ``n_eval`` held-out items: single models greedy
        (``single_temperature``), systems that vote sampled (``evaluate.sampling``)."""
        e = self.evaluate
        kind, options = self.engine_for(role)
        temperature = e.single_temperature if system == "single" else e.sampling.temperature
        return GenerateConfig(
            task=self.task, task_options=self.task_options, split="held-out", n=e.n_eval, system=system,
            **system_options, model=model, model_revision=revision, engine=kind, engine_options=options,
            sampling=e.sampling.model_copy(update={"temperature": temperature}), batch_size=self.generate.batch_size,
            chunk_size=e.chunk_size, out=str(self.root / "eval" / name),
        )


def student_name(strategy: str) -> str:
    return f"student-{strategy}"
