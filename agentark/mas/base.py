"""What every multi-agent system shares: one batched engine call per round, graded turns."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from agentark.engines.base import Completion, Conversation, Engine, SamplingParams
from agentark.tasks.base import Item, Task
from agentark.traces.schema import AgentTurn, QuestionTrace


@dataclass
class RunContext:
    """The fixed parts of a run that every trace records."""

    task: Task
    engine: Engine
    sampling: SamplingParams
    config_hash: str = ""


def make_turn(ctx: RunContext, item: Item, agent: int, round_: int, messages: Conversation,
              completion: Completion, role: str = "solver") -> AgentTurn:
    """Grade one completion into a trace turn; an answer that cannot be read is ``None`` (wrong)."""
    task = ctx.task
    extraction = task.extract(completion.text)
    answer = task.normalize(extraction.flexible)
    strict = task.normalize(extraction.strict)
    return AgentTurn(
        agent=agent,
        round=round_,
        role=role,
        messages=[dict(m) for m in messages],
        text=completion.text,
        answer_strict=strict,
        answer=answer,
        correct=task.grade(answer, item.answer),
        correct_strict=task.grade(strict, item.answer),
        prompt_tokens=completion.prompt_tokens,
        cached_prompt_tokens=completion.cached_prompt_tokens,
        completion_tokens=completion.completion_tokens,
        latency_s=completion.latency_s,
        finish_reason=completion.finish_reason,
    )


SERVED_CONVERSATION = "conversation"
"""``Item.meta`` key of a served request's own conversation: a client phrases its question itself."""


def first_prompt(task: Task, item: Item) -> Conversation:
    """The opening conversation: the task's phrasing of the question, or the one a client sent."""
    if (conversation := item.meta.get(SERVED_CONVERSATION)) is not None:
        return [dict(m) for m in conversation]
    return [{"role": "user", "content": task.question_prompt(item)}]


class MultiAgentSystem(ABC):
    """A way of answering questions with one or more agents (LLM calls) over an engine."""

    name: str
    n_agents: int = 1

    @abstractmethod
    def run(self, ctx: RunContext, items: list[Item]) -> list[QuestionTrace]:
        """Answer all ``items``; each round batches every agent x item into one engine call."""

    def _trace(self, ctx: RunContext, item: Item, turns: list[AgentTurn], n_rounds: int,
               final_answer: str | None, meta: dict | None = None) -> QuestionTrace:
        return QuestionTrace(
            task=ctx.task.name,
            item_id=item.id,
            question=item.question,
            gold=item.answer,
            system=self.name,
            model_id=ctx.engine.model_id,
            config_hash=ctx.config_hash,
            n_agents=self.n_agents,
            n_rounds=n_rounds,
            turns=turns,
            final_answer=final_answer,
            final_correct=ctx.task.grade(final_answer, item.answer),
            meta=meta or {},
        )
