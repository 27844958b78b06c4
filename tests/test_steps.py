"""Step segmentation, debate-derived step labels and the stepwise dataset (pure functions)."""

from __future__ import annotations

import pytest

from agentark.distill.steps import (
    build_step_dataset,
    label_steps,
    prompt_text,
    segment_steps,
    step_numbers,
    verified_consensus,
)
from agentark.traces.schema import AgentTurn, QuestionTrace

QUESTION = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
            "How many clips did Natalia sell altogether in April and May?")
PROMPT = [{"role": "user", "content": QUESTION + "\nPut the final answer in \\boxed{}."}]

RIGHT = "In May she sold 48 / 2 = 24 clips.\nAltogether 48 + 24 = 72 clips.\nThe answer is \\boxed{72}."
WRONG_AT_2 = ("In May she sold 48 / 2 = 24 clips.\nAltogether 48 + 24 = 62 clips.\nSo she sold 62 clips.\n"
              "The answer is \\boxed{62}.")
WRONG_AT_1 = "In May she sold 48 * 2 = 96 clips.\n\nAltogether 48 + 96 = 144 clips.\n\nThe answer is \\boxed{144}."
NO_ANSWER = "She sold 48 clips in April.\nShe sold 24 clips in May.\nI am not sure what to add."


def turn(agent: int, round_: int, text: str, answer: str | None) -> AgentTurn:
    return AgentTurn(agent=agent, round=round_, messages=PROMPT if round_ == 0 else PROMPT + [
        {"role": "assistant", "content": "earlier answer"}, {"role": "user", "content": "peers..."}],
        text=text, answer=answer, correct=answer == "72")


def trace(turns: list[AgentTurn], item_id: str = "q1", n_rounds: int = 2) -> QuestionTrace:
    return QuestionTrace(task="arithmetic", item_id=item_id, question=QUESTION, gold="72", system="debate",
                         model_id="m", config_hash="h", n_agents=3, n_rounds=n_rounds, turns=turns,
                         final_answer="72", final_correct=True)


DEBATE = trace([
    turn(0, 0, RIGHT, "72"), turn(1, 0, WRONG_AT_2, "62"), turn(2, 0, WRONG_AT_1, "144"),
    turn(0, 1, RIGHT, "72"), turn(1, 1, RIGHT, "72"), turn(2, 1, NO_ANSWER, None),
])


# --- segmentation -----------------------------------------------------------------------------------


def test_auto_prefers_paragraphs_then_lines_then_sentences():
    assert segment_steps("A = 1.\nB = 2.\n\n  C = 3.  \n\n\nD.") == ["A = 1.\nB = 2.", "C = 3.", "D."]
    assert segment_steps("First 4 * 2 = 8.\n  Then 3 + 8 = 11. So 11.\n") == [
        "First 4 * 2 = 8.", "Then 3 + 8 = 11. So 11."]
    assert segment_steps("First 4 * 2 = 8. Then 3.5 + 8 = 11.5! Done? Yes") == [
        "First 4 * 2 = 8.", "Then 3.5 + 8 = 11.5!", "Done?", "Yes"]


def test_explicit_modes_and_edge_cases():
    text = "A. B.\nC\n\nD"
    assert segment_steps(text, "blank_line") == ["A. B.\nC", "D"]
    assert segment_steps(text, "line") == ["A. B.", "C", "D"]
    assert segment_steps(text, "sentence") == ["A.", "B.", "C", "D"]
    assert segment_steps("  \n\n ") == []
    assert segment_steps("one step") == ["one step"]
    with pytest.raises(ValueError, match="step mode"):
        segment_steps("x", "paragraph")


def test_step_numbers_are_stated_results_normalised():
    assert step_numbers("In May she sold 48 / 2 = 24 clips.") == ["24"]
    assert step_numbers("Total = 3 * 8 = 24") == ["24"]  # 3 is an operand, not a result
    assert step_numbers("Cost = $1,200.50 in all.") == ["1200.5"]
    assert step_numbers("x = -3") == ["-3"]
    assert step_numbers("She sold 24 clips in May.") == ["24"]  # prose: every number
    assert step_numbers("2. She sold 48 clips") == ["48"]  # enumeration is layout
    assert step_numbers("10 - 5 = 5") == ["5"]
    assert step_numbers("No numbers here.") == []


# --- labels -------------------------------------------------------------------------------------------


def test_consensus_is_the_verified_answer():
    assert verified_consensus(DEBATE) == "72"
    assert verified_consensus(trace([turn(0, 0, WRONG_AT_1, "144"), turn(1, 0, WRONG_AT_2, "62")])) is None


def test_right_solutions_are_all_positive():
    assert label_steps(DEBATE, DEBATE.turns[0], "72") == [True, True, True]


def test_first_divergent_result_is_the_first_negative():
    # 62 is stated by no agreeing agent and not in the question: step 2 onwards is wrong.
    assert label_steps(DEBATE, DEBATE.turns[1], "72") == [True, False, False, False]
    # 96 already in step 1.
    assert label_steps(DEBATE, DEBATE.turns[2], "72") == [False, False, False]


def test_wrong_without_divergent_number_blames_only_the_last_step():
    assert label_steps(DEBATE, DEBATE.turns[5], "72") == [True, True, False]


def test_no_verified_consensus_gives_no_labels():
    assert label_steps(DEBATE, DEBATE.turns[1], None) is None


def test_stepwise_dataset_format_and_round_selection():
    rows = build_step_dataset([DEBATE])
    assert [(r["agent"], r["round"]) for r in rows] == [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1)]
    first = rows[1]
    assert set(first) == {"prompt", "completions", "labels", "item_id", "agent", "round"}
    assert first["prompt"] == prompt_text(PROMPT) == PROMPT[0]["content"]
    assert first["completions"] == segment_steps(WRONG_AT_2)
    assert first["labels"] == [True, False, False, False]
    assert first["item_id"] == "q1"
    for row in rows:
        assert len(row["completions"]) == len(row["labels"]) and all(isinstance(x, bool) for x in row["labels"])

    final = build_step_dataset([DEBATE], rounds="final")
    assert [(r["agent"], r["labels"]) for r in final] == [(0, [True] * 3), (1, [True] * 3), (2, [True, True, False])]
    unverified = trace([turn(0, 0, WRONG_AT_1, "144"), turn(1, 0, WRONG_AT_2, "62")], n_rounds=1)
    assert build_step_dataset([unverified]) == []
