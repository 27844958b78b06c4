"""What a task is: items with gold answers, how to ask, how to read and grade an answer.

A task knows nothing about agents or engines. Multi-agent systems call :meth:`Task.question_prompt`
to phrase a question, :meth:`Task.extract` to read a model's answer and :meth:`Task.grade` to score it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal

Split = Literal["train", "held-out"]
SPLITS: tuple[str, ...] = ("train", "held-out")


@dataclass(frozen=True)
class Item:
    """One question. ``id`` is stable across runs: traces are resumed and joined by it."""

    id: str
    question: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Extraction:
    """An answer read from model text.

    ``strict`` comes only from an explicit marker (``\\boxed{...}`` or "The answer is ..."); ``flexible``
    is the strict answer when there is one, else the last candidate in the text (last number, last
    letter). ``None`` means "no answer": it is graded wrong, never raised.
    """

    strict: str | None
    flexible: str | None


class Task(ABC):
    """Base class of every task (``arithmetic``, ``gsm8k``, ``jsonl``, ``choice``)."""

    name: str

    @abstractmethod
    def items(self, split: Split = "train", n: int | None = None) -> list[Item]:
        """The first ``n`` items of ``split``; train and held-out never share an item."""

    @abstractmethod
    def question_prompt(self, item: Item) -> str:
        """The user-message text that asks ``item``, including how to format the final answer."""

    @abstractmethod
    def extract(self, text: str) -> Extraction:
        """Read the answer out of a model completion. Never raises on odd text."""

    @abstractmethod
    def normalize(self, answer: str | None) -> str | None:
        """Canonical form used for voting and comparison (e.g. ``"1,000.0"`` -> ``"1000"``)."""

    @abstractmethod
    def grade(self, predicted: str | None, gold: str) -> bool:
        """True when ``predicted`` matches ``gold``. ``None`` (no answer) is always wrong."""
