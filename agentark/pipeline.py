"""One command for a whole pilot: debate traces -> distilled students -> evaluation -> gate -> report.

``agentark run pipeline.yaml`` (:func:`run_pipeline` on a :class:`PipelineConfig`) runs, in order:

1. **generate** — the teacher debate on the train split (:func:`agentark.mas.generate.generate`);
2. **distill** — one student per selected strategy (``rsft``, ``da``, ``sft``: :func:`train_sft`;
   ``pad``: :func:`train_pad`);
3. **evaluate** — every system on the *same* held-out items: the student's base model alone, a
   self-consistency vote and the debate on the teacher, each student; then each student on perturbed
   items (robustness), base and students on an optional out-of-distribution task and in the two-turn
   self-review probe, and the gate's student sampled ``hybrid_k`` times (its confidence for routing);
4. **serve** — the gate's student, the debate and (where the gate found a router) the hybrid, each
   served in turn over HTTP on this machine and load-tested at ``serve``'s load: the latency gates
   read these, not the offline batches (whose timings are reported as throughput only);
5. **report** — the rollout gate (best student vs. the debate) and ``report.md`` / ``report.html``.

Layout of the run root ``out``::

    traces/               teacher debate traces (generate's own resumable store)
    students/<strategy>/  distilled students (train_sft / train_pad manifests); students/prm/: PAD's PRM
    eval/<system>/        traces.jsonl of one evaluated system + stage.json (fingerprint, wall time)
    served/               stage.json with each served system's latency (p50/p95/p99, TTFT, load)
    report/               report.md, report.html, plots, decision.json, summary.json

Caching: every stage directory holds a ``stage.json`` written by :func:`run_stage`, with a
fingerprint of what decides the stage's output. A complete stage with the same fingerprint is
skipped and its recorded result reused; a changed fingerprint clears the directory and re-runs the
stage (outputs of different inputs are never mixed); an incomplete one (a crash) re-runs in place,
where the stores resume (traces by question id) and training starts over. Fingerprints chain — a
student's covers the traces' fingerprint, an evaluation's the student's manifest fingerprint, the
report's every evaluation's — so a change re-runs exactly the stages downstream of it. Paths are not
part of any fingerprint: a moved run root stays cached.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agentark.config import GenerateConfig, StageConfig, stable_hash
from agentark.distill.grpo import PADConfig
from agentark.distill.registry import get_strategy
from agentark.distill.sft import SFTDistillConfig
from agentark.distill.training import canonical_hash, read_manifest
from agentark.engines import Engine, SamplingParams, close_engine, get_engine, with_batch_size
from agentark.evaluate import (
    PERTURBATION_TYPES,
    EvalResult,
    PerturbedTask,
    Pricing,
    RobustnessTable,
    compute_metrics,
    evaluate_system,
    load_perturbation_file,
    perturb,
    review_metrics,
    review_probe,
    robustness_table,
    sc_k_for_budget,
)
from agentark.gate import (Decision, GateConfig, HybridEstimate, ServedLatency, agreement_confidence, decide,
                           plan_hybrid, write_report)
from agentark.mas import MultiAgentSystem, RunContext, get_system
from agentark.mas.base import first_prompt
from agentark.mas.generate import chunk_seed, generate
from agentark.models.packs import DEFAULT_MODEL
from agentark.serve.loadtest import load_label, measure_served
from agentark.serve.systems import Hybrid, SingleModel, Team
from agentark.tasks import TASK_NAMES, Item, Task, get_task
from agentark.traces.schema import QuestionTrace
from agentark.traces.store import TRACES_FILE, TraceStore, read_traces, write_json_atomic

logger = logging.getLogger(__name__)

Strategy = Literal["rsft", "da", "sft", "pad"]
Role = Literal["teacher", "student"]
StageStatus = Literal["ran", "cached"]
EventCallback = Callable[[str, str, int, int | None], None]
"""``on_event(stage, message, done, total)``: ``total`` is ``None`` while unknown; a stage's last event
("done", "cached" or "skipped: ...") has ``done == total == 1``, so a progress bar can close on it."""

STAGE_FILE = "stage.json"
WALL_FILE = "wall.json"
DECISION_FILE = "decision.json"
SUMMARY_FILE = "summary.json"
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


class DebateSettings(_Section):
    """The teacher: a multi-agent debate, run on the train split and again on the held-out items."""

    agents: int = Field(3, ge=2)
    rounds: int = Field(2, ge=1)
    early_stop: bool = True
    summarizer: bool = False
    n_train: int = Field(50, ge=1, description="Train questions debated (the first n of the train split).")
    temperature: float = Field(0.7, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(256, ge=1)
    seed: int = 0
    batch_size: int = Field(32, ge=1, description="Sequences per forward pass (hf engine), in every stage.")
    chunk_size: int = Field(16, ge=1, description="Questions per debate batch; traces are saved after each.")


class EvaluateSettings(_Section):
    """Which systems run on the held-out items, and how they decode (alike, so they compare fairly)."""

    n_eval: int = Field(50, ge=1, description="Held-out questions every system answers (the first n).")
    max_new_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.7, gt=0.0, description="Voting systems (debate, self-consistency, the hybrid's "
                               "confidence samples) sample at this temperature: identical greedy voters agree.")
    single_temperature: float = Field(0.0, ge=0.0, description="Single models (base, students, review probe): "
                                      "greedy by default, as single-model benchmarks are run.")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int = 0
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
    strategies: list[Strategy] = Field(default_factory=lambda: ["rsft"], min_length=1)
    training: dict[Strategy, dict[str, Any]] = Field(
        default_factory=dict, description="Per strategy, SFTDistillConfig / PADConfig settings.")
    gate_student: Strategy | None = Field(None, description="Student the gate judges; default: the most accurate.")
    evaluate: EvaluateSettings = Field(default_factory=EvaluateSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    pricing: Pricing = Field(default_factory=Pricing)
    gate: GateConfig = Field(default_factory=GateConfig)
    title: str = "AgentArk pilot report"

    @model_validator(mode="after")
    def _check(self) -> PipelineConfig:
        if self.task not in TASK_NAMES:
            raise ValueError(f"unknown task {self.task!r}; valid tasks: {', '.join(TASK_NAMES)}")
        if len(set(self.strategies)) != len(self.strategies):
            raise ValueError(f"strategies repeat a name: {self.strategies}")
        if self.gate_student is not None and self.gate_student not in self.strategies:
            raise ValueError(f"gate_student {self.gate_student!r} is not among strategies {self.strategies}")
        for strategy in self.strategies:
            self.distill_config(strategy)  # a typo in a training override fails now, not after the debate
        return self

    @property
    def root(self) -> Path:
        return Path(self.out)

    @property
    def traces_dir(self) -> Path:
        return self.root / "traces"

    def student_dir(self, strategy: Strategy) -> Path:
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
            engine=self.engine, engine_options=self.engine_options, temperature=g.temperature, top_p=g.top_p,
            max_new_tokens=g.max_new_tokens, seed=g.seed, batch_size=g.batch_size, chunk_size=g.chunk_size,
            backend=self.backend, workers=self.workers, out=str(self.traces_dir),
        )

    def distill_config(self, strategy: Strategy) -> SFTDistillConfig | PADConfig:
        """One strategy's training settings: the overrides from ``training`` on the pipeline's paths."""
        overrides = dict(self.training.get(strategy, {}))
        managed = sorted(MANAGED_TRAINING_KEYS & set(overrides))
        if managed:
            raise ValueError(f"training.{strategy} sets {managed}; the pipeline sets those (use student / out)")
        out = str(self.student_dir(strategy))
        if strategy == "pad":
            # The PRM lives beside the student, so a GRPO-only change does not throw the trained PRM away.
            prm = {"out": str(self.root / "students" / "prm"), **overrides.pop("prm", {})}
            return PADConfig(model=self.student_model, out=out, prm=prm, **overrides)
        return SFTDistillConfig(strategy=strategy, traces=str(self.traces_dir), model=self.student_model,
                                out=out, **overrides)

    def engine_for(self, role: Role) -> tuple[str, dict[str, Any]]:
        """(engine kind, options) of the teacher's or the student's jobs; every engine batches
        ``generate.batch_size`` sequences unless its options say otherwise."""
        if role == "teacher":
            kind, options = self.engine, self.engine_options
        else:
            kind = self.student_engine or self.engine
            # The teacher's options carry over only with the teacher's engine.
            inherited = self.engine_options if self.student_engine is None else {}
            options = inherited if self.student_engine_options is None else self.student_engine_options
        return kind, with_batch_size(kind, options, self.generate.batch_size)


# --- the stage cache ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageRecord:
    """A finished stage: its fingerprint, its JSON result, and whether this run skipped it."""

    name: str
    fingerprint: str
    result: dict[str, Any]
    cached: bool


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def run_stage(name: str, fingerprint: str, out_dir: str | Path, fn: Callable[[], dict[str, Any]]) -> StageRecord:
    """Run ``fn`` (which writes into ``out_dir`` and returns a JSON-able result) unless already done.

    ``out_dir/stage.json`` records the fingerprint before ``fn`` starts and the result once it
    returns. Same fingerprint and complete: skipped, the recorded result returned. Same fingerprint
    but incomplete (an earlier run died): ``fn`` runs again over what it left, so resumable work
    resumes. Other fingerprint: ``out_dir`` is cleared first. A non-empty ``out_dir`` without a
    record was not made by a stage and is left alone (error), never deleted.
    """
    out = Path(out_dir)
    path = out / STAGE_FILE
    record = _read_json(path)
    if record is None and out.exists() and any(out.iterdir()):
        raise PipelineError(f"{out} holds files no pipeline stage recorded; move them away or use another out")
    if record is not None and record.get("fingerprint") == fingerprint:
        if record.get("complete"):
            logger.info("%s: unchanged (fingerprint %s), skipped", name, fingerprint)
            return StageRecord(name, fingerprint, record.get("result", {}), cached=True)
        logger.info("%s: resuming an interrupted run", name)
    elif record is not None:
        logger.info("%s: inputs changed (fingerprint %s -> %s); clearing %s", name, record.get("fingerprint"),
                    fingerprint, out)
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"stage": name, "fingerprint": fingerprint, "complete": False})
    start = time.perf_counter()
    result = fn()
    write_json_atomic(path, {"stage": name, "fingerprint": fingerprint, "complete": True, "result": result,
                             "duration_s": time.perf_counter() - start})
    return StageRecord(name, fingerprint, result, cached=False)


# --- engines --------------------------------------------------------------------------------------


def free_memory() -> None:
    """Hand a dropped model's memory back now, not at some later collection (24 GiB machines)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


