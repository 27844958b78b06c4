"""Robustness: does a system still answer when the question is changed in ways that should not matter?

A student distilled from a team's traces may have memorised surface forms of the training questions.
The built-in suite perturbs held-out items four ways (after GSM-Plus, Li et al. 2024):

* ``change_numbers`` — new operands, gold recomputed (only where the answer can be recomputed:
  arithmetic items carry their operands and operators in ``meta``; other tasks are skipped);
* ``add_distractor`` — an irrelevant sentence with a number, gold unchanged;
* ``reorder_sentences`` — the non-final sentences of a word problem in another order, gold unchanged;
* ``paraphrase_instruction`` — the instruction around the question reworded, gold unchanged.

A perturbation is a function ``(item, task, rng) -> Item | None`` (``None`` = does not apply to this
item). Perturbed ids are ``<source id>~<type>`` so that results pair with the clean run's. Some
perturbations change the prompt rather than the question text (a bare arithmetic expression has no
sentence to put a distractor next to, and instructions live in the task's prompt): those items carry
the full prompt in ``meta["prompt"]``, which :class:`PerturbedTask` honours.

The module also holds the two-turn self-correction probe for single models (:func:`review_probe`):
asked to review its own answer, does a model fix it, or talk itself out of a right one?
"""

from __future__ import annotations

import logging
import os
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from pydantic import BaseModel, Field

from agentark.evaluate.metrics import round_accuracy, round_flips
from agentark.mas.base import MultiAgentSystem, RunContext, make_turn
from agentark.tasks.arithmetic import evaluate_expression, format_expression
from agentark.tasks.base import Extraction, Item, Split, Task
from agentark.tasks.tabular import DataFormatError, read_records, require_text, unique_ids
from agentark.traces.schema import QuestionTrace

logger = logging.getLogger(__name__)

PROMPT_KEY = "prompt"
"""``item.meta`` key of a full user prompt that replaces ``task.question_prompt(item)``."""

ID_SEPARATOR = "~"

Perturbation = Callable[[Item, Task, random.Random], "Item | None"]

# A sentence ends at . ! or ? followed by whitespace (so "3.5" and "$2.50" stay whole).
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+")

_DISTRACTORS = (
    "{name}'s neighbour has {n} potted plants on the balcony.",
    "The shop around the corner opened {n} years ago.",
    "{name} once read a book with {n} chapters.",
    "There are {n} benches in the nearby park.",
)
_NAMES = ("Alex", "Maria", "Sam", "Priya", "Tom", "Yuki")

# (pattern, alternative rewordings) applied to the whole prompt; only the lead instruction is
# reworded, never the answer-format instruction, so answer extraction is unaffected.
_PARAPHRASES: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = (
    (
        re.compile(r"^What is the result of (?P<x>.+?)\?"),
        ("Compute {x}.", "Calculate {x}.", "Evaluate the expression {x}."),
    ),
    (
        re.compile(r"^Can you solve the following math problem\?"),
        ("Solve this math problem.", "Work out the answer to this problem."),
    ),
    (re.compile(r"Explain your reasoning\."), ("Show your reasoning.", "Give your reasoning step by step.")),
)


def split_sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_BREAK.split(text.strip()) if s]


def _derived(item: Item, ptype: str, **changes) -> Item:
    """The perturbed copy of ``item``: new id ``<id>~<type>``, type and source recorded in ``meta``."""
    meta = {**item.meta, **changes.pop("meta", {}), "perturbation_type": ptype, "source_id": item.id}
    return replace(item, id=f"{item.id}{ID_SEPARATOR}{ptype}", meta=meta, **changes)


def change_numbers(item: Item, task: Task, rng: random.Random) -> Item | None:
    """New operands (same count and operators, similar range), gold recomputed; arithmetic only."""
    operands, operators = item.meta.get("operands"), item.meta.get("operators")
    if not operands or operators is None:
        return None
    old_text = format_expression(operands, operators)
    if old_text not in item.question:
        return None
    high = max(10, *(abs(x) for x in operands))
    new = list(operands)
    while new == list(operands):
        new = [rng.randint(0, high) for _ in operands]
    return _derived(
        item, "change_numbers",
        question=item.question.replace(old_text, format_expression(new, operators)),
        answer=str(evaluate_expression(new, operators)),
        meta={"operands": new, "operators": list(operators)},
    )


def add_distractor(item: Item, task: Task, rng: random.Random) -> Item | None:
    """An irrelevant sentence with a number: before a word problem's final sentence, else before the prompt."""
    sentence = rng.choice(_DISTRACTORS).format(name=rng.choice(_NAMES), n=rng.randint(2, 99))
    sentences = split_sentences(item.question)
    if len(sentences) >= 2:
        return _derived(item, "add_distractor", question=" ".join([*sentences[:-1], sentence, sentences[-1]]))
    return _derived(item, "add_distractor", meta={PROMPT_KEY: f"{sentence} {task.question_prompt(item)}"})


