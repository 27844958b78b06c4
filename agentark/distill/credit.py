"""Dense, per-step credit for PAD: each step's PRM score on that step's tokens, PURE's min-form.

The scalar PAD reward gives every token of a solution the same advantage. Dense credit gives each
token the *return-to-go* of its step instead, so a solution with a bad step 3 stops pushing up the
tokens of step 3 and later while keeping the credit of steps 1-2.

Min-form (PURE, Cheng et al. 2025, "Stop Summation: Min-Form Credit Assignment Is All Process Reward
Model Needs"): summing raw step rewards lets a policy farm reward with many mediocre steps; PURE
reweights the steps by ``softmax(-r / T)`` so the return is a soft minimum (``T -> 0`` gives the hard
minimum, the scalar ``min`` aggregation). The return-to-go of step ``k`` is
``sum_{j >= k} w_j r_j``; the verifiable reward (answer graded right) is a terminal reward, so it is
part of every token's return. Advantages are GRPO's: each return minus its group's mean return of
the whole solution, divided by the group's standard deviation of that whole return.

Pure functions here; :mod:`agentark.distill.grpo` wires them into TRL's ``GRPOTrainer``, which since
1.16 accepts per-token advantages of shape (batch, tokens).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def min_form_weights(scores: Sequence[float], temperature: float) -> list[float]:
    """``softmax(-r / T)`` over the scored steps; unscored (NaN) steps get weight 0."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    scored = [s for s in scores if not math.isnan(s)]
    if not scored:
        return [0.0] * len(scores)
    low = min(scored)  # shift for a stable softmax; the weights do not change
    exp = [0.0 if math.isnan(s) else math.exp(-(s - low) / temperature) for s in scores]
    total = sum(exp)
    return [e / total for e in exp]


def step_returns(scores: Sequence[float], temperature: float) -> list[float]:
    """Min-form return-to-go of each step: ``G_k = sum_{j >= k} w_j r_j`` (NaN steps add nothing)."""
    weights = min_form_weights(scores, temperature)
    returns, running = [0.0] * len(scores), 0.0
    for k in range(len(scores) - 1, -1, -1):
        if not math.isnan(scores[k]):
            running += weights[k] * scores[k]
        returns[k] = running
    return returns


def step_spans(text: str, steps: Sequence[str]) -> list[tuple[int, int]]:
    """Character span of each step in ``text``, found left to right (steps are stripped pieces of it)."""
    spans, pos = [], 0
    for step in steps:
        start = text.find(step, pos)
        if start < 0:
            raise ValueError(f"step {step[:40]!r} is not in the text after offset {pos}")
        spans.append((start, start + len(step)))
        pos = start + len(step)
    return spans


def token_steps(token_ends: Sequence[int], spans: Sequence[tuple[int, int]]) -> list[int]:
    """Index of the step each token belongs to, from the character offset where each token ends.

    A token belongs to the first step that has not ended before it starts; whitespace between two
    steps goes with the next step, text after the last step (e.g. end-of-turn) with the last one.
    """
    if not spans:
        return [0] * len(token_ends)
    out, k, start = [], 0, 0
    for end in token_ends:
        while k < len(spans) - 1 and start >= spans[k][1]:
            k += 1
        out.append(k)
        start = end
    return out


def token_returns(step_scores: Sequence[float], tokens_step: Sequence[int], outcome: float, temperature: float,
                  outcome_coef: float = 1.0) -> list[float]:
    """Per-token return: its step's min-form return-to-go plus ``outcome_coef`` x the verifiable reward.

    A solution with no scored step gets the outcome alone on every token.
    """
    returns = step_returns(step_scores, temperature) if step_scores else []
    terminal = outcome_coef * outcome
    return [(returns[k] if k < len(returns) else 0.0) + terminal for k in tokens_step]


def group_advantages(returns: Sequence[Sequence[float]], group_size: int, eps: float = 1e-4) -> list[list[float]]:
    """GRPO normalisation of per-token returns: minus the group's mean whole-solution return (each
    solution's first-token return), over the group's standard deviation of it."""
    if group_size < 1 or len(returns) % group_size:
        raise ValueError(f"{len(returns)} solutions do not split into groups of {group_size}")
    whole = [r[0] if r else 0.0 for r in returns]
    out: list[list[float]] = []
    for g in range(0, len(returns), group_size):
        group = whole[g : g + group_size]
        mean = sum(group) / group_size
        std = math.sqrt(sum((x - mean) ** 2 for x in group) / (group_size - 1)) if group_size > 1 else 0.0
        out.extend([(x - mean) / (std + eps) for x in r] for r in returns[g : g + group_size])
    return out