class EngineSlot:
    """At most one model in memory: asking for another model (or engine) frees the current one first.

    Evaluation runs all jobs of one model back to back, so each model loads once (the gate's
    student may load a second time for its confidence samples, chosen only after all students ran).
    """

    def __init__(self) -> None:
        self._key: tuple[str, str, str] | None = None
        self._engine: Engine | None = None

    def get(self, model: str, kind: str, options: dict[str, Any]) -> Engine:
        key = (model, kind, stable_hash(options))
        if self._engine is None or self._key != key:
            self.release()
            logger.info("loading %s (%s engine)", model, kind)
            self._engine = get_engine(kind, model, **options)
            self._key = key
        return self._engine

    def release(self) -> None:
        if self._engine is not None:
            close_engine(self._engine)
            self._engine, self._key = None, None
            free_memory()


# --- evaluation jobs ------------------------------------------------------------------------------


class _ReviewProbe(MultiAgentSystem):
    """The self-review probe as a system, so it is run, resumed and timed like every other one."""

    name = "review"

    def __init__(self, first: Sequence[QuestionTrace]):
        self.first = {t.item_id: t for t in first}

    def run(self, ctx: RunContext, items: list[Item]) -> list[QuestionTrace]:
        return review_probe(ctx, items, [self.first[item.id] for item in items])


