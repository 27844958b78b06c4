"""Traces -> distillation samples: which trajectory is chosen, and the exact prompt/completion split."""

from __future__ import annotations

import pytest

from agentark.distill import data
from agentark.traces.schema import AgentTurn, QuestionTrace

GOLD = "11"
FOLLOW_UP = "These are the solutions to the problem from other agents: ... Can you give an updated answer?"


def question_prompt(item_id: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"[{item_id}] What is 3 + 4 * 2? Put the final answer in \\boxed{{}}."}]


def default_text(agent: int, round_: int, answer: str | None) -> str:
    return f"Agent {agent} round {round_}: 4 * 2 = 8, 3 + 8 = {answer}. The answer is \\boxed{{{answer}}}."


def make_trace(
    item_id: str,
    rounds: list[list[str | None]],
    texts: dict[tuple[int, int], str] | None = None,
    correct_answers: frozenset[str] = frozenset({GOLD}),
    final_correct: bool | None = None,
) -> QuestionTrace:
    """A debate trace from ``rounds[r][a]`` = agent a's answer in round r.

    Round 0 sees the plain question; later rounds see question + own answer + a follow-up, as in
    the debate system. ``texts[(round, agent)]`` overrides a turn's text. ``final_correct`` defaults
    to "some final-round agent is correct".
    """
    texts = texts or {}
    turns = []
    for r, answers in enumerate(rounds):
        for a, answer in enumerate(answers):
            messages = question_prompt(item_id)
            if r > 0:
                messages += [
                    {"role": "assistant", "content": texts.get((r - 1, a), default_text(a, r - 1, rounds[r - 1][a]))},
                    {"role": "user", "content": FOLLOW_UP},
                ]
            turns.append(
                AgentTurn(
                    agent=a,
                    round=r,
                    messages=messages,
                    text=texts.get((r, a), default_text(a, r, answer)),
                    answer=answer,
                    correct=answer in correct_answers,
                )
            )
    final = [t for t in turns if t.round == len(rounds) - 1]
    return QuestionTrace(
        task="arithmetic", item_id=item_id, question="What is 3 + 4 * 2?", gold=GOLD, system="debate", model_id="m",
        config_hash="h", n_agents=len(rounds[0]), n_rounds=len(rounds), turns=turns, final_answer=GOLD,
        final_correct=any(t.correct for t in final) if final_correct is None else final_correct,
    )


def expected(trace: QuestionTrace, agent: int, round_: int, corrective: bool, strategy: str) -> dict:
    turn = next(t for t in trace.turns if t.agent == agent and t.round == round_)
    return {
        "prompt": question_prompt(trace.item_id),
        "completion": [{"role": "assistant", "content": turn.text}],
        "item_id": trace.item_id, "strategy": strategy, "agent": agent, "round": round_, "corrective": corrective,
    }


# --- RSFT ----------------------------------------------------------------------------------------


def test_rsft_prefers_the_corrective_trajectory():
    trace = make_trace("q1", [[GOLD, "7", GOLD], [GOLD, GOLD, GOLD]])  # agent 1: wrong -> right
    assert data.build_rsft([trace]) == [expected(trace, 1, 1, True, "rsft")]


def test_rsft_prompt_is_the_round0_question_not_the_debate_follow_up():
    trace = make_trace("q1", [["7", GOLD], [GOLD, GOLD]])
    [sample] = data.build_rsft([trace])
    round0, final = trace.round_turns(0)[0], trace.round_turns(1)[0]
    assert sample["prompt"] == round0.messages
    assert sample["prompt"] != final.messages and len(final.messages) == 3
    assert sample["completion"] == [{"role": "assistant", "content": final.text}]


def test_rsft_falls_back_to_majority_then_lowest_agent():
    lowest = make_trace("q1", [["7", GOLD, GOLD], ["7", GOLD, GOLD]])  # no correction: agent 1 (lowest correct)
    # Agent 0 is correct but not with the majority spelling of the answer: the majority one is preferred.
    majority = make_trace("q2", [["11.0", GOLD, GOLD], ["11.0", GOLD, GOLD]], correct_answers=frozenset({GOLD, "11.0"}))
    assert data.build_rsft([lowest, majority]) == [
        expected(lowest, 1, 1, False, "rsft"),
        expected(majority, 1, 1, False, "rsft"),
    ]


def test_rsft_all_takes_every_correct_final_agent_corrective_first():
    trace = make_trace("q1", [[GOLD, "7", GOLD, "9"], [GOLD, GOLD, GOLD, "9"]])
    assert data.build_rsft([trace], per_question="all") == [
        expected(trace, 1, 1, True, "rsft"), expected(trace, 0, 1, False, "rsft"), expected(trace, 2, 1, False, "rsft"),
    ]


