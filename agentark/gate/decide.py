"""The rollout gate: adopt the distilled student, route between it and the team (hybrid), or keep the team.

Gates (each passes, fails or is skipped when it has no target or no data):

* ``accuracy`` — the student keeps at least ``min_relative_accuracy`` (95%) of the multi-agent
  accuracy, tested on the *lower* bound of a paired-bootstrap CI of student / MAS accuracy, so a
  pilot too small to tell is not adopted on luck;
* ``latency_p95`` / ``latency_p99`` — the student's tail latency meets the targets, as measured over
  HTTP at a stated load (:class:`ServedLatency`; the offline batch estimate only when not served);
* ``robustness`` — among perturbed questions whose clean version the student got right, the share
  it gets wrong stays under ``max_perturbation_failure_rate``;
* ``cost`` — the student is cheaper per query than the team (otherwise there is nothing to gain).

Outcome: **adopt** when no gate fails. **hybrid** when only the accuracy gate fails and routing
(student first, the team on low student confidence) is estimated to reach the accuracy target at a
lower cost than the team alone. Otherwise **keep-multi-agent**.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from agentark.evaluate.metrics import SystemMetrics, aligned_correct, compare
from agentark.evaluate.robustness import RobustnessTable
from agentark.tasks.grading import majority_vote
from agentark.traces.schema import QuestionTrace

Outcome = Literal["adopt", "hybrid", "keep-multi-agent"]


class GateConfig(BaseModel):
    """Targets of the rollout gate; ``None`` switches a gate off."""

    model_config = ConfigDict(extra="forbid")

    min_relative_accuracy: float = Field(
        0.95, gt=0.0, description="Student / MAS accuracy; its CI lower bound is tested."
    )
    alpha: float = Field(0.05, gt=0.0, lt=1.0, description="1 - confidence level of the accuracy CI.")
    n_boot: int = Field(2000, ge=100)
    seed: int = 0
    p95_latency_s: float | None = Field(None, gt=0.0)
    p99_latency_s: float | None = Field(None, gt=0.0)
    max_perturbation_failure_rate: float | None = Field(0.2, ge=0.0, le=1.0)
    hybrid_threshold: float | None = Field(
        None,
        description="Fixed student-confidence threshold below which the hybrid falls back; "
        "None = choose from the data.",
    )


class GateResult(BaseModel):
    name: str
    status: Literal["pass", "fail", "skip"]
    reason: str


class HybridEstimate(BaseModel):
    """A student-first router: queries with confidence below ``threshold`` also go to the team."""

    model_config = ConfigDict(ser_json_inf_nan="constants")  # threshold inf = always fall back

    threshold: float
    fallback_share: float
    accuracy: float
    cost_per_query: float


class ServedLatency(BaseModel):
    """One system's latency as clients saw it over HTTP (``agentark loadtest`` against ``agentark serve``),
    at a stated load: the number the latency gates read. Offline batch timings are throughput only."""

    system: str
    load: str = Field(description="e.g. 'concurrency 4' or 'Poisson 0.5/s'.")
    requests: int
    errors: int
    p50_s: float | None
    p95_s: float | None
    p99_s: float | None
    ttft_p50_s: float | None = None
    throughput_rps: float
    routes: dict[str, int] = Field(default_factory=dict)


class Decision(BaseModel):
    model_config = ConfigDict(ser_json_inf_nan="constants")  # a ratio over a zero MAS accuracy is inf

    outcome: Outcome
    summary: str
    student: str
    mas: str
    gates: list[GateResult]
    comparison: dict[str, Any]
    hybrid: HybridEstimate | None = None
    served: dict[str, ServedLatency] = Field(default_factory=dict)


# --- hybrid routing -------------------------------------------------------------------------------


def agreement_confidence(traces: Sequence[QuestionTrace]) -> dict[str, float]:
    """Per item, the share of the final round's answers that agree with their majority (0 if none).

    A cheap confidence signal: run the student with a few samples (``self_consistency``, k=3); where
    they disagree, the student is unsure and the query is worth the team's cost.
    """
    confidences = {}
    for trace in traces:
        answers = [t.answer for t in trace.final_turns()]
        winner = majority_vote(answers)
        confidences[trace.item_id] = answers.count(winner) / len(answers) if winner is not None and answers else 0.0
    return confidences


def _arrays(student_confidences, student_correct, mas_correct) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    conf = np.asarray(student_confidences, dtype=float)
    student = np.asarray(student_correct, dtype=bool)
    mas = np.asarray(mas_correct, dtype=bool)
    if not (conf.shape == student.shape == mas.shape) or conf.ndim != 1 or conf.size == 0:
        raise ValueError(
            f"confidences and correctness must be equal-length, non-empty: {conf.shape}, {student.shape}, {mas.shape}"
        )
    return conf, student, mas


def estimate_hybrid(student_confidences: Sequence[float], student_correct: Sequence[bool], mas_correct: Sequence[bool],
                    student_cost: float, mas_cost: float, threshold: float) -> HybridEstimate:
    """Accuracy and cost per query of the router on observed items (aligned sequences).

    A fallback query pays for the student *and* the team (the student always answers first).
    """
    conf, student, mas = _arrays(student_confidences, student_correct, mas_correct)
    fallback = conf < threshold
    return HybridEstimate(
        threshold=threshold,
        fallback_share=float(fallback.mean()),
        accuracy=float(np.where(fallback, mas, student).mean()),
        cost_per_query=float(student_cost + fallback.mean() * mas_cost),
    )


def choose_hybrid(student_confidences: Sequence[float], student_correct: Sequence[bool], mas_correct: Sequence[bool],
                  student_cost: float, mas_cost: float, target_accuracy: float) -> HybridEstimate | None:
    """The threshold with the lowest fallback share whose observed accuracy reaches ``target_accuracy``.

    Candidates are the observed confidence values (fall back below each) and +inf (always fall back).
    Chosen and measured on the same items, the estimate is optimistic: choose it on a calibration
    split and re-measure with :func:`estimate_hybrid` where items allow. ``None`` if no threshold works.
    """
    conf, student, mas = _arrays(student_confidences, student_correct, mas_correct)
    order = np.argsort(conf, kind="stable")
    c = conf[order]
    # Falling back on the k least confident items changes the number right by this much.
    gain = np.concatenate([[0], np.cumsum(mas[order].astype(int) - student[order].astype(int))])
    accuracy = (student.sum() + gain) / conf.size
    for k in range(conf.size + 1):
        if k not in (0, conf.size) and c[k - 1] == c[k]:
            continue  # no threshold separates tied confidences
        if accuracy[k] >= target_accuracy - 1e-12:
            threshold = float(c[k]) if k < conf.size else float("inf")
            return estimate_hybrid(conf, student, mas, student_cost, mas_cost, threshold)
    return None


def plan_hybrid(student: SystemMetrics, mas: SystemMetrics, confidences: Mapping[str, float],
                config: GateConfig | None = None, student_cost_per_query: float | None = None) -> HybridEstimate | None:
    """The router for :func:`decide` from per-item student confidences (e.g. :func:`agreement_confidence`).

    Uses ``config.hybrid_threshold`` when set, else the data-chosen threshold reaching
    ``min_relative_accuracy`` x MAS accuracy. ``student_cost_per_query`` must include what the
    confidence signal costs (e.g. the extra samples); it defaults to the student's measured cost.
    """
    config = config or GateConfig()
    student_correct, mas_correct = aligned_correct(student, mas)
    missing = [i for i in student.item_ids if i not in confidences]
    if missing:
        raise ValueError(f"no student confidence for {len(missing)} items, e.g. {missing[:3]}")
    conf = [confidences[i] for i in student.item_ids]
    student_cost = student.cost_per_1k_usd / 1000.0 if student_cost_per_query is None else student_cost_per_query
    mas_cost = mas.cost_per_1k_usd / 1000.0
    if config.hybrid_threshold is not None:
        return estimate_hybrid(conf, student_correct, mas_correct, student_cost, mas_cost, config.hybrid_threshold)
    target = config.min_relative_accuracy * float(mas_correct.mean())
    return choose_hybrid(conf, student_correct, mas_correct, student_cost, mas_cost, target)


# --- gates ----------------------------------------------------------------------------------------


def _accuracy_gate(comparison: Mapping[str, Any], config: GateConfig) -> GateResult:
    rel, mc = comparison["relative"], comparison["mcnemar"]
    level = round(100 * (1 - config.alpha))
    passed = rel["lo"] >= config.min_relative_accuracy
    return GateResult(
        name="accuracy",
        status="pass" if passed else "fail",
        reason=(
            f"student/MAS accuracy {rel['ratio']:.3f} ({level}% CI {rel['lo']:.3f}–{rel['hi']:.3f}); "
            f"lower bound {rel['lo']:.3f} {'≥' if passed else '<'} {config.min_relative_accuracy:.3f} "
            f"[{comparison['accuracy_student']:.3f} vs {comparison['accuracy_mas']:.3f} on {comparison['n']} items, "
            f"McNemar p={mc['p_value']:.3g}]"
        ),
    )


def _latency_gate(name: str, value: float | None, target: float | None, source: str) -> GateResult:
    if value is None:
        return GateResult(name=name, status="skip", reason=f"no successful served request ({source})")
    if target is None:
        return GateResult(name=name, status="skip", reason=f"no target set (student {value:.3f} s, {source})")
    passed = value <= target
    return GateResult(name=name, status="pass" if passed else "fail",
                      reason=f"student {value:.3f} s {'≤' if passed else '>'} target {target:.3f} s ({source})")


def _robustness_gate(robustness: RobustnessTable | None, limit: float | None) -> GateResult:
    if limit is None:
        return GateResult(name="robustness", status="skip", reason="no failure-rate limit set")
    rate = robustness.overall.failure_rate if robustness else None
    if rate is None:
        return GateResult(name="robustness", status="skip",
                          reason="no perturbed items paired with clean ones the student answered right")
    worst = max((r for r in robustness.rows if r.failure_rate is not None), key=lambda r: r.failure_rate)
    passed = rate <= limit
    return GateResult(
        name="robustness",
        status="pass" if passed else "fail",
        reason=(
            f"perturbation failure rate {rate:.3f} {'≤' if passed else '>'} {limit:.3f} "
            f"over {robustness.overall.paired} paired items (worst: {worst.type} {worst.failure_rate:.3f})"
        ),
    )


def _cost_gate(student: SystemMetrics, mas: SystemMetrics) -> GateResult:
    passed = student.cost_per_1k_usd < mas.cost_per_1k_usd
    return GateResult(name="cost", status="pass" if passed else "fail",
                      reason=(f"student ${student.cost_per_1k_usd:.4f} / 1k queries {'<' if passed else '≥'} "
                              f"{mas.name} ${mas.cost_per_1k_usd:.4f} / 1k"))


def decide(student: SystemMetrics, mas: SystemMetrics, robustness: RobustnessTable | None = None,
           config: GateConfig | None = None, hybrid: HybridEstimate | None = None,
           served: Mapping[str, ServedLatency] | None = None) -> Decision:
    """Apply every gate to the student vs. the multi-agent system and pick the outcome (module docstring).

    ``hybrid`` is the router estimate (:func:`plan_hybrid`); without it a failed accuracy gate means
    keep-multi-agent. ``served`` (system name -> latency measured over HTTP) is what the latency gates
    read; without the student's, they fall back to the offline per-query estimate and say so.
    """
    config = config or GateConfig()
    served = dict(served or {})
    comparison = compare(student, mas, n_boot=config.n_boot, alpha=config.alpha, seed=config.seed)
    if student.name in served:
        measured = served[student.name]
        p95, p99, source = measured.p95_s, measured.p99_s, f"served, {measured.load}"
    else:
        p95, p99, source = student.latency_p95_s, student.latency_p99_s, "offline batch estimate, not served"
    gates = [
        _accuracy_gate(comparison, config),
        _latency_gate("latency_p95", p95, config.p95_latency_s, source),
        _latency_gate("latency_p99", p99, config.p99_latency_s, source),
        _robustness_gate(robustness, config.max_perturbation_failure_rate),
        _cost_gate(student, mas),
    ]
    failed = [g.name for g in gates if g.status == "fail"]
    mas_cost = mas.cost_per_1k_usd / 1000.0
    target = config.min_relative_accuracy * comparison["accuracy_mas"]
    if not failed:
        outcome: Outcome = "adopt"
        summary = f"Adopt {student.name}: every gate passed against {mas.name}."
    elif failed == ["accuracy"] and hybrid and hybrid.accuracy >= target - 1e-12 and hybrid.cost_per_query < mas_cost:
        outcome = "hybrid"
        summary = (f"Hybrid: {student.name} first, {mas.name} on confidence < {hybrid.threshold:.3g} "
                   f"({hybrid.fallback_share:.0%} of queries): estimated accuracy {hybrid.accuracy:.3f} ≥ target "
                   f"{target:.3f} at ${1000 * hybrid.cost_per_query:.4f} / 1k vs ${mas.cost_per_1k_usd:.4f} / 1k.")
    else:
        outcome = "keep-multi-agent"
        summary = f"Keep {mas.name}: failed {', '.join(failed)}" + (
            "; no hybrid reaches the accuracy target at lower cost." if failed == ["accuracy"] else ".")
    return Decision(outcome=outcome, summary=summary, student=student.name, mas=mas.name, gates=gates,
                    comparison=comparison, hybrid=hybrid, served=served)
