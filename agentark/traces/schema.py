"""The trace record: everything one multi-agent run did on one question.

One :class:`QuestionTrace` per question, one :class:`AgentTurn` per agent per round. Later stages
(distillation data, process labels, self-correction metrics) read only this schema, so it stores
the full messages each agent saw, not just its answer.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

SCHEMA_VERSION = 1


class AgentTurn(BaseModel):
    """One agent's answer in one round (round 0 is the independent first answer)."""

    agent: int
    round: int
    role: str = "solver"  # "solver" | "summarizer"
    messages: list[dict[str, str]] = Field(description="The conversation the agent was given (without its reply).")
    text: str
    answer_strict: str | None = None
    answer: str | None = Field(None, description="Flexible extraction, normalised; None = no answer.")
    correct: bool = False
    correct_strict: bool = False
    prompt_tokens: int = 0
    cached_prompt_tokens: int = Field(0, description="Of prompt_tokens, those the engine served from its prompt "
                                      "(prefix) cache instead of prefilling; 0 in traces made before it was counted.")
    completion_tokens: int = 0
    latency_s: float = 0.0
    finish_reason: str = "stop"


class QuestionTrace(BaseModel):
    """A whole run of a multi-agent system on one question."""

    schema_version: int = SCHEMA_VERSION
    task: str
    item_id: str
    question: str
    gold: str
    system: str
    model_id: str
    config_hash: str
    n_agents: int
    n_rounds: int = Field(description="Rounds actually run (debate may stop early on consensus).")
    turns: list[AgentTurn]
    final_answer: str | None
    final_correct: bool
    meta: dict = Field(default_factory=dict)

    def round_turns(self, round_: int) -> list[AgentTurn]:
        """Solver turns of one round, ordered by agent."""
        return sorted((t for t in self.turns if t.round == round_ and t.role == "solver"), key=lambda t: t.agent)

    def final_turns(self) -> list[AgentTurn]:
        """Each agent's last solver turn (its final answer)."""
        return self.round_turns(self.n_rounds - 1)

    def agent_turns(self, agent: int) -> list[AgentTurn]:
        """One agent's solver turns, in round order."""
        return sorted((t for t in self.turns if t.agent == agent and t.role == "solver"), key=lambda t: t.round)

    @property
    def prompt_tokens(self) -> int:
        return sum(t.prompt_tokens for t in self.turns)

    @property
    def cached_prompt_tokens(self) -> int:
        return sum(t.cached_prompt_tokens for t in self.turns)

    @property
    def completion_tokens(self) -> int:
        return sum(t.completion_tokens for t in self.turns)
