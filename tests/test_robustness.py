"""Perturbations (gold recomputed or kept), GSM-Plus files, robustness table, the review probe."""

from __future__ import annotations

import json
import random
import re

import pytest

from agentark.engines.base import Completion, SamplingParams
from agentark.evaluate.robustness import (
    PerturbedTask,
    add_distractor,
    change_numbers,
    load_perturbation_file,
    paraphrase_instruction,
    perturb,
    reorder_sentences,
    review_metrics,
    review_probe,
    robustness_table,
    split_sentences,
)
from agentark.mas import RunContext
from agentark.tasks.arithmetic import ArithmeticTask, evaluate_expression, format_expression
from agentark.tasks.base import Item
from agentark.tasks.gsm8k import GSM8KTask
from agentark.tasks.tabular import DataFormatError

from trace_factory import GOLD, single_traces

WORD_PROBLEM = Item(
    id="gsm8k-0",
    question="Tom has 3 apples. He buys 4 more apples. Then he eats 2 of them. How many apples does Tom have now?",
    answer="5",
)


@pytest.fixture(scope="module")
def arithmetic():
    task = ArithmeticTask()
    return task, task.items("held-out", 20)


def test_change_numbers_recomputes_gold(arithmetic):
    task, items = arithmetic
    for i, item in enumerate(items):
        new = change_numbers(item, task, random.Random(i))
        operands, operators = new.meta["operands"], new.meta["operators"]
        assert operators == item.meta["operators"] and operands != item.meta["operands"]
        assert new.question == format_expression(operands, operators)
        assert new.answer == str(evaluate_expression(operands, operators))
        assert new.id == f"{item.id}~change_numbers" and new.meta["source_id"] == item.id
    # The gold of a hand-checked case: 2+3*4 with new operands [5, 1, 6] would be 11.
    assert evaluate_expression([5, 1, 6], ["+", "*"]) == 11
    assert change_numbers(WORD_PROBLEM, GSM8KTask(), random.Random(0)) is None  # answer cannot be recomputed


def test_distractor_keeps_gold_and_sits_before_the_question():
    new = add_distractor(WORD_PROBLEM, GSM8KTask(), random.Random(1))
    before, after = split_sentences(WORD_PROBLEM.question), split_sentences(new.question)
    assert new.answer == WORD_PROBLEM.answer and len(after) == len(before) + 1
    assert after[-1] == before[-1] and after[:3] == before[:3]
    assert any(ch.isdigit() for ch in after[3])


def test_distractor_on_a_bare_expression_goes_in_front_of_the_prompt(arithmetic):
    task, items = arithmetic
    new = add_distractor(items[0], task, random.Random(0))
    assert new.question == items[0].question and new.answer == items[0].answer
    prompt = PerturbedTask(task).question_prompt(new)
    assert prompt.endswith(task.question_prompt(items[0])) and prompt != task.question_prompt(items[0])
    assert PerturbedTask(task).question_prompt(items[0]) == task.question_prompt(items[0])


def test_reorder_keeps_sentences_and_the_final_question():
    new = reorder_sentences(WORD_PROBLEM, GSM8KTask(), random.Random(0))
    before, after = split_sentences(WORD_PROBLEM.question), split_sentences(new.question)
    assert sorted(after) == sorted(before) and after[-1] == before[-1] and after != before
    assert new.answer == WORD_PROBLEM.answer
    two = Item(id="x", question="Tom has 3 apples. How many does he have?", answer="3")
    assert reorder_sentences(two, GSM8KTask(), random.Random(0)) is None


def test_paraphrase_rewords_the_instruction_not_the_answer_format(arithmetic):
    task, items = arithmetic
    new = paraphrase_instruction(items[0], task, random.Random(0))
    prompt = PerturbedTask(task).question_prompt(new)
    assert not prompt.startswith("What is the result of")
    assert items[0].question in prompt and "\\boxed{answer}" in prompt and new.answer == items[0].answer
    gsm = PerturbedTask(GSM8KTask()).question_prompt(
        paraphrase_instruction(WORD_PROBLEM, GSM8KTask(), random.Random(0))
    )
    assert "Can you solve" not in gsm and WORD_PROBLEM.question in gsm


