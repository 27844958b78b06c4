"""One command for a whole pilot: debate traces -> distilled students -> evaluation -> gate -> report.

``agentark run pipeline.yaml`` (:func:`run_pipeline` on a :class:`PipelineConfig`) calls the same
stage functions as the single commands, in order:

1. **generate** (:func:`agentark.pipeline.generation.generate`, as ``agentark generate``) — the
   teacher debate on the train split;
2. **distill** (:func:`agentark.pipeline.distillation.distill`, as ``agentark distill``) — one student
   per selected strategy;
3. **evaluate** (:func:`agentark.pipeline.evaluation.evaluate_job`, as ``agentark evaluate``) — every
   system on the *same* held-out items: the student's base model alone, a self-consistency vote and
   the debate on the teacher, each student; then each student on perturbed items (robustness), base
   and students on an optional out-of-distribution task and in the two-turn self-review probe, and
   the gate's student sampled ``hybrid_k`` times (its confidence for routing);
4. **serve** and **report** (:mod:`agentark.pipeline.report`) — the gate's student, the debate and
   the hybrid load-tested over HTTP; the rollout gate and ``report.md`` / ``report.html``.

Layout of the run root ``out``::

    traces/               teacher debate traces (the generate stage's directory)
    students/<strategy>/  distilled students (stage.json + the trainer's manifest); students/prm/: PAD's PRM
    eval/<system>/        traces.jsonl + stage.json + wall.json of one evaluated system
    served/               stage.json with each served system's latency (p50/p95/p99, TTFT, load)
    report/               report.md, report.html, plots, decision.json, summary.json

Every stage is cached (:mod:`agentark.pipeline.cache`); fingerprints chain — an evaluation's covers
the student's manifest fingerprint, the report's every evaluation's — so a change re-runs exactly
the stages downstream of it. Paths are not part of any fingerprint: a moved run root stays cached.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agentark.config import SamplingConfig, StageConfig, WithSampling
from agentark.distill.registry import STRATEGY_NAMES, get_strategy
from agentark.engines import resolve_engine_kind, with_batch_size
from agentark.evaluate import (PERTURBATION_TYPES, PerturbedTask, Pricing, ReviewProbe, compute_metrics,
                               load_perturbation_file, perturb, sc_k_for_budget)
from agentark.gate import GateConfig
from agentark.mas import MultiAgentSystem
from agentark.models.packs import DEFAULT_MODEL
from agentark.pipeline.cache import EngineSlot, free_memory
from agentark.distill.training import TrainHooks
from agentark.pipeline.distillation import Distilled, distill
from agentark.pipeline.evaluation import EvalJob, Evaluated, evaluate_job
from agentark.pipeline.generation import GenerateConfig, generate
from agentark.tasks import TASK_NAMES, Item, get_task
from agentark.traces.store import TRACES_FILE, write_json_atomic

logger = logging.getLogger(__name__)

Role = Literal["teacher", "student"]
StageStatus = Literal["ran", "cached"]
EventCallback = Callable[[str, str, int, int | None], None]
"""``on_event(stage, message, done, total)``: ``total`` is ``None`` while unknown; a stage's last event
("done", "cached" or "skipped: ...") has ``done == total == 1``, so a progress bar can close on it."""

MANAGED_TRAINING_KEYS = frozenset({"strategy", "traces", "model", "out"})
"""Distillation settings the pipeline sets itself (from ``student`` and ``out``); overrides may not."""

MAS = "debate"
BASE = "base"
SELF_CONSISTENCY = "self_consistency"


class PipelineError(RuntimeError):
    """The pipeline cannot go on (e.g. no strategy produced a student); the message says why."""


# --- settings -------------------------------------------------------------------------------------


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DebateSettings(_Section, WithSampling):
    """The teacher: a multi-agent debate, run on the train split and again on the held-out items."""

    agents: int = Field(3, ge=2)
    rounds: int = Field(2, ge=1)
    early_stop: bool = True
    summarizer: bool = False
    n_train: int = Field(50, ge=1, description="Train questions debated (the first n of the train split).")
    batch_size: int = Field(32, ge=1, description="Sequences per forward pass (hf engine), in every stage.")
    chunk_size: int = Field(16, ge=1, description="Questions per debate batch; traces are saved after each.")


class EvaluateSettings(_Section, WithSampling):
    """Which systems run on the held-out items, and how they decode (alike, so they compare fairly)."""

    n_eval: int = Field(50, ge=1, description="Held-out questions every system answers (the first n).")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="Voting systems (debate, "
                                     "self-consistency, the hybrid's confidence samples) sample so: identical "
                                     "greedy voters agree.")
    single_temperature: float = Field(0.0, ge=0.0, description="Single models (base, students, review probe): "
                                      "greedy by default, as single-model benchmarks are run.")
    chunk_size: int = Field(16, ge=1, description="Questions per batch; traces are saved after each.")
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
        if "prm" in spec.config_class().model_fields:
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


# --- the pipeline ---------------------------------------------------------------------------------


def student_name(strategy: str) -> str:
    return f"student-{strategy}"


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


class _Pipeline:
    """One run of :func:`run_pipeline`: the config, the event sink, the engine slot, stage statuses."""

    def __init__(self, config: PipelineConfig, on_event: EventCallback | None):
        self.config = config
        self.emit: EventCallback = on_event or (lambda stage, message, done, total: None)
        self.task = get_task(config.task, **config.task_options)
        self.engines = EngineSlot()
        self.stages: dict[str, StageStatus] = {}

    def done(self, name: str, cached: bool, skipped: str | None = None) -> None:
        self.stages[name] = "cached" if cached else "ran"
        self.emit(name, f"skipped: {skipped}" if skipped else "cached" if cached else "done", 1, 1)

    def generate(self) -> None:
        record = generate(self.config.generate_config(), task=self.task,
                          on_progress=partial(self.emit, "generate", "debating"))
        free_memory()
        self.done("generate", record.cached)

    def distill(self) -> dict[str, Distilled]:
        students: dict[str, Distilled] = {}
        for strategy in self.config.strategies:
            name = f"distill:{strategy}"
            self.emit(name, "training", 0, None)
            result = distill(strategy, self.config.distill_config(strategy), self.config.traces_dir,
                             TrainHooks(progress=partial(self.emit, name, "training")))
            self.done(name, result.cached, result.skipped)
            students[strategy] = result
        return students

    def job(self, job: EvalJob) -> Evaluated:
        name = f"eval:{job.name}"
        result = evaluate_job(job, self.engines, on_progress=partial(self.emit, name, "evaluating"))
        self.done(name, result.cached)
        return result

    def evaluate(self, students: dict[str, Distilled]) -> Evaluations:
        c, s = self.config, self.config.evaluate
        items = self.task.items("held-out", s.n_eval)
        perturbed = self._perturbed_items(items)
        trained = {student_name(k): d for k, d in students.items() if d.path is not None}
        ev = Evaluations()
        try:
            if s.base:
                self._single_model_jobs(ev, BASE, c.student_model, "", perturbed=[])
            debate = c.generate_config()
            ev.clean[MAS] = self.job(EvalJob(MAS, c.eval_run(MAS, "debate", c.teacher, "teacher",
                                                             **debate.system_options())))
            if s.self_consistency:
                ev.sc_k = s.sc_k or sc_k_for_budget(ev.clean[MAS].traces(), ev.clean[BASE].traces())
                ev.clean[SELF_CONSISTENCY] = self.job(EvalJob(SELF_CONSISTENCY, c.eval_run(
                    SELF_CONSISTENCY, "self_consistency", c.teacher, "teacher", agents=ev.sc_k)))
            for name, student in trained.items():
                self._single_model_jobs(ev, name, str(student.path), student.fingerprint or "", perturbed)
            ev.gate_student = self._gate_student(ev, trained)
            if s.hybrid_k:
                student = trained[ev.gate_student]
                name = f"{ev.gate_student}@confidence"
                ev.confidence = self.job(EvalJob(name, c.eval_run(name, "self_consistency", str(student.path),
                                                                  "student", student.fingerprint or "",
                                                                  agents=s.hybrid_k)))
        finally:
            self.engines.release()
        return ev

    def _single_model_jobs(self, ev: Evaluations, name: str, model: str, revision: str,
                           perturbed: list[Item]) -> None:
        """Everything one single-agent model answers, back to back so that it loads once: the clean
        items, the perturbed ones, the OOD task, the review probe."""
        c, s = self.config, self.config.evaluate

        def run(suffix: str, **update: Any) -> GenerateConfig:
            return c.eval_run(name + suffix, "single", model, "student", revision).model_copy(update=update)

        clean = ev.clean[name] = self.job(EvalJob(name, run("")))
        if perturbed:
            ev.perturbed[name] = self.job(EvalJob(f"{name}@perturbed", run("@perturbed"), items=perturbed,
                                                  task=PerturbedTask(self.task), identity={"perturbed": True}))
        if s.ood_task:
            ood = run("@ood", task=s.ood_task, task_options=s.ood_task_options)
            ev.ood[name] = self.job(EvalJob(f"{name}@ood", GenerateConfig.model_validate(ood.model_dump())))
        if s.review:
            ev.review[name] = self.job(EvalJob(f"{name}@review", run("@review"), system=ReviewProbe(clean.traces()),
                                               identity={"system": "review", "first": clean.fingerprint}))

    def _perturbed_items(self, items: list[Item]) -> list[Item]:
        s = self.config.evaluate
        perturbed = perturb(self.task, items, s.perturbations, s.sampling.seed)
        if s.perturbation_file:
            perturbed += load_perturbation_file(s.perturbation_file)
        return perturbed

    def _gate_student(self, ev: Evaluations, trained: dict[str, Distilled]) -> str:
        """The configured student, else the most accurate on the clean items (ties: first strategy)."""
        if self.config.gate_student is not None:
            name = student_name(self.config.gate_student)
            if name not in trained:
                raise PipelineError(f"gate_student {self.config.gate_student!r} produced no student")
            return name
        accuracy = {name: compute_metrics(ev.clean[name].traces()).accuracy for name in trained}
        return max(accuracy, key=accuracy.__getitem__)


def run_pipeline(config: PipelineConfig, on_event: EventCallback | None = None) -> dict[str, Any]:
    """Run (or resume) every stage of the pilot in ``config.out``; unchanged stages are skipped.

    Returns ``out``, ``traces`` (the debate's traces.jsonl), ``students`` (strategy -> directory),
    ``skipped`` (strategy -> why it has no student), ``eval`` (system -> directory), ``report`` (file
    name -> path: report.md, report.html, decision.json, summary.json, plots), ``decision`` (the
    gate's :class:`~agentark.gate.Decision` as JSON) and ``stages`` (stage -> "ran" | "cached").
    Raises :class:`PipelineError` when no strategy produced a student.
    """
    from agentark.pipeline.report import hybrid_plan, report, serve  # it imports this module's types

    config.root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(config.root / "pipeline.json", {"config": config.model_dump(mode="json")})
    run = _Pipeline(config, on_event)
    run.generate()
    distilled = run.distill()
    skipped = {s: d.skipped for s, d in distilled.items() if d.skipped}
    if len(skipped) == len(distilled):
        raise PipelineError("no strategy produced a student: " + "; ".join(f"{s}: {r}" for s, r in skipped.items()))
    evaluations = run.evaluate(distilled)
    hybrid = hybrid_plan(config, evaluations)  # the router the gate would recommend, for serve and the gate
    served = serve(config, evaluations, hybrid, run)
    record = report(config, evaluations, skipped, hybrid, served, run)
    return {
        "out": str(config.root),
        "traces": str(config.traces_dir / TRACES_FILE),
        "students": {s: str(d.path) for s, d in distilled.items() if d.path is not None},
        "skipped": skipped,
        "eval": {e.name: str(e.dir) for e in evaluations.all()},
        "report": {name: str(config.root / "report" / name) for name in record.result["files"]},
        "decision": record.result["decision"],
        "stages": run.stages,
    }


__all__ = ["DebateSettings", "EvaluateSettings", "Evaluations", "EventCallback", "MultiAgentSystem",
           "PipelineConfig", "PipelineError", "ServeSettings", "run_pipeline", "student_name"]
