"""One agent, one chain-of-thought answer: the base-model (and distilled-student) system."""

from __future__ import annotations

from agentark.mas.base import MultiAgentSystem, RunContext, first_prompt, make_turn
from agentark.tasks.base import Item
from agentark.traces.schema import QuestionTrace


class SingleAgent(MultiAgentSystem):
    name = "single"
    n_agents = 1

    def run(self, ctx: RunContext, items: list[Item]) -> list[QuestionTrace]:
        prompts = [first_prompt(ctx.task, item) for item in items]
        completions = ctx.engine.generate(prompts, ctx.sampling)
        traces = []
        for item, messages, completion in zip(items, prompts, completions, strict=True):
            turn = make_turn(ctx, item, 0, 0, messages, completion)
            traces.append(self._trace(ctx, item, [turn], 1, turn.answer))
        return traces
