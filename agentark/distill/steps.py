"""Reasoning steps: how a solution is cut into steps, and which steps are right.

Process-aware distillation (PAD) trains a process reward model (PRM) on per-step labels and then
scores the student's sampled solutions step by step. Both sides must cut text into the *same* steps,
so :func:`segment_steps` is the only segmentation in the project: the stepwise dataset is built with
it and :class:`agentark.distill.prm.PRMScorer` scores with it (the official AgentArk code split
differently at training and scoring time, so its PRM scored units it had never been trained on).

Step labels come from the debate itself (:func:`label_steps`: free, no model call): the first step
whose stated result leaves the verified consensus is the first wrong one. Everything here is pure
and deterministic.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Literal

from agentark.distill.data import question_messages
from agentark.tasks.grading import normalize_number
from agentark.traces.schema import AgentTurn, QuestionTrace

StepMode = Literal["auto", "blank_line", "line", "sentence"]
STEP_MODES: tuple[str, ...] = ("auto", "blank_line", "line", "sentence")
RoundsSel = Literal["all", "final"]

STEP_SEPARATOR = "\n"
"""Joins steps back into text: in PRM inputs (label on its token, as TRL's PRMTrainer did) and in
Monte-Carlo prefixes."""

_BLANK_LINE = re.compile(r"\n[ \t]*\n")
# A sentence ends at . ! or ? followed by whitespace ("3.5" and "e.g.5" stay whole); newlines also end one.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
# A leading enumeration ("1.", "2)", "Step 3:") is layout, not a computed result.
_ENUMERATION = re.compile(r"^\s*(?:step\s*)?\d+\s*[.):]\s+", re.IGNORECASE)
_NUMBER = r"-?(?:\$\s?)?(?:\d+(?:,\d{3})*(?:\.\d+)?|\.\d+)"
# A number not glued to a word or decimal point on its left, so "5-3" gives 5 and 3, "x2" nothing.
_ANY_NUMBER = re.compile(r"(?<![\w.])" + _NUMBER)
# "= 24" is a result; "= 3 * 8" is not (3 is an operand of an expression still being computed).
_RESULT = re.compile(r"(?<![=<>!])=(?!=)\s*(" + _NUMBER + r")(?![.,]?\d)(?!\s*[-+*/×÷^])")


def _auto_mode(text: str) -> str:
    if len([p for p in _BLANK_LINE.split(text) if p.strip()]) >= 2:
        return "blank_line"
    if len([line for line in text.splitlines() if line.strip()]) >= 2:
        return "line"
    return "sentence"


def segment_steps(text: str, mode: StepMode | str = "auto") -> list[str]:
    """Cut a solution into stripped, non-empty steps.

    ``blank_line``: paragraphs; ``line``: lines; ``sentence``: sentences (and lines). ``auto`` picks
    paragraphs when there are at least two, else lines when there are at least two, else sentences:
    models that lay out steps as paragraphs or lines keep their own structure, and a one-line answer
    still gets more than one step.
    """
    if mode not in STEP_MODES:
        raise ValueError(f"unknown step mode {mode!r}; use one of {', '.join(STEP_MODES)}")
    text = text.strip()
    if not text:
        return []
    if mode == "auto":
        mode = _auto_mode(text)
    if mode == "blank_line":
        parts = _BLANK_LINE.split(text)
    elif mode == "line":
        parts = text.splitlines()
    else:
        parts = _SENTENCE_END.split(text)
    return [p.strip() for p in parts if p.strip()]


def all_numbers(text: str) -> list[str]:
    """Every number in ``text``, in the tasks' canonical form (``grading.normalize_number``)."""
    return [normalize_number(m.group(0)) or m.group(0) for m in _ANY_NUMBER.finditer(text)]


def step_numbers(step: str) -> list[str]:
    """The intermediate results a step states, normalised.

    A step with ``=`` states its results right of each ``=`` ("48 / 2 = 24" -> ["24"]; operands are
    earlier results or givens, already checked where they were stated). A step without ``=`` states
    results in prose ("She sold 24 clips in May." -> ["24"]), so every number counts, except a leading
    enumeration ("2. ...", "Step 3: ...").
    """
    results = [normalize_number(m.group(1)) or m.group(1) for m in _RESULT.finditer(step)]
    if results or "=" in step:
        return results
    return all_numbers(_ENUMERATION.sub("", step, count=1))


def solver_turns(trace: QuestionTrace, rounds: RoundsSel | str = "all") -> list[AgentTurn]:
    """The solver turns used for step data: every round's, or only the final round's."""
    if rounds == "final":
        return trace.final_turns()
    if rounds != "all":
        raise ValueError(f"rounds must be 'all' or 'final', not {rounds!r}")
    return sorted((t for t in trace.turns if t.role == "solver"), key=lambda t: (t.round, t.agent))


def verified_consensus(trace: QuestionTrace) -> str | None:
    """The answer the gold-verified (correct) solver turns agree on; ``None`` when no agent was right.

    Taken from the turns' own normalised answers rather than from ``trace.gold`` so it compares
    equal to ``turn.answer`` whatever the gold's formatting. Ties (rare: two spellings both graded
    correct) go to the most frequent, then the smallest string, so the choice is deterministic.
    """
    counts = Counter(t.answer for t in solver_turns(trace) if t.correct and t.answer is not None)
    if not counts:
        return None
    return min(counts, key=lambda a: (-counts[a], a))


def reference_numbers(trace: QuestionTrace, consensus_answer: str) -> set[str]:
    """Numbers a right solution may state: the question's, the consensus answer, and every number in
    any solver turn (any round) that reached the consensus answer."""
    agreeing = [t.text for t in solver_turns(trace) if t.answer == consensus_answer]
    return {*all_numbers(consensus_answer), *all_numbers(trace.question),
            *(n for text in agreeing for n in all_numbers(text))}


def label_steps(trace: QuestionTrace, turn: AgentTurn, consensus_answer: str | None,
                mode: StepMode | str = "auto") -> list[bool] | None:
    """Per-step labels of ``turn`` (aligned with ``segment_steps(turn.text, mode)``) from the debate.

    * The turn reaches ``consensus_answer``: every step is positive.
    * Otherwise the first negative step is the first one that states a result (:func:`step_numbers`)
      found nowhere in :func:`reference_numbers` -- a number no agreeing agent ever wrote and the
      question does not give; that step and all later ones are negative, earlier ones positive. If no
      step diverges that way (e.g. the wrong answer was copied from a peer whom a right agent quoted),
      the last step -- the one giving the wrong final answer -- is the only negative.
    * ``consensus_answer`` is ``None`` (no agent was verified right): ``None``, no labels -- without a
      verified solution there is nothing to compare a wrong solution's steps with.
    """
    steps = segment_steps(turn.text, mode)
    if consensus_answer is None:
        return None
    if turn.answer is not None and turn.answer == consensus_answer:
        return [True] * len(steps)
    reference = reference_numbers(trace, consensus_answer)
    first_bad = next((i for i, step in enumerate(steps) if any(n not in reference for n in step_numbers(step))),
                     len(steps) - 1)
    return [i < first_bad for i in range(len(steps))]


def prompt_text(messages: Sequence[dict[str, str]]) -> str:
    """The PRM's prompt text for a question conversation (system + user contents, in order).

    Used for the stepwise dataset and for GRPO completions alike, so the PRM sees the same prompt
    text at training and scoring time.
    """
    return "\n\n".join(m["content"] for m in messages if m["role"] != "assistant")


def build_step_dataset(traces: Iterable[QuestionTrace], mode: StepMode | str = "auto",
                       rounds: RoundsSel | str = "all") -> list[dict]:
    """Stepwise-supervision rows (TRL's format) from debate traces, labelled by :func:`label_steps`.

    One row per labelled solver turn: ``{"prompt", "completions": [steps], "labels": [bools],
    "item_id", "agent", "round"}``. Turns with no steps, or no labels, are skipped.
    """
    rows: list[dict] = []
    for trace in traces:
        question = question_messages(trace)
        consensus = verified_consensus(trace)
        for turn in solver_turns(trace, rounds):
            steps = segment_steps(turn.text, mode)
            labels = label_steps(trace, turn, consensus, mode)
            if not steps or labels is None:
                continue
            rows.append({"prompt": prompt_text(question), "completions": steps, "labels": labels,
                         "item_id": trace.item_id, "agent": turn.agent, "round": turn.round})
    return rows
