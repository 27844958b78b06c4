"""The rollout gate on crafted evaluations: each of adopt, hybrid and keep-multi-agent, and why."""

from __future__ import annotations

import pytest

from agentark.evaluate.metrics import compute_metrics
from agentark.evaluate.robustness import RobustnessRow, RobustnessTable
from agentark.gate.decide import (
    Decision,
    GateConfig,
    agreement_confidence,
    choose_hybrid,
    decide,
    estimate_hybrid,
    plan_hybrid,
)

from trace_factory import make_trace, single_traces

# 100 items: 0-69 both right, 70-79 only the team right, 80-99 both wrong.
MAS_CORRECT = [True] * 80 + [False] * 20
WEAK_STUDENT = [True] * 70 + [False] * 30


def metrics(name: str, correct: list[bool], wall_time_s: float):
    return compute_metrics(single_traces(correct, system=name), wall_time_s=wall_time_s, name=name)


def robustness(failure_rate: float) -> RobustnessTable:
    row = RobustnessRow(type="add_distractor", n=40, accuracy=0.7, paired=40, clean_accuracy=0.8, drop=0.1,
                        failure_rate=failure_rate)
    return RobustnessTable(clean_accuracy=0.8, rows=[row], overall=row.model_copy(update={"type": "all"}))


@pytest.fixture
def mas():
    return metrics("debate", MAS_CORRECT, wall_time_s=600.0)


def test_adopt_when_every_gate_passes(mas):
    student = metrics("student", MAS_CORRECT, wall_time_s=100.0)
    decision = decide(student, mas, robustness(0.1), GateConfig(p95_latency_s=2.0, p99_latency_s=3.0))
    assert decision.outcome == "adopt"
    assert [(g.name, g.status) for g in decision.gates] == [
        ("accuracy", "pass"),
        ("latency_p95", "pass"),
        ("latency_p99", "pass"),
        ("robustness", "pass"),
        ("cost", "pass"),
    ]
    assert "lower bound 1.000 ≥ 0.950" in decision.gates[0].reason
    assert "1.000 s ≤ target 2.000 s" in decision.gates[1].reason


def test_keep_multi_agent_when_accuracy_fails_and_no_hybrid_helps(mas):
    student = metrics("student", [True] * 50 + [False] * 50, wall_time_s=100.0)
    decision = decide(student, mas, robustness(0.1))
    assert decision.outcome == "keep-multi-agent"
    accuracy = decision.gates[0]
    assert accuracy.status == "fail" and "0.625" in accuracy.reason and "< 0.950" in accuracy.reason
    assert decision.comparison["mcnemar"]["b01"] == 30
    # A hybrid that needs the team on every query costs more than the team alone: still keep.
    always = estimate_hybrid(
        [0.5] * 100, student.correct, mas.correct, 0.0005, mas.cost_per_1k_usd / 1000, float("inf")
    )
    kept = decide(student, mas, hybrid=always)
    assert kept.outcome == "keep-multi-agent" and kept.hybrid.threshold == float("inf")
    assert Decision.model_validate_json(kept.model_dump_json()) == kept  # inf survives JSON


def test_hybrid_when_only_accuracy_fails_and_routing_reaches_the_target(mas):
    student = metrics("student", WEAK_STUDENT, wall_time_s=100.0)
    # The student is unsure exactly where it is wrong; least sure where the team can fix it.
    confidence = dict(zip(student.item_ids, [0.9] * 70 + [0.2] * 10 + [0.5] * 20, strict=True))
    hybrid = plan_hybrid(student, mas, confidence)  # target 0.95 x 0.8 = 0.76
    assert (hybrid.threshold, hybrid.fallback_share, hybrid.accuracy) == (0.5, 0.1, 0.8)
    assert hybrid.cost_per_query == pytest.approx((student.cost_per_1k_usd + 0.1 * mas.cost_per_1k_usd) / 1000)
    fixed = plan_hybrid(student, mas, confidence, GateConfig(hybrid_threshold=0.9))  # falls back on 30%
    assert (fixed.fallback_share, fixed.accuracy) == (0.3, 0.8)
    with pytest.raises(ValueError, match="no student confidence for 1 items"):
        plan_hybrid(student, mas, {i: c for i, c in confidence.items() if i != "q5"})
    decision = decide(student, mas, robustness(0.1), hybrid=hybrid)
    assert decision.outcome == "hybrid" and decision.gates[0].status == "fail"
    assert "10% of queries" in decision.summary
    # The same student failing another gate too is not rescued by routing.
    assert decide(student, mas, robustness(0.5), hybrid=hybrid).outcome == "keep-multi-agent"


def test_tail_latency_or_robustness_failure_blocks_adoption(mas):
    student = metrics("student", MAS_CORRECT, wall_time_s=100.0)
    slow = decide(student, mas, config=GateConfig(p99_latency_s=0.5))
    assert slow.outcome == "keep-multi-agent" and slow.gates[2].status == "fail"
    brittle = decide(student, mas, robustness(0.5))
    assert brittle.outcome == "keep-multi-agent" and "0.500 > 0.200" in brittle.gates[3].reason
    unmeasured = decide(student, mas)  # no robustness data, no latency targets: those gates are skipped
    assert unmeasured.outcome == "adopt" and {g.status for g in unmeasured.gates[1:4]} == {"skip"}


def test_estimate_and_choose_hybrid():
    student, team = [True, False, False, True], [True, True, False, True]
    est = estimate_hybrid([0.9, 0.1, 0.3, 0.8], student, team, student_cost=1.0, mas_cost=10.0, threshold=0.5)
    assert (est.fallback_share, est.accuracy, est.cost_per_query) == (0.5, 0.75, 6.0)
    # Ties cannot be split by a threshold: both 0.4s fall back together.
    chosen = choose_hybrid([0.4, 0.4, 0.9, 0.9], student, team, 1.0, 10.0, target_accuracy=0.75)
    assert chosen.threshold == 0.9 and chosen.fallback_share == 0.5
    assert choose_hybrid([0.4] * 4, student, team, 1.0, 10.0, target_accuracy=0.9) is None
    with pytest.raises(ValueError):
        estimate_hybrid([0.1], student, team, 1.0, 1.0, 0.5)


def test_agreement_confidence():
    traces = [make_trace("a", [["7", "7", "1"]], system="self_consistency"),
              make_trace("b", [[None, None, None]], system="self_consistency")]
    assert agreement_confidence(traces) == {"a": pytest.approx(2 / 3), "b": 0.0}
