"""Hand-made traces for metric, gate and report tests: every number in them is chosen by the test."""

from __future__ import annotations

from agentark.traces.schema import AgentTurn, QuestionTrace

GOLD = "7"


def turn(agent: int, round_: int, answer: str | None, *, strict: bool = True, latency: float = 1.0,
         prompt_tokens: int = 10, completion_tokens: int = 5, role: str = "solver") -> AgentTurn:
    """A turn answering ``answer`` (right iff it is GOLD); ``strict=False``: no boxed / "answer is" marker."""
    correct = answer == GOLD
    return AgentTurn(
        agent=agent, round=round_, role=role, messages=[{"role": "user", "content": "What is 3+4?"}],
        text=f"The answer is {answer}." if strict else f"so {answer}", answer=answer,
        answer_strict=answer if strict else None, correct=correct, correct_strict=correct and strict,
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, latency_s=latency,
    )


def make_trace(item_id: str, rounds: list[list[str | None]], *, system: str = "debate", model_id: str = "m",
               latencies: list[list[float]] | None = None, completion_tokens: int = 5,
               summary: AgentTurn | None = None, strict: bool = True) -> QuestionTrace:
    """A trace whose round r has agents answering ``rounds[r]``; final answer = majority of the last round."""
    turns = [
        turn(
            a, r, ans, strict=strict, latency=latencies[r][a] if latencies else 1.0, completion_tokens=completion_tokens
        )
        for r, answers in enumerate(rounds)
        for a, ans in enumerate(answers)
    ]
    last = [a for a in rounds[-1] if a is not None]
    final = max(last, key=lambda a: (last.count(a), -last.index(a))) if last else None
    if summary is not None:
        turns.append(summary)
        final = summary.answer if summary.answer is not None else final
    return QuestionTrace(
        task="arithmetic", item_id=item_id, question="3+4", gold=GOLD, system=system, model_id=model_id,
        config_hash="h", n_agents=len(rounds[0]), n_rounds=len(rounds), turns=turns, final_answer=final,
        final_correct=final == GOLD,
    )


def single_traces(correct: list[bool], system: str = "single", model_id: str = "m") -> list[QuestionTrace]:
    """One single-agent trace per entry, right or wrong as given, ids ``q0..``."""
    return [
        make_trace(f"q{i}", [[GOLD if ok else "0"]], system=system, model_id=model_id) for i, ok in enumerate(correct)
    ]
