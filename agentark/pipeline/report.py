"""The pilot's last two stages: serve (latency over HTTP) and report (the rollout gate).

They run after the evaluations (:func:`agentark.pipeline.run.run_pipeline`), on what they are given:
the settings, the evaluations, a sink for progress events and, for serve, a way to free the engine
the evaluations left loaded. Both are cached like every stage (:func:`~agentark.pipeline.cache.run_stage`)
by what decides their numbers: the evaluations' fingerprints, the load, the gate's settings.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from functools import partial
from typing import Any

from agentark.config import stable_hash
from agentark.engines import close_engine, get_engine
from agentark.evaluate import EvalResult, RobustnessTable, review_metrics, robustness_table
from agentark.gate import (
    Decision,
    HybridEstimate,
    ServedLatency,
    agreement_confidence,
    decide,
    plan_hybrid,
    write_report,
)
from agentark.mas import get_system
from agentark.mas.base import first_prompt
from agentark.pipeline.cache import StageRecord, free_memory, run_stage
from agentark.pipeline.evaluation import Evaluations
from agentark.pipeline.settings import MAS, EventCallback, PipelineConfig, student_name
from agentark.serve.loadtest import load_label, measure_served
from agentark.serve.systems import Hybrid, SingleModel, Team
from agentark.tasks import get_task
from agentark.traces.store import write_json_atomic

logger = logging.getLogger(__name__)

DECISION_FILE = "decision.json"
SUMMARY_FILE = "summary.json"


def hybrid_plan(config: PipelineConfig, ev: Evaluations) -> HybridEstimate | None:
    """The router the gate would recommend (from the student's confidence samples), if any."""
    if ev.confidence is None:
        return None
    student, mas = ev.clean[ev.gate_student].result(config.pricing), ev.clean[MAS].result(config.pricing)
    confidence = ev.confidence.result(config.pricing)
    return plan_hybrid(student.metrics, mas.metrics, agreement_confidence(confidence.traces), config.gate,
                       student_cost_per_query=confidence.metrics.cost_per_1k_usd / 1000.0)


def serve(config: PipelineConfig, ev: Evaluations, hybrid: HybridEstimate | None, emit: EventCallback,
          release_engines: Callable[[], None]) -> StageRecord | None:
    """The serve stage: student, team and (where the gate found a router) the hybrid, served one
    after the other and load-tested. ``release_engines`` frees the model the evaluations left loaded
    (often the teacher) before the served engines load: not a second copy in memory."""
    if not config.serve.enabled:
        return None
    student = {student_name(x): str(config.student_dir(x)) for x in config.strategies}[ev.gate_student]
    threshold = hybrid.threshold if hybrid is not None and math.isfinite(hybrid.threshold) else None
    e = config.evaluate
    fingerprint = stable_hash({
        "student": ev.clean[ev.gate_student].fingerprint, "team": ev.clean[MAS].fingerprint,
        "threshold": threshold, "hybrid_k": e.hybrid_k, "serve": config.serve.model_dump(),
        "sampling": {"single": e.single_temperature, "voting": e.sampling.temperature,
                     "max_new_tokens": e.sampling.max_new_tokens},
        "engines": [config.engine_for("student"), config.engine_for("teacher")],
    })
    return run_stage("serve", fingerprint, config.root / "served",
                     partial(_serve, config, emit, release_engines, ev.gate_student, student, threshold))


def _serve(config: PipelineConfig, emit: EventCallback, release_engines: Callable[[], None], student_label: str,
           student_model: str, threshold: float | None) -> dict[str, Any]:
    e, load = config.evaluate, config.serve
    task = get_task(config.task, **config.task_options)
    conversations = [first_prompt(task, item) for item in task.items("held-out", load.requests)]
    (student_kind, student_options), (teacher_kind, teacher_options) = (
        config.engine_for("student"),
        config.engine_for("teacher"),
    )
    release_engines()
    student_engine = get_engine(student_kind, student_model, **student_options)
    teacher_engine = get_engine(teacher_kind, config.teacher, **teacher_options)
    team = Team(teacher_engine, get_system(MAS, **config.generate_config().system_options()), task)
    systems: list[tuple[str, Any, float]] = [(student_label, SingleModel(student_engine), e.single_temperature),
                                             (MAS, team, e.sampling.temperature)]
    if threshold is not None and e.hybrid_k >= 2:
        systems.append(("hybrid", Hybrid(student_engine, team, task, threshold, k=e.hybrid_k), e.sampling.temperature))
    served = {}
    try:
        for i, (name, system, temperature) in enumerate(systems):
            emit("serve", f"load-testing {name}", i, len(systems))
            result = measure_served(system, conversations, n=load.requests, concurrency=load.concurrency,
                                    rate=load.rate, max_tokens=e.sampling.max_new_tokens, temperature=temperature)
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


def report(config: PipelineConfig, ev: Evaluations, skipped: dict[str, str], hybrid: HybridEstimate | None,
           served: StageRecord | None, emit: EventCallback) -> StageRecord:
    fingerprint = stable_hash({
        "evaluations": {e.name: e.fingerprint for e in ev.all()}, "gate_student": ev.gate_student,
        "skipped": skipped, "pricing": config.pricing.model_dump(), "gate": config.gate.model_dump(),
        "title": config.title, "served": served.fingerprint if served else None,
    })
    latencies = {
        name: ServedLatency.model_validate(v) for name, v in (served.result["served"] if served else {}).items()
    }
    return run_stage("report", fingerprint, config.root / "report",
                     partial(_report, config, emit, ev, skipped, hybrid, latencies))


def _report(config: PipelineConfig, emit: EventCallback, ev: Evaluations, skipped: dict[str, str],
            hybrid: HybridEstimate | None, served: dict[str, ServedLatency]) -> dict[str, Any]:
    out = config.root / "report"
    emit("report", "gating", 0, None)
    results = {name: e.result(config.pricing) for name, e in ev.clean.items()}
    robustness = {name: robustness_table(results[name].traces, e.traces()) for name, e in ev.perturbed.items()}
    student, mas = results[ev.gate_student].metrics, results[MAS].metrics
    decision = decide(student, mas, robustness.get(ev.gate_student), config.gate, hybrid, served=served)
    ood = {name: e.result(config.pricing) for name, e in ev.ood.items()}
    review = {name: review_metrics(e.traces()) for name, e in ev.review.items()}
    e = config.evaluate
    decoding = (f"Decoding: single models (base, students) at temperature {e.single_temperature:g}"
                f"{' (greedy)' if e.single_temperature == 0 else ''}; voting systems (debate, self-consistency, "
                f"the hybrid's confidence samples) sampled at {e.sampling.temperature:g}.")
    files = write_report(out, list(results.values()), decision, robustness or None, title=config.title,
                         ood=ood, review=review, decoding=decoding)
    decision_json = json.loads(decision.model_dump_json())
    write_json_atomic(out / DECISION_FILE, decision_json)
    write_json_atomic(out / SUMMARY_FILE, _summary(ev, results, robustness, ood, review, decision, skipped))
    logger.info("gate: %s", decision.summary)
    return {"decision": decision_json, "files": sorted([*files, DECISION_FILE, SUMMARY_FILE])}


def _summary(ev: Evaluations, results: dict[str, EvalResult], robustness: dict[str, RobustnessTable],
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
