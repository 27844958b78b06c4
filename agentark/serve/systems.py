"""What a server answers with: one model, a team of agents, or the hybrid (student first, team fallback).

Every served system maps a batch of client conversations to one :class:`Reply` each, so the HTTP
layer, the micro-batcher and the metrics are the same for all of them. A team system runs the very
multi-agent code that generated the traces (``mas``), with the client's conversation as the
question: the request's own messages open every agent's round 0 (``mas.base.SERVED_CONVERSATION``),
and the task only reads and votes on answers (its gold answers are never consulted).

The hybrid is the route the gate's *hybrid* outcome recommends: the student answers ``k`` sampled
times; when the share of samples that agree with their majority (the gate's
:func:`~agentark.gate.decide.agreement_confidence`) is below ``threshold`` the team answers instead.
The threshold defaults to the one a pilot chose (``decision.json``), so the server routes exactly
as the report estimated.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from agentark.defaults import DEFAULT_TEMPERATURE
from agentark.engines.base import Completion, Conversation, Engine, SamplingParams
from agentark.gate.decide import agreement_confidence
from agentark.mas import MultiAgentSystem, RunContext, SelfConsistency
from agentark.mas.base import SERVED_CONVERSATION
from agentark.tasks.base import Extraction, Item, Task
from agentark.traces.schema import QuestionTrace

logger = logging.getLogger(__name__)

SERVED_SYSTEMS = ("single", "self_consistency", "debate", "hybrid")
ROUTE_HEADER = "X-AgentArk-Route"
"""Response header naming the path that answered (:attr:`Reply.route`)."""

@dataclass(frozen=True)
class Reply:
    """One answer to one conversation, with the path that produced it.

    ``completion`` is what the client receives: its text, and as tokens the whole cost of the
    answer (all agents' turns for a team, the student's samples plus the team's turns for a
    fallback), so ``usage`` bills what was spent. ``route`` is ``single``, ``self_consistency``,
    ``debate``, or for the hybrid ``student`` / ``team``.
    """

    completion: Completion
    route: str
    answer: str | None = None
    confidence: float | None = None
    fallback_error: str | None = None  # the hybrid's team failed: this is the student's answer instead


class ServedSystem(Protocol):
    """A batch of conversations in, one :class:`Reply` each, in order."""

    name: str
    model_id: str  # the served model name unless the server is told another
    default_temperature: float  # when a request sets none
    thread_safe: bool  # may several batches run at once (the engine batches them itself)?

    def answer(self, conversations: list[Conversation], sampling: SamplingParams) -> list[Reply]: ...


class SingleModel:
    """Today's server: each conversation straight to the engine."""

    name = "single"
    default_temperature = 1.0  # OpenAI's

    def __init__(self, engine: Engine):
        self.engine, self.model_id = engine, engine.model_id
        # llama.cpp's server and remote OpenAI servers batch concurrent calls step by step
        # (continuous batching); an in-process transformers model must see one call at a time.
        self.thread_safe = bool(getattr(engine, "thread_safe", False))

    def answer(self, conversations: list[Conversation], sampling: SamplingParams) -> list[Reply]:
        return [Reply(c, self.name) for c in self.engine.generate(conversations, sampling)]


class _ServedTask(Task):
    """The task's answer reading and voting, with the client's messages as the question."""

    def __init__(self, task: Task):
        self.task, self.name = task, task.name

    def items(self, split="train", n=None):  # pragma: no cover - a served task has no items of its own
        raise NotImplementedError("a served task answers requests; it has no items")

    def question_prompt(self, item: Item) -> str:
        return item.question  # used by a debate's summariser: the client's own last message

    def extract(self, text: str) -> Extraction:
        return self.task.extract(text)

    def normalize(self, answer: str | None) -> str | None:
        return self.task.normalize(answer)

    def grade(self, predicted: str | None, gold: str) -> bool:
        return False  # no gold answer for a request


def as_items(conversations: list[Conversation]) -> list[Item]:
    """One item per request: the last user message is the question, the whole conversation its prompt."""
    items = []
    for conversation in conversations:
        question = next((m["content"] for m in reversed(conversation) if m["role"] == "user"), "")
        items.append(Item(id=uuid.uuid4().hex, question=question, answer="", meta={SERVED_CONVERSATION: conversation}))
    return items


