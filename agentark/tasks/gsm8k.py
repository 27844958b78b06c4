"""GSM8K grade-school maths word problems (Cobbe et al. 2021).

Rows have ``question`` and ``answer``; the answer is a worked solution ending in ``#### <number>``.
The gold answer is that number, normalised; the solution is kept in ``item.meta["solution"]``.

Split: the last ``held_out`` rows of the file (by default 500 of the 7,473 rows of GSM8K's train
split) are "held-out", the rest "train", in file order with no shuffling, so ids (``gsm8k-<row>``)
and splits are the same on every machine. GSM8K's own test split is left alone for final reporting.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agentark.tasks.base import Item
from agentark.tasks.grading import NumericAnswers, normalize_number
from agentark.tasks.tabular import DataFormatError, FileTask, read_records, require_text

GSM8K_PROMPT = ("Can you solve the following math problem? {question} Explain your reasoning. Your final answer "
                "should be a single numerical number, in the form \\boxed{{answer}}, at the end of your response.")
"""The debate paper's GSM8K prompt (Du et al. 2023)."""


def parse_row(row: dict[str, Any], index: int, source: str | os.PathLike, line: int) -> Item:
    """One GSM8K row -> an item; raises :class:`DataFormatError` pointing at ``source:line``."""
    question = require_text(row, "question", source, line)
    answer = require_text(row, "answer", source, line)
    solution, marker, final = answer.rpartition("####")
    if not marker:
        raise DataFormatError(source, line, "answer has no '#### <number>' final line")
    gold = normalize_number(final)
    if gold is None:
        raise DataFormatError(source, line, f"final answer {final.strip()!r} after '####' is not a number")
    return Item(id=f"gsm8k-{index}", question=question, answer=gold, meta={"solution": solution.strip()})


class GSM8KTask(NumericAnswers, FileTask):
    """GSM8K from a local JSONL file (``path``) or, without one, from the Hugging Face hub."""

    name = "gsm8k"

    def __init__(self, path: str | os.PathLike | None = None, held_out: int = 500, hub_id: str = "openai/gsm8k"):
        super().__init__(held_out)
        self.path = Path(path) if path is not None else None
        self.hub_id = hub_id

    def _load(self) -> list[Item]:
        if self.path is not None:
            return [parse_row(row, i, self.path, line) for i, (line, row) in enumerate(read_records(self.path))]
        return [parse_row(row, i, self.hub_id, i + 1) for i, row in enumerate(self._hub_rows())]

    def _hub_rows(self) -> Iterable[dict[str, Any]]:
        """The hub's train split; offline use needs a local file (``path=`` / ``--data``)."""
        try:
            from datasets import load_dataset

            return load_dataset(self.hub_id, "main", split="train")
        except Exception as e:  # noqa: BLE001 - network, auth and cache errors all mean "not available here".
            raise RuntimeError(
                f"could not load {self.hub_id!r} from the Hugging Face hub ({type(e).__name__}: {e}); "
                "pass a local GSM8K JSONL file with path=... (CLI: --data FILE)"
            ) from e

    def question_prompt(self, item: Item) -> str:
        return GSM8K_PROMPT.format(question=item.question)
