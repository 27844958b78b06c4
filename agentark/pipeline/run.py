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
from functools import partial
from typing import Any, Literal

from agentark.distill.training import TrainHooks
from agentark.evaluate import (
    PerturbedTask,
    ReviewProbe,
    compute_metrics,
    load_perturbation_file,
    perturb,
    sc_k_for_budget,
)
from agentark.pipeline.cache import EngineSlot, free_memory
from agentark.pipeline.chunk import GenerateConfig
from agentark.pipeline.distillation import Distilled, distill
from agentark.pipeline.evaluation import EvalJob, Evaluated, Evaluations, evaluate_job
from agentark.pipeline.generation import generate
from agentark.pipeline.report import hybrid_plan, report, serve
from agentark.pipeline.settings import (
    BASE,
    MAS,
    SELF_CONSISTENCY,
    DebateSettings,
    EvaluateSettings,
    EventCallback,
    PipelineConfig,
    ServeSettings,
    student_name,
)
from agentark.tasks import Item, get_task
from agentark.traces.store import TRACES_FILE, write_json_atomic

logger = logging.getLogger(__name__)

StageStatus = Literal["ran", "cached"]


class PipelineError(RuntimeError):
    """The pipeline cannot go on (e.g. no strategy produced a student); the message says why."""


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
    served = serve(config, evaluations, hybrid, run.emit, run.engines.release)
    if served is not None:
        run.done("serve", served.cached)
    record = report(config, evaluations, skipped, hybrid, served, run.emit)
    run.done("report", record.cached)
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


__all__ = ["DebateSettings", "EvaluateSettings", "Evaluations", "EventCallback", "PipelineConfig", "PipelineError",
           "ServeSettings", "run_pipeline", "student_name"]