def reply_from_trace(trace: QuestionTrace, route: str, confidence: float | None = None,
                     spent: tuple[int, int] = (0, 0)) -> Reply:
    """The text of the first final-round turn that gives the team's answer (else the last turn), billed
    with every turn's tokens plus ``spent`` (prompt, completion) tokens of an earlier attempt."""
    finals = trace.final_turns() or trace.turns
    chosen = next((t for t in finals if trace.final_answer is not None and t.answer == trace.final_answer), finals[-1])
    completion = Completion(
        text=chosen.text,
        prompt_tokens=spent[0] + sum(t.prompt_tokens for t in trace.turns),
        completion_tokens=spent[1] + sum(t.completion_tokens for t in trace.turns),
        latency_s=max((t.latency_s for t in trace.turns), default=0.0),
        finish_reason=chosen.finish_reason,
    )
    return Reply(completion, route, answer=trace.final_answer, confidence=confidence)


class Team:
    """A multi-agent system (debate, self-consistency) over one engine, answering each request."""

    default_temperature = DEFAULT_TEMPERATURE  # voters sample unless a request sets temperature

    def __init__(self, engine: Engine, system: MultiAgentSystem, task: Task):
        self.engine, self.system, self.task = engine, system, _ServedTask(task)
        self.name, self.model_id = system.name, engine.model_id
        self.thread_safe = bool(getattr(engine, "thread_safe", False))

    def traces(self, conversations: list[Conversation], sampling: SamplingParams) -> list[QuestionTrace]:
        return self.system.run(
            RunContext(task=self.task, engine=self.engine, sampling=sampling), as_items(conversations)
        )

    def answer(self, conversations: list[Conversation], sampling: SamplingParams) -> list[Reply]:
        return [reply_from_trace(trace, self.name) for trace in self.traces(conversations, sampling)]


class Hybrid:
    """The student answers ``k`` times; below ``threshold`` agreement, the team answers instead."""

    name = "hybrid"
    default_temperature = DEFAULT_TEMPERATURE  # voters sample unless a request sets temperature

    def __init__(self, student: Engine, team: Team, task: Task, threshold: float, k: int = 3):
        if k < 2:
            raise ValueError("hybrid needs k >= 2 student samples: with one, every answer has full confidence")
        if math.isnan(threshold):
            raise ValueError("hybrid threshold must be a number (inf = always fall back)")
        self.student = Team(student, SelfConsistency(k), task)
        self.team, self.threshold, self.k = team, threshold, k
        self.model_id = student.model_id
        self.thread_safe = self.student.thread_safe and team.thread_safe

    def answer(self, conversations: list[Conversation], sampling: SamplingParams) -> list[Reply]:
        traces = self.student.traces(conversations, sampling)
        confidence = agreement_confidence(traces)
        replies: list[Reply | None] = []
        fallback: list[int] = []
        for i, trace in enumerate(traces):
            if confidence[trace.item_id] >= self.threshold:
                replies.append(reply_from_trace(trace, "student", confidence[trace.item_id]))
            else:
                replies.append(None)
                fallback.append(i)
        if fallback:
            try:
                team_traces = self.team.traces([conversations[i] for i in fallback], sampling)
            except Exception as exc:  # the team is down or refused: the student's answer beats an error
                logger.exception("hybrid fallback failed for %d requests; answering with the student", len(fallback))
                error = f"{type(exc).__name__}: {exc}"
                for i in fallback:
                    reply = reply_from_trace(traces[i], "student", confidence[traces[i].item_id])
                    replies[i] = replace(reply, fallback_error=error)
                return replies  # type: ignore[return-value]
            for i, team_trace in zip(fallback, team_traces, strict=True):
                student = traces[i]
                spent = (sum(t.prompt_tokens for t in student.turns), sum(t.completion_tokens for t in student.turns))
                replies[i] = reply_from_trace(team_trace, "team", confidence[student.item_id], spent)
        return replies  # type: ignore[return-value]


def threshold_from_decision(path: str | Path) -> float:
    """The routing threshold a pilot's gate chose (``report/decision.json``)."""
    path = Path(path)
    try:
        decision = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read a decision ({exc})") from exc
    hybrid = decision.get("hybrid") if isinstance(decision, dict) else None
    if not isinstance(hybrid, dict) or not isinstance(hybrid.get("threshold"), (int, float)):
        raise ValueError(f"{path}: no hybrid.threshold in this decision (its outcome: {decision.get('outcome')!r}); "
                         "give --threshold instead")
    return float(hybrid["threshold"])
