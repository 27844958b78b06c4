"""Generated integer arithmetic, as in the multi-agent debate paper (Du et al. 2023): ``a+b*c+d-e*f``.

Items are a pure function of ``(seed, n_operands, max_value)`` and their index, so no data file is
needed and ids are stable. Each split draws from its own random stream, and every expression belongs
to exactly one split (decided by a hash of the expression, independent of the seed), so train and
held-out never share an expression, whatever ``n`` or seed is asked for.

Operands and operators are kept in ``item.meta`` so that perturbations can change them and recompute
the answer with :func:`evaluate_expression`.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

from agentark.tasks.base import Item, Split, Task
from agentark.tasks.grading import NumericAnswers
from agentark.tasks.tabular import check_split

OPERATORS = ("+", "-", "*")
DEFAULT_SIZE = 1000
"""Items returned when ``items(split)`` is called without ``n`` (the generator itself is unbounded)."""


def _check(operands: Sequence[int], operators: Sequence[str]) -> None:
    if not operands or len(operators) != len(operands) - 1:
        raise ValueError(
            f"need one operator fewer than operands, got {len(operands)} operands, {len(operators)} operators"
        )
    bad = [op for op in operators if op not in OPERATORS]
    if bad:
        raise ValueError(f"unsupported operators {bad}; supported: {' '.join(OPERATORS)}")


def evaluate_expression(operands: Sequence[int], operators: Sequence[str]) -> int:
    """Value of ``operands[0] op0 operands[1] op1 ...`` with ``*`` binding tighter than ``+``/``-``."""
    _check(operands, operators)
    total, sign, term = 0, 1, operands[0]
    for op, operand in zip(operators, operands[1:], strict=True):
        if op == "*":
            term *= operand
        else:
            total += sign * term
            sign, term = (1 if op == "+" else -1), operand
    return total + sign * term


def format_expression(operands: Sequence[int], operators: Sequence[str]) -> str:
    """``3+14*7-2``; a negative operand is parenthesised (``3+(-2)``) so the text stays unambiguous."""
    _check(operands, operators)
    words = [str(x) if x >= 0 else f"({x})" for x in operands]
    return words[0] + "".join(op + word for op, word in zip(operators, words[1:], strict=True))


def split_of(expression: str) -> Split:
    """Which split an expression belongs to: a fixed hash, so the two splits can never overlap."""
    return "held-out" if hashlib.sha256(expression.encode()).digest()[0] % 2 else "train"


class ArithmeticTask(NumericAnswers, Task):
    """``n_operands`` integers in ``[0, max_value]`` joined by random ``+ - *``."""

    name = "arithmetic"

    def __init__(self, n_operands: int = 4, seed: int = 0, max_value: int = 30):
        if isinstance(n_operands, bool) or not isinstance(n_operands, int) or n_operands < 2:
            raise ValueError(f"n_operands must be an integer >= 2, got {n_operands!r}")
        if isinstance(max_value, bool) or not isinstance(max_value, int) or max_value < 1:
            raise ValueError(f"max_value must be an integer >= 1, got {max_value!r}")
        self.n_operands, self.seed, self.max_value = n_operands, seed, max_value

    def _stream(self, split: Split) -> random.Random:
        # String seeds are hashed with SHA-512 by `random`, so the stream is the same in every process.
        return random.Random(f"arithmetic/{self.seed}/{self.n_operands}/{self.max_value}/{split}")

    def items(self, split: Split = "train", n: int | None = None) -> list[Item]:
        check_split(split, n)
        n = DEFAULT_SIZE if n is None else n
        rng, seen, items = self._stream(split), set(), []
        max_draws = 50 * n + 1000
        for _ in range(max_draws):
            if len(items) == n:
                break
            operands = [rng.randint(0, self.max_value) for _ in range(self.n_operands)]
            operators = [rng.choice(OPERATORS) for _ in range(self.n_operands - 1)]
            expression = format_expression(operands, operators)
            if expression in seen or split_of(expression) != split:
                continue
            seen.add(expression)
            items.append(Item(
                id=f"arith-{split}-{len(items):06d}",
                question=expression,
                answer=str(evaluate_expression(operands, operators)),
                meta={"operands": operands, "operators": operators},
            ))
        if len(items) < n:
            raise ValueError(f"only {len(items)} distinct {split} expressions with n_operands={self.n_operands}, "
                             f"max_value={self.max_value}; asked for {n}")
        return items

    def question_prompt(self, item: Item) -> str:
        # Asking for the steps matters: without it Qwen2.5-Coder-0.5B answers in ~20 tokens and is right
        # half as often (2/16 vs 4/16 greedy on held-out items), and there is no reasoning to distil.
        return (f"What is the result of {item.question}? Solve it step by step, following the order of operations, "
                "then state your answer at the end of the response as \\boxed{answer}.")
