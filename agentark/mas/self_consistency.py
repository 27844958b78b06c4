"""Self-consistency (Wang et al., 2022): k independent samples, majority vote.

The "Debate or Vote" result is that voting explains most of debate's gain, so this is the
baseline a distilled student and the debate itself must be compared against.
"""

from __future__ import annotations

from agentark.mas.base import MultiAgentSystem, RunContext, first_prompt, make_turn
from agentark.tasks.base import Item
from agentark.tasks.grading import majority_vote
from agentark.traces.schema import QuestionTrace


class SelfConsistency(MultiAgentSystem):
    name = "self_consistency"

    def __init__(self, k: int = 5):
        if k < 1:
            raise ValueError("self_consistency needs k >= 1")
        self.n_agents = k

    def run(self, ctx: RunContext, items: list[Item]) -> list[QuestionTrace]:
        k = self.n_agents
        prompts = [first_prompt(ctx.task, item) for item in items for _ in range(k)]
        completions = ctx.engine.generate(prompts, ctx.sampling)
        traces = []
        for q, item in enumerate(items):
            turns = [make_turn(ctx, item, a, 0, prompts[q * k + a], completions[q * k + a]) for a in range(k)]
            traces.append(self._trace(ctx, item, turns, 1, majority_vote([t.answer for t in turns])))
        return traces