@dataclass
class EvalJob:
    """One system on one item set. ``identity`` and ``model_identity`` (a student's manifest
    fingerprint, not its path) decide the traces together with the task, items and decoding."""

    name: str
    system: MultiAgentSystem
    identity: dict[str, Any]
    model: str
    model_identity: str
    task: Task
    task_identity: dict[str, Any]
    items: list[Item]
    role: Role = "student"


@dataclass(frozen=True)
class Evaluated:
    """A finished evaluation: where its traces are and the wall time measured while making them."""

    name: str
    fingerprint: str
    dir: Path
    wall_time_s: float

    def traces(self) -> list[QuestionTrace]:
        return list(read_traces(self.dir))

    def result(self, pricing: Pricing) -> EvalResult:
        return EvalResult.from_traces(self.name, self.traces(), self.wall_time_s, pricing)


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


def student_name(strategy: str) -> str:
    return f"student-{strategy}"


def _items_hash(items: Sequence[Item]) -> str:
    return canonical_hash([asdict(item) for item in items])


def _distill_fingerprint(config: SFTDistillConfig | PADConfig, traces_fingerprint: str) -> str:
    return stable_hash({**get_strategy(strategy_of(config)).identity(config), "traces": traces_fingerprint})


def strategy_of(config: SFTDistillConfig | PADConfig) -> str:
    return "pad" if isinstance(config, PADConfig) else config.strategy