def reorder_sentences(item: Item, task: Task, rng: random.Random) -> Item | None:
    """The non-final sentences shuffled (never left in order); the final one (the question) stays last."""
    sentences = split_sentences(item.question)
    body, last = sentences[:-1], sentences[-1:]
    if len(body) < 2:
        return None
    order = list(range(len(body)))
    while order == sorted(order):
        rng.shuffle(order)
    return _derived(item, "reorder_sentences", question=" ".join([body[i] for i in order] + last))


def paraphrase_instruction(item: Item, task: Task, rng: random.Random) -> Item | None:
    """The task's instruction around the question reworded; ``None`` when no known phrasing is found."""
    prompt = task.question_prompt(item)
    reworded = prompt
    for pattern, alternatives in _PARAPHRASES:
        reworded = pattern.sub(lambda m, alts=alternatives: rng.choice(alts).format(**m.groupdict()), reworded, count=1)
    if reworded == prompt:
        return None
    return _derived(item, "paraphrase_instruction", meta={PROMPT_KEY: reworded})


PERTURBATIONS: dict[str, Perturbation] = {
    "change_numbers": change_numbers,
    "add_distractor": add_distractor,
    "reorder_sentences": reorder_sentences,
    "paraphrase_instruction": paraphrase_instruction,
}
PERTURBATION_TYPES = tuple(PERTURBATIONS)


def perturb(task: Task, items: Sequence[Item], types: Sequence[str] = PERTURBATION_TYPES, seed: int = 0) -> list[Item]:
    """Every applicable perturbation of every item, item by item in ``types`` order.

    Each (seed, item, type) has its own random stream, so a perturbed item does not depend on which
    other items or types were asked for.
    """
    unknown = [t for t in types if t not in PERTURBATIONS]
    if unknown:
        raise ValueError(f"unknown perturbation types {unknown}; valid: {', '.join(PERTURBATION_TYPES)}")
    out: list[Item] = []
    for item in items:
        for ptype in types:
            perturbed = PERTURBATIONS[ptype](item, task, random.Random(f"{seed}/{item.id}/{ptype}"))
            if perturbed is not None:
                out.append(perturbed)
    skipped = len(items) * len(types) - len(out)
    if skipped:
        logger.info(
            "%d of %d item x perturbation pairs do not apply and were skipped", skipped, len(items) * len(types)
        )
    return out


class PerturbedTask(Task):
    """``task``, except that an item with ``meta["prompt"]`` is asked with exactly that prompt."""

    def __init__(self, task: Task):
        self.task = task
        self.name = task.name

    def items(self, split: Split = "train", n: int | None = None) -> list[Item]:
        return self.task.items(split, n)

    def question_prompt(self, item: Item) -> str:
        return item.meta.get(PROMPT_KEY) or self.task.question_prompt(item)

    def extract(self, text: str) -> Extraction:
        return self.task.extract(text)

    def normalize(self, answer: str | None) -> str | None:
        return self.task.normalize(answer)

    def grade(self, predicted: str | None, gold: str) -> bool:
        return self.task.grade(predicted, gold)


def load_perturbation_file(path: str | os.PathLike) -> list[Item]:
    """Perturbed questions from a GSM-Plus-style JSONL file (``question``, ``answer``, ``perturbation_type``).

    An optional ``source_id`` names the clean item a row was made from, so the row pairs with the
    clean run; without it the id is ``<file stem>-<line>``. Errors name ``file:line``.
    """
    path = Path(path)
    items, ids = [], []
    for line, row in read_records(path):
        question = require_text(row, "question", path, line)
        answer = require_text(row, "answer", path, line)
        ptype = require_text(row, "perturbation_type", path, line)
        if ID_SEPARATOR in ptype:
            raise DataFormatError(path, line, f"perturbation_type {ptype!r} must not contain {ID_SEPARATOR!r}")
        source = require_text(row, "source_id", path, line) if "source_id" in row else f"{path.stem}-{line}"
        item_id = f"{source}{ID_SEPARATOR}{ptype}"
        ids.append((item_id, line))
        items.append(Item(id=item_id, question=question, answer=answer,
                          meta={"perturbation_type": ptype, "source_id": source, "line": line}))
    unique_ids(ids, path)
    return items


# --- robustness table -----------------------------------------------------------------------------


def source_and_type(item_id: str) -> tuple[str, str]:
    """``"<source>~<type>"`` -> ``(source, type)``."""
    source, sep, ptype = item_id.rpartition(ID_SEPARATOR)
    if not sep:
        raise ValueError(f"{item_id!r} is not a perturbed item id (<source id>{ID_SEPARATOR}<type>)")
    return source, ptype


class RobustnessRow(BaseModel):
    """One perturbation type (or all of them). Paired fields use only items whose clean source was run."""

    type: str
    n: int
    accuracy: float
    paired: int
    clean_accuracy: float | None = None
    drop: float | None = None
    failure_rate: float | None = Field(
        None, description="Share of perturbed items answered wrong among those whose clean source was answered right.")


