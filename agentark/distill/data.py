"""Debate traces -> supervised samples for one student model (TRL conversational prompt-completion).

The student must answer in a single generation from the plain question, so every sample's prompt
is the round-0 question prompt exactly as the agents saw it, never a debate follow-up; what it
learns from the debate is only in the completion (a verified-correct final-round reasoning text).

Three strategies, after the AgentArk paper:

* ``rsft`` (reasoning-enhanced SFT / rejection sampling): one (or every) correct final-round
  trajectory per verified-correct question, preferring *corrective* ones (wrong earlier, right at the
  end), which carry the self-correction the debate produced.
* ``da`` (trajectory augmentation): up to ``k`` correct final trajectories per question that are
  structurally different, so the student sees several distinct ways to the same answer.
* ``sft`` (answer-only baseline): the gold answer alone, no reasoning.

A trajectory is a training target only if it is correct, has a final answer and ended on its own:
one that hit the token cap (``finish_reason == "length"``) teaches the student to ramble into the cap.
:func:`unsolved_by` narrows any strategy to the questions a student got wrong on its own, the ones
whose answer it can only learn from the team.

Everything here is a pure function of the traces: same traces, same samples, same order.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from agentark.tasks.grading import majority_vote
from agentark.traces.schema import AgentTurn, QuestionTrace

Sample = dict[str, Any]
PerQuestion = Literal["one", "all"]
SourceRound = Literal["final", "first"]

ANSWER_ONLY_TEMPLATE = "The answer is \\boxed{{{gold}}}."
"""Answer-only target; ``\\boxed{}`` because that is the answer format the tasks ask for."""

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"\w+")


# --- samples -------------------------------------------------------------------------------------


def question_messages(trace: QuestionTrace, agent: int | None = None) -> list[dict[str, str]]:
    """The round-0 conversation (the plain question prompt) of ``agent``, or of the first agent."""
    first_round = trace.round_turns(0)
    if not first_round:
        raise ValueError(f"trace {trace.item_id!r} has no round-0 solver turn")
    turn = next((t for t in first_round if t.agent == agent), first_round[0])
    if not turn.messages or turn.messages[-1].get("role") != "user":
        raise ValueError(f"trace {trace.item_id!r}: the round-0 prompt does not end with a user message")
    return [dict(m) for m in turn.messages]


def make_sample(
    trace: QuestionTrace, completion: str, strategy: str, agent: int | None, round_: int | None, corrective: bool
) -> Sample:
    """One TRL conversational prompt-completion record plus the metadata columns."""
    return {
        "prompt": question_messages(trace, agent),
        "completion": [{"role": "assistant", "content": completion}],
        "item_id": trace.item_id,
        "strategy": strategy,
        "agent": agent,
        "round": round_,
        "corrective": corrective,
    }


def _turn_sample(trace: QuestionTrace, turn: AgentTurn, strategy: str) -> Sample:
    last = trace.agent_turns(turn.agent)[-1].round == turn.round  # only an agent's last turn can be a correction
    return make_sample(trace, turn.text, strategy, turn.agent, turn.round, last and is_corrective(trace, turn.agent))


# --- which trajectories are good -----------------------------------------------------------------


def is_corrective(trace: QuestionTrace, agent: int) -> bool:
    """The agent was wrong in some earlier round and right in its final one: a self-correction."""
    turns = trace.agent_turns(agent)
    return bool(turns) and turns[-1].correct and any(not t.correct for t in turns[:-1])


def is_target(turn: AgentTurn) -> bool:
    """Correct, with an extracted answer, and finished before the token cap."""
    return turn.correct and turn.answer is not None and turn.finish_reason != "length"


def ranked_correct_finals(trace: QuestionTrace) -> list[AgentTurn]:
    """Usable (:func:`is_target`) final-round solver turns, best target first.

    Order: corrective trajectories, then those agreeing with the final-round majority, then the lowest
    agent index (a deterministic tie-break, so rebuilding the data never changes it).
    """
    finals = trace.final_turns()
    majority = majority_vote([t.answer for t in finals])
    correct = [t for t in finals if is_target(t)]
    return sorted(correct, key=lambda t: (not is_corrective(trace, t.agent), t.answer != majority, t.agent))


# --- structural diversity (for DA) ---------------------------------------------------------------


def _jaccard(a: frozenset[Any], b: frozenset[Any]) -> float:
    return 1.0 if not a and not b else len(a & b) / len(a | b)


def structure_signature(text: str) -> tuple[frozenset[str], frozenset[tuple[str, ...]]]:
    """What a solution computes and how it says it: its numbers and its word 3-grams."""
    numbers = frozenset(n.replace(",", "") for n in _NUMBER.findall(text))
    words = [w.lower() for w in _WORD.findall(text)]
    trigrams = frozenset(zip(words, words[1:], words[2:], strict=False))
    return numbers, trigrams


def structure_distance(a: str, b: str) -> float:
    """0 (same numbers and wording) .. 1 (nothing shared); the mean of two Jaccard distances."""
    (nums_a, grams_a), (nums_b, grams_b) = structure_signature(a), structure_signature(b)
    return 1.0 - (_jaccard(nums_a, nums_b) + _jaccard(grams_a, grams_b)) / 2


def select_diverse(texts: Sequence[str], k: int) -> list[int]:
    """Greedy farthest-point choice of up to ``k`` indices, starting from index 0 (the preferred one).

    Each step adds the candidate farthest from everything chosen (ties: earliest, i.e. best ranked).
    A candidate at distance 0 from a chosen one is a structural duplicate and is never taken.
    """
    if not texts or k < 1:
        return []
    chosen = [0]
    while len(chosen) < k:
        remaining = [i for i in range(len(texts)) if i not in chosen]
        gaps = {i: min(structure_distance(texts[i], texts[j]) for j in chosen) for i in remaining}
        best = max(remaining, key=lambda i: gaps[i], default=None)  # max keeps the first of equals
        if best is None or gaps[best] == 0.0:
            break
        chosen.append(best)
    return chosen


# --- which questions ----------------------------------------------------------------------------


def unsolved_by(traces: Iterable[QuestionTrace], student_run: Iterable[QuestionTrace]) -> list[QuestionTrace]:
    """The debate traces of questions the student answered wrong in its own run (e.g. ``single`` on the
    same train questions). A question missing from ``student_run`` is kept: nothing says it is solved."""
    solved = {t.item_id for t in student_run if t.final_correct}
    return [t for t in traces if t.item_id not in solved]


# --- builders ------------------------------------------------------------------------------------


def ranked_correct_first(trace: QuestionTrace) -> list[AgentTurn]:
    """Usable round-0 solver turns, best first: those agreeing with the round-0 majority, then the
    lowest agent index. Round 0 is each agent alone, before it saw a peer: samples of the teacher
    model by itself, the control that separates what the debate adds from what the model knows."""
    first = trace.round_turns(0)
    majority = majority_vote([t.answer for t in first])
    return sorted((t for t in first if is_target(t)), key=lambda t: (t.answer != majority, t.agent))


def build_rsft(traces: Iterable[QuestionTrace], per_question: PerQuestion = "one",
               source_round: SourceRound = "final") -> list[Sample]:
    """Correct trajectories as targets: from the final round of questions whose final (team) answer is
    verified correct (``final``, the team's RSFT), or every verified-correct round-0 turn (``first``,
    rejection sampling of the teacher alone on the same questions with the same sampling)."""
    if per_question not in ("one", "all"):
        raise ValueError(f"per_question must be 'one' or 'all', got {per_question!r}")
    if source_round not in ("final", "first"):
        raise ValueError(f"source_round must be 'final' or 'first', got {source_round!r}")
    samples = []
    for trace in traces:
        if source_round == "first":
            ranked = ranked_correct_first(trace)
        elif trace.final_correct:
            ranked = ranked_correct_finals(trace)
        else:
            continue
        chosen = ranked if per_question == "all" else ranked[:1]
        samples.extend(_turn_sample(trace, turn, "rsft") for turn in chosen)
    return samples


def subsample(samples: Sequence[Sample], n: int | None, seed: int = 0) -> list[Sample]:
    """At most ``n`` of ``samples``, drawn without replacement by ``seed``, in their original order:
    the way two training sets are matched in size (``None`` or ``n >= len``: all of them)."""
    if n is None or n >= len(samples):
        return list(samples)
    keep = sorted(random.Random(seed).sample(range(len(samples)), n))
    return [samples[i] for i in keep]


def sample_key(sample: Sample) -> tuple[Any, ...]:
    """What makes two samples the same training example: question, source turn and target text."""
    return sample["item_id"], sample["agent"], sample["round"], sample["completion"][-1]["content"]


def shared_samples(a: Iterable[Sample], b: Iterable[Sample]) -> int:
    """How many samples of ``a`` are also in ``b`` (e.g. round-0 consensus turns in both the team's
    and the teacher-alone sets)."""
    keys = {sample_key(s) for s in b}
    return sum(sample_key(s) in keys for s in a)


def build_da(traces: Iterable[QuestionTrace], k: int = 3) -> list[Sample]:
    """Up to ``k`` structurally different correct trajectories per question with >= 2 correct agents."""
    if k not in (1, 2, 3):
        raise ValueError(f"k must be 1, 2 or 3, got {k}")
    samples = []
    for trace in traces:
        ranked = ranked_correct_finals(trace)
        if len(ranked) < 2:
            continue
        picked = select_diverse([t.text for t in ranked], k)
        samples.extend(_turn_sample(trace, ranked[i], "da") for i in picked)
    return samples


def build_answer_only(traces: Iterable[QuestionTrace]) -> list[Sample]:
    """Question -> gold answer, no reasoning: the baseline that isolates what the reasoning adds."""
    return [
        make_sample(trace, ANSWER_ONLY_TEMPLATE.format(gold=trace.gold), "sft", None, None, False)
        for trace in traces
    ]


BUILDERS: dict[str, Callable[..., list[Sample]]] = {"rsft": build_rsft, "da": build_da, "sft": build_answer_only}


def build_samples(strategy: str, traces: Iterable[QuestionTrace], **opts: Any) -> list[Sample]:
    """Run the named builder; unknown names fail with the list of known ones."""
    try:
        builder = BUILDERS[strategy]
    except KeyError:
        raise ValueError(f"unknown distillation strategy {strategy!r}; use one of {', '.join(BUILDERS)}") from None
    return builder(traces, **opts)


def to_dataset(samples: Sequence[Sample]):
    """Samples as a ``datasets.Dataset`` for TRL; an empty set is an error, not a silent no-op run."""
    from datasets import Dataset

    if not samples:
        raise ValueError("no training samples: the strategy kept no question from these traces")
    return Dataset.from_list(list(samples))


def pool_stats(traces: Iterable[QuestionTrace]) -> dict[str, Any]:
    """What the builders choose from: questions, final-round turns, and why turns are not targets."""
    traces = list(traces)
    finals = [t for trace in traces for t in trace.final_turns()]
    n = len(finals)
    capped = sum(t.finish_reason == "length" for t in finals)
    return {
        "questions": len(traces),
        "questions_final_correct": sum(t.final_correct for t in traces),
        "final_turns": n,
        "final_turns_correct": sum(t.correct for t in finals),
        "final_turns_target": sum(map(is_target, finals)),
        "final_turns_capped": capped,
        "capped_share": capped / n if n else 0.0,
        "final_turns_no_answer": sum(t.answer is None for t in finals),
    }


def dataset_stats(samples: Sequence[Sample], tokenizer: Any = None) -> dict[str, Any]:
    """Size and shape of a distillation set, for the manifest and for comparing strategies."""
    completions = [s["completion"][-1]["content"] for s in samples]
    n = len(samples)
    stats: dict[str, Any] = {
        "questions": len({s["item_id"] for s in samples}),
        "samples": n,
        "corrective_share": sum(bool(s["corrective"]) for s in samples) / n if n else 0.0,
        "mean_completion_chars": sum(map(len, completions)) / n if n else 0.0,
    }
    if tokenizer is not None:
        lengths = [len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in completions]
        stats["mean_completion_tokens"] = sum(lengths) / n if n else 0.0
    return stats
