"""Multi-agent debate (Du et al., 2023): N agents answer, then R-1 rounds of reading and revising.

Round 0: every agent answers alone. Round r > 0: each agent sees the question, its own previous
answer and the other agents' previous answers, and revises. Only the previous round is shown, not
the whole history, so prompt length stays bounded for small models. A question whose agents all
give the same answer stops early (consensus); the final answer is the majority vote of the last
round, or the optional summariser agent's answer.

All agents x all still-active questions of a round go to the engine in one call.
"""

from __future__ import annotations

from agentark.engines.base import Conversation
from agentark.mas.base import MultiAgentSystem, RunContext, first_prompt, make_turn
from agentark.mas.prompts import debate_followup, summarizer_prompt
from agentark.tasks.base import Item
from agentark.tasks.grading import majority_vote
from agentark.traces.schema import AgentTurn, QuestionTrace


def has_consensus(turns: list[AgentTurn]) -> bool:
    answers = {t.answer for t in turns}
    return len(answers) == 1 and None not in answers


class Debate(MultiAgentSystem):
    name = "debate"

    def __init__(self, agents: int = 3, rounds: int = 2, early_stop: bool = True, summarizer: bool = False):
        if agents < 2 or rounds < 1:
            raise ValueError("debate needs agents >= 2 and rounds >= 1")
        self.n_agents = agents
        self.rounds = rounds
        self.early_stop = early_stop
        self.summarizer = summarizer

    def _revise_prompt(self, ctx: RunContext, item: Item, agent: int, last: list[AgentTurn]) -> Conversation:
        peers = [t.text for t in last if t.agent != agent]
        return first_prompt(ctx.task, item) + [
            {"role": "assistant", "content": last[agent].text},
            {"role": "user", "content": debate_followup(peers)},
        ]

    def run(self, ctx: RunContext, items: list[Item]) -> list[QuestionTrace]:
        turns: dict[str, list[AgentTurn]] = {item.id: [] for item in items}
        last: dict[str, list[AgentTurn]] = {}
        rounds_run = {item.id: 0 for item in items}
        active = list(items)
        for round_ in range(self.rounds):
            if not active:
                break
            jobs: list[tuple[Item, int, Conversation]] = []
            for item in active:
                for agent in range(self.n_agents):
                    prompt = (
                        first_prompt(ctx.task, item)
                        if round_ == 0
                        else self._revise_prompt(ctx, item, agent, last[item.id])
                    )
                    jobs.append((item, agent, prompt))
            completions = ctx.engine.generate([p for _, _, p in jobs], ctx.sampling)
            for (item, agent, prompt), completion in zip(jobs, completions, strict=True):
                turn = make_turn(ctx, item, agent, round_, prompt, completion)
                turns[item.id].append(turn)
                last.setdefault(item.id, [None] * self.n_agents)[agent] = turn  # type: ignore[list-item]
            for item in active:
                rounds_run[item.id] = round_ + 1
            if self.early_stop:
                active = [item for item in active if not has_consensus(last[item.id])]

        finals = {item.id: majority_vote([t.answer for t in last[item.id]]) for item in items}
        if self.summarizer:
            self._summarise(ctx, items, last, turns, rounds_run, finals)
        return [
            self._trace(ctx, item, turns[item.id], rounds_run[item.id], finals[item.id],
                        meta={"consensus": has_consensus(last[item.id]), "summarizer": self.summarizer})
            for item in items
        ]

    def _summarise(self, ctx, items, last, turns, rounds_run, finals) -> None:
        """One extra agent reads all final solutions and decides; majority stays if it gives no answer."""
        prompts = [
            [
                {
                    "role": "user",
                    "content": summarizer_prompt(ctx.task.question_prompt(item), [t.text for t in last[item.id]]),
                }
            ]
            for item in items
        ]
        for item, prompt, completion in zip(items, prompts, ctx.engine.generate(prompts, ctx.sampling), strict=True):
            turn = make_turn(ctx, item, self.n_agents, rounds_run[item.id], prompt, completion, role="summarizer")
            turns[item.id].append(turn)
            if turn.answer is not None:
                finals[item.id] = turn.answer