def test_rsft_drops_questions_whose_final_answer_is_wrong():
    wrong = make_trace("bad", [[GOLD, "7", "7"], [GOLD, "7", "7"]], final_correct=False)
    right = make_trace("good", [[GOLD, GOLD, "7"]])  # one round (e.g. self-consistency)
    assert data.build_rsft([wrong, right]) == [expected(right, 0, 0, False, "rsft")]
    with pytest.raises(ValueError, match="per_question"):
        data.build_rsft([right], per_question="some")


# --- DA ------------------------------------------------------------------------------------------

SAME_A = "First 4 * 2 = 8, then 3 + 8 = 11. The answer is \\boxed{11}."
SAME_B = "First 4 * 2 = 8, and then 3 + 8 = 11. The answer is \\boxed{11}."
OTHER = "Multiplication binds tighter: two fours make 8; adding three gives 11 in total, so \\boxed{11}."


def diverse_trace(texts: list[str]) -> QuestionTrace:
    return make_trace("q1", [[GOLD] * len(texts)], texts={(0, a): t for a, t in enumerate(texts)})


def test_structure_distance_is_zero_for_same_structure_and_orders_near_vs_far():
    assert data.structure_distance(SAME_A, SAME_A) == 0.0
    assert 0.0 < data.structure_distance(SAME_A, SAME_B) < data.structure_distance(SAME_A, OTHER) <= 1.0
    assert data.select_diverse([SAME_A, SAME_B, OTHER], k=2) == [0, 2]
    assert data.select_diverse([SAME_A, SAME_A, OTHER], k=3) == [0, 2]  # an exact structural duplicate is skipped


def test_da_picks_the_structurally_different_pair():
    trace = diverse_trace([SAME_A, SAME_B, OTHER])
    assert data.build_da([trace], k=2) == [expected(trace, 0, 0, False, "da"), expected(trace, 2, 0, False, "da")]
    assert [s["agent"] for s in data.build_da([trace], k=3)] == [0, 2, 1]
    assert data.build_da([trace], k=1) == [expected(trace, 0, 0, False, "da")]


def test_da_skips_duplicates_and_starts_from_the_preferred_trajectory():
    duplicate = diverse_trace([SAME_A, SAME_A, OTHER])
    assert [s["agent"] for s in data.build_da([duplicate], k=3)] == [0, 2]
    corrective = make_trace("q2", [["7", GOLD, GOLD], [GOLD, GOLD, GOLD]])
    assert [s["agent"] for s in data.build_da([corrective], k=1)] == [0]


def test_da_drops_questions_with_fewer_than_two_correct_agents():
    single = make_trace("one-right", [["7", GOLD, "9"]])
    two = make_trace("two-right", [["7", GOLD, GOLD]])
    assert {s["item_id"] for s in data.build_da([single, two])} == {"two-right"}
    with pytest.raises(ValueError, match="k must be"):
        data.build_da([two], k=4)


# --- answer-only, dataset, stats -----------------------------------------------------------------


def test_answer_only_is_the_gold_answer_for_every_question():
    wrong = make_trace("bad", [["7", "7"]], final_correct=False)
    right = make_trace("good", [[GOLD, GOLD]])
    assert data.build_answer_only([wrong, right]) == [
        {
            "prompt": question_prompt(t.item_id),
            "completion": [{"role": "assistant", "content": "The answer is \\boxed{11}."}],
            "item_id": t.item_id,
            "strategy": "sft",
            "agent": None,
            "round": None,
            "corrective": False,
        }
        for t in (wrong, right)
    ]


def test_samples_as_dataset_give_trl_prompt_completion_columns():
    traces = [make_trace("q1", [[GOLD, "7"], [GOLD, GOLD]]), make_trace("q2", [[GOLD, GOLD]])]
    assert set(data.BUILDERS) == {"rsft", "da", "sft"}
    ds = data.to_dataset(data.build_samples("rsft", traces, per_question="all"))
    assert len(ds) == 4
    assert set(ds.column_names) == {"prompt", "completion", "item_id", "strategy", "agent", "round", "corrective"}
    assert ds[0]["prompt"] == question_prompt("q1") and ds[0]["corrective"] is True
    with pytest.raises(ValueError, match="unknown distillation strategy"):
        data.build_samples("ppo", traces)
    with pytest.raises(ValueError, match="no training samples"):
        data.to_dataset(data.build_samples("rsft", [make_trace("bad", [["7"]])]))


def _capped(trace: QuestionTrace, agent: int) -> QuestionTrace:
    """The same trace with ``agent``'s final turn cut by the token cap (its answer still graded right)."""
    for turn in trace.final_turns():
        if turn.agent == agent:
            turn.finish_reason = "length"
    return trace