class RobustnessTable(BaseModel):
    clean_accuracy: float
    rows: list[RobustnessRow]
    overall: RobustnessRow


def _row(ptype: str, outcomes: list[tuple[bool, bool | None]]) -> RobustnessRow:
    """``outcomes``: (perturbed correct, clean source correct or None when the source was not run)."""
    pairs = [(p, c) for p, c in outcomes if c is not None]
    kept = [p for p, c in pairs if c]
    row = RobustnessRow(
        type=ptype, n=len(outcomes), accuracy=sum(p for p, _ in outcomes) / len(outcomes), paired=len(pairs)
    )
    if pairs:
        row.clean_accuracy = sum(c for _, c in pairs) / len(pairs)
        row.drop = row.clean_accuracy - sum(p for p, _ in pairs) / len(pairs)
        row.failure_rate = (1 - sum(kept) / len(kept)) if kept else None
    return row


def robustness_table(
    clean_traces: Sequence[QuestionTrace], perturbed_traces: Sequence[QuestionTrace]
) -> RobustnessTable:
    """Accuracy per perturbation type, and its drop from the clean accuracy on the same source items."""
    if not clean_traces or not perturbed_traces:
        raise ValueError("need clean and perturbed traces")
    clean = {t.item_id: t.final_correct for t in clean_traces}
    by_type: dict[str, list[tuple[bool, bool | None]]] = {}
    for trace in perturbed_traces:
        source, ptype = source_and_type(trace.item_id)
        by_type.setdefault(ptype, []).append((trace.final_correct, clean.get(source)))
    return RobustnessTable(
        clean_accuracy=sum(clean.values()) / len(clean),
        rows=[_row(ptype, outcomes) for ptype, outcomes in sorted(by_type.items())],
        overall=_row("all", [o for outcomes in by_type.values() for o in outcomes]),
    )


# --- two-turn self-correction probe ---------------------------------------------------------------

REVIEW_PROMPT = (
    "Review your previous answer and find problems with it. Then give your final answer, "
    "at the end and in the format asked for in the question."
)
"""After Huang et al. (2024), "Large Language Models Cannot Self-Correct Reasoning Yet"."""


def review_conversation(trace: QuestionTrace) -> list[dict[str, str]]:
    """Turn 2: the first question, the model's own first answer, then the request to review it."""
    first = trace.round_turns(0)[0]
    return [*first.messages, {"role": "assistant", "content": first.text}, {"role": "user", "content": REVIEW_PROMPT}]


def review_probe(ctx: RunContext, items: Sequence[Item], first_traces: Sequence[QuestionTrace]) -> list[QuestionTrace]:
    """Ask a single model to review its own answers, all questions in one ``engine.generate`` call.

    Returns one trace per first trace with the first answer as round 0 and the reviewed answer as
    round 1 (and as the final answer), so the debate's round metrics apply unchanged.
    """
    by_id = {item.id: item for item in items}
    missing = [t.item_id for t in first_traces if t.item_id not in by_id]
    if missing:
        raise ValueError(f"no items for {len(missing)} first-turn traces, e.g. {missing[:3]}")
    conversations = [review_conversation(t) for t in first_traces]
    completions = ctx.engine.generate(conversations, ctx.sampling)
    reviewed = []
    for trace, messages, completion in zip(first_traces, conversations, completions, strict=True):
        item = by_id[trace.item_id]
        turn = make_turn(ctx, item, 0, 1, messages, completion)
        reviewed.append(trace.model_copy(update={
            "system": f"{trace.system}+review",
            "n_rounds": 2,
            "turns": [trace.round_turns(0)[0], turn],
            "final_answer": turn.answer,
            "final_correct": turn.correct,
        }))
    return reviewed


class ReviewProbe(MultiAgentSystem):
    """The self-review probe as a system, so it is run, resumed and timed like every other one."""

    name = "review"

    def __init__(self, first: Sequence[QuestionTrace]):
        self.first = {t.item_id: t for t in first}

    def run(self, ctx: RunContext, items: list[Item]) -> list[QuestionTrace]:
        return review_probe(ctx, items, [self.first[item.id] for item in items])


def review_metrics(reviewed: Sequence[QuestionTrace]) -> dict[str, float | int]:
    """Accuracy before and after the review, its change, and how many answers flipped each way."""
    if not reviewed:
        raise ValueError("no reviewed traces")
    first, second = round_accuracy(reviewed)[:2]
    (flips,) = round_flips(reviewed)[:1]
    n = len(reviewed)
    return {
        "n": n,
        "accuracy_turn1": first.mean_agent,
        "accuracy_turn2": second.mean_agent,
        "delta": second.mean_agent - first.mean_agent,
        "wrong_to_right": flips.wrong_to_right,
        "right_to_wrong": flips.right_to_wrong,
        "wrong_to_right_rate": flips.wrong_to_right / n,
        "right_to_wrong_rate": flips.right_to_wrong / n,
    }
