"""Metrics on hand-made traces: flips, per-round accuracy with early-stop carry-forward, latency, cost."""

from __future__ import annotations

import pytest

from agentark.evaluate.metrics import (
    Pricing,
    compare,
    compute_metrics,
    query_latency,
    sc_k_for_budget,
    strict_final_correct,
    summarize_debate,
)

from trace_factory import GOLD, make_trace, single_traces, turn


@pytest.fixture
def debate():
    """Three questions, 3 agents, 2 rounds configured (7 is right).

    q1: [5 7 5] -> [7 7 5]   agent 0 corrects itself; majority wrong -> right
    q2: [7 7 7]              consensus in round 0: stopped early, carried forward into round 1
    q3: [7 7 4] -> [4 4 4]   agents 0 and 1 talked out of the right answer
    """
    return [
        make_trace("q1", [["5", "7", "5"], ["7", "7", "5"]], latencies=[[1, 2, 3], [1, 1, 4]]),
        make_trace("q2", [["7", "7", "7"]], latencies=[[2, 2, 2]]),
        make_trace("q3", [["7", "7", "4"], ["4", "4", "4"]]),
    ]


def test_round_accuracy_carries_early_stopped_questions_forward(debate):
    rounds = compute_metrics(debate).rounds
    assert [r.round for r in rounds.rounds] == [0, 1]
    assert rounds.rounds[0].mean_agent == pytest.approx((1 / 3 + 1 + 2 / 3) / 3)
    assert rounds.rounds[0].majority == pytest.approx(2 / 3)  # q2, q3 right
    assert rounds.rounds[1].mean_agent == pytest.approx((2 / 3 + 1 + 0) / 3)  # q2 still counts as all right
    assert rounds.rounds[1].majority == pytest.approx(2 / 3)  # q1, q2 right
    assert rounds.consensus_rate == pytest.approx(2 / 3)  # q2 and q3 (all agree on a wrong answer)
    assert rounds.mean_rounds_run == pytest.approx(5 / 3)
    # The last round's majority is the debate's final answer.
    assert rounds.rounds[-1].majority == pytest.approx(compute_metrics(debate).accuracy)


def test_flips_between_rounds(debate):
    (flips,) = compute_metrics(debate).rounds.flips
    assert (flips.from_round, flips.to_round) == (0, 1)
    assert (flips.wrong_to_right, flips.right_to_wrong, flips.net) == (1, 2, -1)


def test_latency_is_sum_over_rounds_of_the_slowest_agent(debate):
    assert [query_latency(t) for t in debate] == [3 + 4, 2, 1 + 1]
    m = compute_metrics(debate, wall_latencies={"q1": 1.0, "q2": 2.0, "q3": 3.0})
    assert m.latencies_s == [1.0, 2.0, 3.0] and m.latency_p50_s == 2.0
    with pytest.raises(ValueError, match="lacks 1 item ids"):
        compute_metrics(debate, wall_latencies={"q1": 1.0, "q2": 2.0})


def test_summarizer_turn_is_its_own_round_and_decides_strict_answer():
    summary = turn(3, 2, GOLD, latency=5.0, role="summarizer")
    trace = make_trace("q", [["1", "1", "2"], ["1", "1", "7"]], summary=summary)
    assert query_latency(trace) == 1 + 1 + 5
    assert trace.final_correct and strict_final_correct(trace)
    unmarked = turn(3, 2, GOLD, strict=False, role="summarizer")  # no strict answer: majority of strict answers
    assert not strict_final_correct(make_trace("q", [["1", "1", "7"]], summary=unmarked))


def test_strict_accuracy_counts_only_marked_answers():
    traces = single_traces([True, True, False, True])
    traces[1] = make_trace("q1", [[GOLD]], system="single", strict=False)  # right only by the last-number rule
    m = compute_metrics(traces)
    assert m.accuracy == 0.75 and m.strict_accuracy == 0.5
    assert m.rounds is None  # one agent: no team statistics


def test_tokens_calls_wall_time_and_cost(debate):
    m = compute_metrics(debate, Pricing(usd_per_gpu_hour=3.6, gpus=2), wall_time_s=30.0)
    assert m.calls_per_query == pytest.approx((6 + 3 + 6) / 3)
    assert m.prompt_tokens_per_query == pytest.approx(10 * 15 / 3)
    assert m.generated_tokens_per_query == pytest.approx(5 * 15 / 3)
    assert m.throughput_qps == pytest.approx(0.1)
    assert m.cost_per_1k_usd == pytest.approx(1000 * 3.6 * 2 * 30 / 3600 / 3)
    tokens = Pricing(mode="tokens", usd_per_million_prompt_tokens=1.0, usd_per_million_generated_tokens=4.0)
    assert compute_metrics(debate, tokens).cost_per_1k_usd == pytest.approx(1000 * (50 * 1 + 25 * 4) / 1e6)
    # Without a measured wall time, queries are assumed served `concurrency` at a time.
    estimated = compute_metrics(debate, concurrency=2)
    assert estimated.wall_time_s == pytest.approx((7 + 2 + 2) / 2)


def test_metrics_refuse_mixed_runs_and_repeated_items(debate):
    with pytest.raises(ValueError, match="mix several"):
        compute_metrics(debate + single_traces([True]))
    with pytest.raises(ValueError, match="duplicate item ids"):
        compute_metrics(debate + debate[:1])


def test_compare_pairs_by_item_id():
    student = compute_metrics(single_traces([True, False, False, True, False]), name="student")
    mas_traces = single_traces([True, True, True, True, False], system="debate")
    mas = compute_metrics(list(reversed(mas_traces)), name="debate")  # order must not matter
    result = compare(student, mas)
    assert result["n"] == 5 and result["accuracy_student"] == 0.4 and result["accuracy_mas"] == 0.8
    assert result["mcnemar"]["b01"] == 2 and result["mcnemar"]["b10"] == 0
    assert result["difference"]["mean"] == pytest.approx(-0.4) and result["relative"]["ratio"] == pytest.approx(0.5)
    other = compute_metrics(single_traces([True] * 6, system="debate"), name="debate")
    with pytest.raises(ValueError, match="different items"):
        compare(student, other)


def test_summarize_debate(debate):
    summary = summarize_debate(debate)
    assert summary["questions"] == 3 and summary["agents"] == 3
    assert summary["per_round"]["round_1"]["majority"] == pytest.approx(2 / 3)
    assert summary["flips"]["round_0->1"] == {"wrong_to_right": 1, "right_to_wrong": 2, "net": -1}
    assert summary["accuracy"]["majority_minus_mean_agent"] == pytest.approx(2 / 3 - 5 / 9)
    assert summary["tokens_per_question"] == {"prompt": 50.0, "generated": 25.0}


def test_sc_k_for_budget():
    debate = [make_trace(f"q{i}", [["7"] * 3] * 2, completion_tokens=100) for i in range(2)]  # 600 tokens/q
    single = [make_trace(f"q{i}", [["7"]], system="single", completion_tokens=110) for i in range(2)]
    assert sc_k_for_budget(debate, single) == 5  # 600 / 110 = 5.45
    assert sc_k_for_budget(single, debate) == 1  # never below one sample
    with pytest.raises(ValueError):
        sc_k_for_budget(debate, [make_trace("q", [["7"]], completion_tokens=0)])