def test_builders_never_train_on_capped_or_answerless_targets():
    trace = _capped(make_trace("q1", [[GOLD, GOLD, GOLD]]), agent=0)
    assert [s["agent"] for s in data.build_rsft([trace], per_question="all")] == [1, 2]
    assert [s["agent"] for s in data.build_rsft([trace])] == [1]
    assert 0 not in [s["agent"] for s in data.build_da([trace], k=3)]
    only_capped = _capped(make_trace("q2", [[GOLD, "7"]]), agent=0)
    assert data.build_rsft([only_capped]) == [] and data.build_da([only_capped]) == []
    # Marked correct but without an extracted answer: never a target either.
    answerless = make_trace("q3", [[GOLD, GOLD]])
    answerless.final_turns()[0].answer = None
    assert [s["agent"] for s in data.build_rsft([answerless], per_question="all")] == [1]


def test_pool_stats_count_what_the_builders_leave_out():
    traces = [_capped(make_trace("q1", [[GOLD, GOLD, "7"]]), agent=0), make_trace("q2", [["7", "7", "7"]])]
    stats = data.pool_stats(traces)
    assert stats == {"questions": 2, "questions_final_correct": 1, "final_turns": 6, "final_turns_correct": 2,
                     "final_turns_target": 1, "final_turns_capped": 1, "capped_share": 1 / 6,
                     "final_turns_no_answer": 0}


def test_unsolved_by_keeps_the_questions_the_student_got_wrong_alone():
    team = [make_trace(q, [[GOLD, GOLD]]) for q in ("a", "b", "c")]
    student = [make_trace("a", [[GOLD]]), make_trace("b", [["7"]])]  # "c" was not in the student's run
    assert [t.item_id for t in data.unsolved_by(team, student)] == ["b", "c"]


class WordTokenizer:
    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        return {"input_ids": text.split()}


def test_dataset_stats():
    trace = make_trace("q1", [[GOLD, "7", GOLD], [GOLD, GOLD, GOLD]])
    samples = data.build_rsft([trace], per_question="all") + data.build_answer_only([make_trace("q2", [[GOLD]])])
    texts = [s["completion"][0]["content"] for s in samples]
    assert data.dataset_stats(samples, WordTokenizer()) == {
        "questions": 2, "samples": 4, "corrective_share": 0.25,
        "mean_completion_chars": sum(map(len, texts)) / 4,
        "mean_completion_tokens": sum(len(t.split()) for t in texts) / 4,
    }
    empty = {"questions": 0, "samples": 0, "corrective_share": 0.0, "mean_completion_chars": 0.0}
    assert data.dataset_stats([]) == empty


# --- the single-teacher control: round 0 only, sizes matched by seed -----------------------------------


def test_round_zero_control_takes_only_round_zero_turns():
    traces = [
        make_trace("fixed", [[GOLD, "7", GOLD], [GOLD, GOLD, GOLD]]),  # revised: round 1 differs from round 0
        make_trace("agreed", [[GOLD, GOLD, GOLD]]),  # consensus in round 0: one round only
        make_trace(
            "lost", [[GOLD, "7", "7"], ["7", "7", "7"]], final_correct=False
        ),  # the team talked itself out of it
    ]
    first = data.build_rsft(traces, "all", source_round="first")
    assert {s["round"] for s in first} == {0}
    assert [(s["item_id"], s["agent"]) for s in first] == [
        ("fixed", 0), ("fixed", 2), ("agreed", 0), ("agreed", 1), ("agreed", 2), ("lost", 0)]
    assert not any(s["corrective"] for s in first)  # a round-0 turn corrects nothing
    assert all(s["prompt"] == question_prompt(s["item_id"]) for s in first)
    team = data.build_rsft(traces, "all")
    assert [(s["item_id"], s["round"]) for s in team] == [("fixed", 1)] * 3 + [("agreed", 0)] * 3
    assert data.shared_samples(team, first) == 3  # only the round-0 consensus turns are in both sets


def test_round_zero_majority_answer_ranks_first_with_one_per_question():
    trace = make_trace("q", [["7", GOLD, GOLD], [GOLD, GOLD, GOLD]], correct_answers=frozenset({GOLD}))
    assert [s["agent"] for s in data.build_rsft([trace], "one", source_round="first")] == [1]
    with pytest.raises(ValueError, match="source_round must be 'final' or 'first'"):
        data.build_rsft([trace], "all", source_round="last")


def test_subsample_matches_sizes_by_seed_and_keeps_order():
    samples = [{"i": i} for i in range(10)]
    a, b = data.subsample(samples, 4, seed=0), data.subsample(samples, 4, seed=0)
    assert a == b and len(a) == 4
    assert [s["i"] for s in a] == sorted(s["i"] for s in a)
    assert data.subsample(samples, 4, seed=1) != a
    assert data.subsample(samples, 20, seed=0) == samples and data.subsample(samples, None) == samples