# --- the pipeline ---------------------------------------------------------------------------------


class _Pipeline:
    """One run of :func:`run_pipeline`: the config, the event sink, the engine slot, stage statuses."""

    def __init__(self, config: PipelineConfig, on_event: EventCallback | None):
        self.config = config
        self.settings = config.evaluate
        self.emit: EventCallback = on_event or (lambda stage, message, done, total: None)
        self.task = get_task(config.task, **config.task_options)
        self.task_identity = {"task": config.task, "options": config.task_options}
        self.engines = EngineSlot()
        self.stages: dict[str, StageStatus] = {}

    def stage(self, name: str, fingerprint: str, out_dir: Path, fn: Callable[[], dict[str, Any]]) -> StageRecord:
        record = run_stage(name, fingerprint, out_dir, fn)
        self.stages[name] = "cached" if record.cached else "ran"
        skipped = record.result.get("skipped")
        self.emit(name, f"skipped: {skipped}" if skipped else "cached" if record.cached else "done", 1, 1)
        return record

    # 1. generate

    def generate(self) -> StageRecord:
        config = self.config.generate_config()

        def run() -> dict[str, Any]:
            progress = partial(self.emit, "generate", "debating")
            store = generate(config, task=self.task, on_progress=progress)
            free_memory()
            return {"questions": len(store)}

        fingerprint = stable_hash({"config": config.config_hash(), "n": config.n})
        return self.stage("generate", fingerprint, Path(config.out), run)

    # 2. distill

    def distill(self, traces: StageRecord) -> tuple[dict[str, StageRecord], dict[str, str]]:
        students: dict[str, StageRecord] = {}
        skipped: dict[str, str] = {}
        for strategy in self.config.strategies:
            config = self.config.distill_config(strategy)
            name = f"distill:{strategy}"
            record = self.stage(name, _distill_fingerprint(config, traces.fingerprint), Path(config.out),
                                partial(self._train, name, config))
            if "skipped" in record.result:
                skipped[strategy] = record.result["skipped"]
            else:
                students[strategy] = record
        return students, skipped

    def _train(self, name: str, config: SFTDistillConfig | PADConfig) -> dict[str, Any]:
        strategy = get_strategy(strategy_of(config))
        reason = strategy.empty(config, list(read_traces(self.config.traces_dir)))
        if reason:
            logger.warning("%s skipped: %s", name, reason)
            return {"skipped": reason}
        self.emit(name, "training", 0, None)
        path = strategy.train(config, self.config.traces_dir, partial(self.emit, name, "training"))
        free_memory()
        return {"fingerprint": read_manifest(path)["fingerprint"]}

    # 3. evaluate

    def evaluate(self, students: dict[str, StageRecord]) -> Evaluations:
        items = self.task.items("held-out", self.settings.n_eval)
        perturbed = self._perturbed_items(items)
        # Paths come from the config, never from stage records: a moved run root stays usable.
        trained = {student_name(s): (str(self.config.student_dir(s)), r.result["fingerprint"])
                   for s, r in students.items()}
        teacher, ev = self.config.teacher, Evaluations()
        try:
            if self.settings.base:
                base = self.config.student_model
                self._single_model_jobs(ev, BASE, base, base, items, perturbed=[])
            debate = get_system(MAS, **self.config.generate_config().system_options())
            ev.clean[MAS] = self.run_job(self._job(MAS, debate, teacher, teacher, items, role="teacher"))
            if self.settings.self_consistency:
                ev.sc_k = self.settings.sc_k or sc_k_for_budget(ev.clean[MAS].traces(), ev.clean[BASE].traces())
                sc = get_system(SELF_CONSISTENCY, k=ev.sc_k)
                ev.clean[SELF_CONSISTENCY] = self.run_job(self._job(SELF_CONSISTENCY, sc, teacher, teacher, items,
                                                                    role="teacher"))
            for name, (path, fingerprint) in trained.items():
                self._single_model_jobs(ev, name, path, fingerprint, items, perturbed)
            ev.gate_student = self._gate_student(ev, trained)
            if self.settings.hybrid_k:
                path, fingerprint = trained[ev.gate_student]
                sampler = get_system(SELF_CONSISTENCY, k=self.settings.hybrid_k)
                ev.confidence = self.run_job(self._job(f"{ev.gate_student}@confidence", sampler, path, fingerprint,
                                                       items))
        finally:
            self.engines.release()
        return ev

    def _single_model_jobs(self, ev: Evaluations, name: str, model: str, identity: str, items: list[Item],
                           perturbed: list[Item]) -> None:
        """Everything one single-agent model answers, back to back so that it loads once: the clean
        items, the perturbed ones, the OOD task, the review probe."""
        s, job = self.settings, partial(self._job, model=model, model_identity=identity)
        clean = ev.clean[name] = self.run_job(job(name, get_system("single"), items=items))
        if perturbed:
            ev.perturbed[name] = self.run_job(job(f"{name}@perturbed", get_system("single"), items=perturbed,
                                                  task=PerturbedTask(self.task)))
        if s.ood_task:
            ood_task = get_task(s.ood_task, **s.ood_task_options)
            ev.ood[name] = self.run_job(job(
                f"{name}@ood", get_system("single"), items=ood_task.items("held-out", s.n_eval), task=ood_task,
                task_identity={"task": s.ood_task, "options": s.ood_task_options}))
        if s.review:
            probe = _ReviewProbe(clean.traces())
            ev.review[name] = self.run_job(job(f"{name}@review", probe, items=items,
                                               identity={"system": "review", "first": clean.fingerprint}))

    def _job(self, name: str, system: MultiAgentSystem, model: str, model_identity: str, items: list[Item],
             task: Task | None = None, task_identity: dict[str, Any] | None = None,
             identity: dict[str, Any] | None = None, role: Role = "student") -> EvalJob:
        # A registry system's instance attributes are exactly its constructor options (agents, rounds, k...).
        return EvalJob(
            name=name, system=system, identity=identity or {"system": system.name, **vars(system)},
            model=model, model_identity=model_identity, task=task or self.task,
            task_identity=task_identity or self.task_identity, items=items, role=role,
        )

    def _perturbed_items(self, items: list[Item]) -> list[Item]:
        perturbed = perturb(self.task, items, self.settings.perturbations, self.settings.seed)
        if self.settings.perturbation_file:
            perturbed += load_perturbation_file(self.settings.perturbation_file)
        return perturbed

    def _gate_student(self, ev: Evaluations, trained: dict[str, tuple[str, str]]) -> str:
        """The configured student, else the most accurate on the clean items (ties: first strategy)."""
        if self.config.gate_student is not None:
            name = student_name(self.config.gate_student)
            if name not in trained:
                raise PipelineError(f"gate_student {self.config.gate_student!r} produced no student")
            return name
        accuracy = {name: compute_metrics(ev.clean[name].traces()).accuracy for name in trained}
        return max(accuracy, key=accuracy.__getitem__)

    def _eval_fingerprint(self, job: EvalJob) -> str:
        """What decides an evaluation's traces *and its wall time*: engine settings and batch size count,
        since the gate reads latency and cost from this run."""
        s = self.settings
        kind, options = self.config.engine_for(job.role)
        return stable_hash({
            "system": job.identity, "model": job.model_identity, "task": job.task_identity,
            "items": _items_hash(job.items),
            "sampling": {"temperature": self.temperature_of(job.system), "top_p": s.top_p,
                         "max_new_tokens": s.max_new_tokens, "seed": s.seed},
            "engine": kind, "engine_options": options, "chunk_size": s.chunk_size,
        })

    def temperature_of(self, system: MultiAgentSystem) -> float:
        """Single models decode greedily (``single_temperature``); systems that vote sample."""
        return self.settings.temperature if system.n_agents > 1 else self.settings.single_temperature

    def run_job(self, job: EvalJob) -> Evaluated:
        fingerprint = self._eval_fingerprint(job)
        out = self.config.root / "eval" / job.name
        record = self.stage(f"eval:{job.name}", fingerprint, out, partial(self._evaluate_job, job, fingerprint, out))
        return Evaluated(job.name, fingerprint, out, record.result["wall_time_s"])

    def _evaluate_job(self, job: EvalJob, fingerprint: str, out: Path) -> dict[str, Any]:
        """Chunk by chunk through the trace store: a crash loses at most the chunk in flight. The wall
        time of finished chunks is kept in ``wall.json`` so a resumed run still reports the whole."""
        stage, s, total = f"eval:{job.name}", self.settings, len(job.items)
        store = TraceStore(out)
        wall = (_read_json(out / WALL_FILE) or {}).get("wall_time_s", 0.0)
        todo = [item for item in job.items if item.id not in store.done_ids]
        self.emit(stage, "evaluating", total - len(todo), total)
        engine = self.config.engine_for(job.role)
        for start in range(0, len(todo), s.chunk_size):
            chunk = todo[start : start + s.chunk_size]
            sampling = SamplingParams(temperature=self.temperature_of(job.system), top_p=s.top_p,
                                      max_new_tokens=s.max_new_tokens,
                                      seed=chunk_seed(s.seed, [item.id for item in chunk]))
            ctx = RunContext(task=job.task, engine=self.engines.get(job.model, *engine), sampling=sampling,
                             config_hash=fingerprint)
            traces, seconds = evaluate_system(job.system, ctx, chunk, batch_size=len(chunk))
            store.append(traces)
            wall += seconds
            write_json_atomic(out / WALL_FILE, {"wall_time_s": wall})
            self.emit(stage, "evaluating", len(store), total)
        return {"wall_time_s": wall, "questions": len(store)}

    # 4. gate + report

    def hybrid_plan(self, ev: Evaluations) -> HybridEstimate | None:
        """The router the gate would recommend (from the student's confidence samples), if any."""
        c = self.config
        if ev.confidence is None:
            return None
        student, mas = ev.clean[ev.gate_student].result(c.pricing), ev.clean[MAS].result(c.pricing)
        confidence = ev.confidence.result(c.pricing)
        return plan_hybrid(student.metrics, mas.metrics, agreement_confidence(confidence.traces), c.gate,
                           student_cost_per_query=confidence.metrics.cost_per_1k_usd / 1000.0)

    def report(self, ev: Evaluations, skipped: dict[str, str], hybrid: HybridEstimate | None,
               served: StageRecord | None) -> StageRecord:
        c = self.config
        fingerprint = stable_hash({
            "evaluations": {e.name: e.fingerprint for e in ev.all()}, "gate_student": ev.gate_student,
            "skipped": skipped, "pricing": c.pricing.model_dump(), "gate": c.gate.model_dump(), "title": c.title,
            "served": served.fingerprint if served else None,
        })
        latencies = {name: ServedLatency.model_validate(v) for name, v in (served.result["served"] if served else {}).items()}
        return self.stage("report", fingerprint, c.root / "report", partial(self._report, ev, skipped, hybrid, latencies))

    def _report(self, ev: Evaluations, skipped: dict[str, str], hybrid: HybridEstimate | None,
                served: dict[str, ServedLatency]) -> dict[str, Any]:
        c, out = self.config, self.config.root / "report"
        self.emit("report", "gating", 0, None)
        results = {name: e.result(c.pricing) for name, e in ev.clean.items()}
        robustness = {name: robustness_table(results[name].traces, e.traces()) for name, e in ev.perturbed.items()}
        student, mas = results[ev.gate_student].metrics, results[MAS].metrics
        decision = decide(student, mas, robustness.get(ev.gate_student), c.gate, hybrid, served=served)
        ood = {name: e.result(c.pricing) for name, e in ev.ood.items()}
        review = {name: review_metrics(e.traces()) for name, e in ev.review.items()}
        s = self.settings
        decoding = (f"Decoding: single models (base, students) at temperature {s.single_temperature:g}"
                    f"{' (greedy)' if s.single_temperature == 0 else ''}; voting systems (debate, self-consistency, "
                    f"the hybrid's confidence samples) sampled at {s.temperature:g}.")
        files = write_report(out, list(results.values()), decision, robustness or None, title=c.title,
                             ood=ood, review=review, decoding=decoding)
        decision_json = json.loads(decision.model_dump_json())
        write_json_atomic(out / DECISION_FILE, decision_json)
        write_json_atomic(out / SUMMARY_FILE, self._summary(ev, results, robustness, ood, review, decision, skipped))
        logger.info("gate: %s", decision.summary)
        return {"decision": decision_json, "files": sorted([*files, DECISION_FILE, SUMMARY_FILE])}

    def serve(self, ev: Evaluations, hybrid: HybridEstimate | None) -> StageRecord | None:
        """The serve stage: student, team and (where the gate found a router) the hybrid, served one
        after the other and load-tested; cached like every stage by what decides the numbers."""
        c, s = self.config, self.settings
        if not c.serve.enabled:
            return None
        student = {student_name(x): str(c.student_dir(x)) for x in c.strategies}[ev.gate_student]
        threshold = hybrid.threshold if hybrid is not None and math.isfinite(hybrid.threshold) else None
        fingerprint = stable_hash({
            "student": ev.clean[ev.gate_student].fingerprint, "team": ev.clean[MAS].fingerprint,
            "threshold": threshold, "hybrid_k": s.hybrid_k, "serve": c.serve.model_dump(),
            "sampling": {"single": s.single_temperature, "voting": s.temperature, "max_new_tokens": s.max_new_tokens},
            "engines": [c.engine_for("student"), c.engine_for("teacher")],
        })
        return self.stage("serve", fingerprint, c.root / "served", partial(self._serve, ev.gate_student, student, threshold))

    def _serve(self, student_name: str, student_model: str, threshold: float | None) -> dict[str, Any]:
        c, s, load = self.config, self.settings, self.config.serve
        conversations = [first_prompt(self.task, item) for item in self.task.items("held-out", load.requests)]
        (student_kind, student_options), (teacher_kind, teacher_options) = c.engine_for("student"), c.engine_for("teacher")
        student_engine = get_engine(student_kind, student_model, **student_options)
        teacher_engine = get_engine(teacher_kind, c.teacher, **teacher_options)
        team = Team(teacher_engine, get_system(MAS, **c.generate_config().system_options()), self.task)
        systems: list[tuple[str, Any, float]] = [(student_name, SingleModel(student_engine), s.single_temperature),
                                                 (MAS, team, s.temperature)]
        if threshold is not None and s.hybrid_k >= 2:
            systems.append(("hybrid", Hybrid(student_engine, team, self.task, threshold, k=s.hybrid_k), s.temperature))
        served = {}
        try:
            for i, (name, system, temperature) in enumerate(systems):
                self.emit("serve", f"load-testing {name}", i, len(systems))
                result = measure_served(system, conversations, n=load.requests, concurrency=load.concurrency,
                                        rate=load.rate, max_tokens=s.max_new_tokens, temperature=temperature)
                served[name] = ServedLatency(
                    system=name, load=load_label(load.concurrency, load.rate), requests=result.sent,
                    errors=result.errors, p50_s=result.latency_p50_s, p95_s=result.latency_p95_s,
                    p99_s=result.latency_p99_s, ttft_p50_s=result.ttft_p50_s, throughput_rps=result.throughput_rps,
                    routes=result.routes).model_dump()
        finally:
            close_engine(student_engine)
            close_engine(teacher_engine)
            free_memory()
        return {"served": served}

    def _summary(self, ev: Evaluations, results: dict[str, EvalResult], robustness: dict[str, RobustnessTable],
                 ood: dict[str, EvalResult], review: dict[str, dict[str, Any]], decision: Decision,
                 skipped: dict[str, str]) -> dict[str, Any]:
        """The report's numbers as JSON, without the per-item vectors (those are in each system's directory)."""
        per_item = {"item_ids", "correct", "latencies_s"}
        return {
            "outcome": decision.outcome,
            "gate_student": ev.gate_student,
            "self_consistency_k": ev.sc_k,
            "skipped_strategies": skipped,
            "systems": {n: json.loads(r.metrics.model_dump_json(exclude=per_item)) for n, r in results.items()},
            "robustness": {n: t.model_dump(mode="json") for n, t in robustness.items()},
            "ood": {n: json.loads(r.metrics.model_dump_json(exclude=per_item)) for n, r in ood.items()},
            "review": review,
        }