def test_perturb_is_seeded_and_skips_what_does_not_apply(arithmetic):
    task, items = arithmetic
    out = perturb(task, items[:5], seed=1)
    assert perturb(task, items[:5], seed=1) == out
    assert {i.meta["perturbation_type"] for i in out} == {"change_numbers", "add_distractor", "paraphrase_instruction"}
    assert len(out) == 15 and len({i.id for i in out}) == 15  # no sentences to reorder in an expression
    with pytest.raises(ValueError, match="unknown perturbation"):
        perturb(task, items, ["shuffle"])


def test_load_perturbation_file(tmp_path):
    path = tmp_path / "plus.jsonl"
    rows = [{"question": "Q1?", "answer": "3", "perturbation_type": "distractor insertion", "source_id": "gsm8k-0"},
            {"question": "Q2?", "answer": 4, "perturbation_type": "numerical substitution"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    items = load_perturbation_file(path)
    assert [i.id for i in items] == ["gsm8k-0~distractor insertion", "plus-2~numerical substitution"]
    assert items[1].answer == "4" and items[0].meta["perturbation_type"] == "distractor insertion"

    path.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"question": "Q", "answer": "1"}) + "\n")
    with pytest.raises(DataFormatError, match=re.escape(f"{path}:2: missing field 'perturbation_type'")):
        load_perturbation_file(path)
    path.write_text(json.dumps(rows[0]) + "\n\n{not json\n")
    with pytest.raises(DataFormatError, match=re.escape(f"{path}:3: invalid JSON")):
        load_perturbation_file(path)
    path.write_text(json.dumps(rows[0]) + "\n" + json.dumps(rows[0]) + "\n")
    with pytest.raises(DataFormatError, match=re.escape(f"{path}:2: duplicate id")):
        load_perturbation_file(path)


def test_robustness_table_pairs_with_clean_sources():
    clean = single_traces([True, True, False, True])  # q0..q3
    def relabel(traces, ids):
        return [t.model_copy(update={"item_id": i}) for i, t in zip(ids, traces, strict=True)]

    perturbed = relabel(single_traces([True, False, True, True]), [f"q{i}~add_distractor" for i in range(4)])
    perturbed += relabel(single_traces([False, True]), ["q0~paraphrase", "other~paraphrase"])
    table = robustness_table(clean, perturbed)
    assert table.clean_accuracy == 0.75
    distractor, paraphrase = table.rows
    assert distractor.type == "add_distractor" and distractor.n == 4 and distractor.accuracy == 0.75
    assert distractor.clean_accuracy == 0.75 and distractor.drop == 0.0
    assert distractor.failure_rate == pytest.approx(1 / 3)  # q1 was right clean, wrong perturbed; q2 the reverse
    assert paraphrase.n == 2 and paraphrase.paired == 1 and paraphrase.failure_rate == 1.0
    assert table.overall.paired == 5 and table.overall.failure_rate == pytest.approx(2 / 4)
    with pytest.raises(ValueError, match="not a perturbed item id"):
        robustness_table(clean, clean)


class ScriptedEngine:
    model_id = "scripted"

    def __init__(self, texts):
        self.texts, self.batches = texts, []

    def generate(self, conversations, sampling):
        self.batches.append(conversations)
        return [Completion(t, 20, 6, 0.5) for t in self.texts]


def test_review_probe_is_one_batched_call_and_counts_flips(arithmetic):
    task, _ = arithmetic
    items = [Item(id=f"q{i}", question="3+4", answer=GOLD) for i in range(4)]
    first = single_traces([True, False, False, True])
    engine = ScriptedEngine(["\\boxed{7}", "\\boxed{7}", "\\boxed{1}", "\\boxed{2}"])
    reviewed = review_probe(RunContext(task, engine, SamplingParams()), items, first)
    (batch,) = engine.batches
    assert batch[0][-1]["content"].startswith("Review your previous answer and find problems with it.")
    assert batch[0][-2] == {"role": "assistant", "content": first[0].turns[0].text}
    assert [t.final_correct for t in reviewed] == [True, True, False, False]
    assert all(t.n_rounds == 2 and t.system == "single+review" for t in reviewed)
    assert review_metrics(reviewed) == {
        "n": 4, "accuracy_turn1": 0.5, "accuracy_turn2": 0.5, "delta": 0.0, "wrong_to_right": 1,
        "right_to_wrong": 1, "wrong_to_right_rate": 0.25, "right_to_wrong_rate": 0.25,
    }