def run_pipeline(config: PipelineConfig, on_event: EventCallback | None = None) -> dict[str, Any]:
    """Run (or resume) every stage of the pilot in ``config.out``; unchanged stages are skipped.

    Returns ``out``, ``traces`` (the debate's traces.jsonl), ``students`` (strategy -> directory),
    ``skipped`` (strategy -> why it has no student), ``eval`` (system -> directory), ``report`` (file
    name -> path: report.md, report.html, decision.json, summary.json, plots), ``decision`` (the
    gate's :class:`~agentark.gate.Decision` as JSON) and ``stages`` (stage -> "ran" | "cached").
    Raises :class:`PipelineError` when no strategy produced a student.
    """
    config.root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(config.root / "pipeline.json", {"config": config.model_dump(mode="json")})
    run = _Pipeline(config, on_event)
    traces = run.generate()
    students, skipped = run.distill(traces)
    if not students:
        raise PipelineError("no strategy produced a student: " + "; ".join(f"{s}: {r}" for s, r in skipped.items()))
    evaluations = run.evaluate(students)
    hybrid = run.hybrid_plan(evaluations)  # the router the gate would recommend, for the serve stage and the gate
    report = run.report(evaluations, skipped, hybrid, run.serve(evaluations, hybrid))
    return {
        "out": str(config.root),
        "traces": str(config.traces_dir / TRACES_FILE),
        "students": {s: str(config.student_dir(s)) for s in students},
        "skipped": skipped,
        "eval": {e.name: str(e.dir) for e in evaluations.all()},
        "report": {name: str(config.root / "report" / name) for name in report.result["files"]},
        "decision": report.result["decision"],
        "stages": run.stages,
    }


__all__ = [
    "DebateSettings", "EngineSlot", "EvalJob", "EvaluateSettings", "Evaluated", "EventCallback", "PipelineConfig",
    "PipelineError", "StageRecord", "free_memory", "run_pipeline", "run_stage", "student_name",
]
