"""Multiple-choice questions from a JSONL file: options are lettered (A), (B), ... and answers are letters.

A row holds a question, a list of option texts and the correct option, as a letter (``"B"``,
``"(b)"``) or a 0-based index (``1``). Up to ten options (A-J).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from agentark.tasks.base import Extraction, Item
from agentark.tasks.grading import last_boxed, strip_markup
from agentark.tasks.tabular import DataFormatError, FileTask, read_records, require_text, unique_ids

LETTERS = "ABCDEFGHIJ"

# A bare option letter, possibly written "(B)", "B)", "B.", "\text{B}" or "B: the text of option B".
_LETTER = re.compile(r"(?:\(\s*([A-Ja-j])\s*\)|([A-Ja-j])[.:)])(?:\s.*)?|([A-Ja-j])", re.DOTALL)
# "the answer is (B)" / "answer is: **B**"; a lower-case letter only in parentheses ("the answer is a ..." is prose).
_ANSWER_IS = re.compile(r"(?i:\banswer\s+is)\s*:?\s*[*$\s]*(?:\(([A-Ja-j])\)|\b([A-J])\b)")
_PAREN_LETTER = re.compile(r"(?<!\w)\(([A-J])\)")
_LINE_LETTER = re.compile(r"^[ \t*]*([A-J])\)", re.MULTILINE)


def letter_of(text: str | None) -> str | None:
    """The option letter ``text`` names (``"(b)"`` -> ``"B"``), or None when it is not just a letter."""
    if text is None:
        return None
    cleaned = re.sub(r"\\text(?:bf)?\s*\{([^{}]*)\}", r"\1", strip_markup(str(text)))
    match = _LETTER.fullmatch(cleaned.strip())
    return next(g for g in match.groups() if g).upper() if match else None


def extract_choice(text: str) -> Extraction:
    """Strict: the letter in the last ``\\boxed{}``, else in the last "answer is (X)".
    Flexible: the strict letter, else the last "(X)" or line-initial "X)" in the text."""
    if not isinstance(text, str):
        return Extraction(None, None)
    strict = letter_of(last_boxed(text))
    if strict is None:
        phrases = list(_ANSWER_IS.finditer(text))
        strict = (phrases[-1].group(1) or phrases[-1].group(2)).upper() if phrases else None
    if strict is not None:
        return Extraction(strict, strict)
    candidates = [*_PAREN_LETTER.finditer(text), *_LINE_LETTER.finditer(text)]
    last = max(candidates, key=lambda m: m.start(), default=None)
    return Extraction(None, last.group(1) if last else None)


def _gold_letter(answer: Any, n_options: int, source: str | os.PathLike, line: int) -> str:
    """The correct option as a letter, from a letter or a 0-based index, checked against the option count."""
    if isinstance(answer, int) and not isinstance(answer, bool):
        index = answer
    else:
        letter = letter_of(answer) if isinstance(answer, str) else None
        if letter is None:
            raise DataFormatError(source, line, f"answer {answer!r} is neither an option letter nor a 0-based index")
        index = LETTERS.index(letter)
    if not 0 <= index < n_options:
        raise DataFormatError(source, line, f"answer {answer!r} is out of range for {n_options} options")
    return LETTERS[index]


class ChoiceTask(FileTask):
    """Multiple choice from JSONL; ids are ``id_field`` values when given, else ``choice-<row index>``."""

    name = "choice"

    def __init__(self, path: str | os.PathLike, question_field: str = "question", choices_field: str = "choices",
                 answer_field: str = "answer", id_field: str | None = None, held_out: int = 0):
        super().__init__(held_out)
        self.path = Path(path)
        self.question_field, self.choices_field = question_field, choices_field
        self.answer_field, self.id_field = answer_field, id_field

    def _load(self) -> list[Item]:
        items, ids = [], []
        for index, (line, row) in enumerate(read_records(self.path)):
            question = require_text(row, self.question_field, self.path, line)
            choices = row.get(self.choices_field)
            if not isinstance(choices, list) or not all(isinstance(c, str) and c.strip() for c in choices):
                raise DataFormatError(
                    self.path, line, f"field {self.choices_field!r} must be a list of non-empty strings"
                )
            if not 2 <= len(choices) <= len(LETTERS):
                raise DataFormatError(self.path, line, f"need 2 to {len(LETTERS)} choices, got {len(choices)}")
            if row.get(self.answer_field) is None:
                raise DataFormatError(self.path, line, f"missing field {self.answer_field!r}")
            gold = _gold_letter(row[self.answer_field], len(choices), self.path, line)
            item_id = require_text(row, self.id_field, self.path, line) if self.id_field else f"choice-{index}"
            ids.append((item_id, line))
            items.append(Item(id=item_id, question=question, answer=gold, meta={"choices": choices, "line": line}))
        unique_ids(ids, self.path)
        return items

    def question_prompt(self, item: Item) -> str:
        options = "\n".join(f"({letter}) {text}" for letter, text in zip(LETTERS, item.meta["choices"], strict=False))
        return (f"{item.question}\n\n{options}\n\nExplain your reasoning, then state your answer at the end of the "
                "response as \\boxed{X}, where X is the letter of the correct option.")

    def extract(self, text: str) -> Extraction:
        return extract_choice(text)

    def normalize(self, answer: str | None) -> str | None:
        return letter_of(answer)

    def grade(self, predicted: str | None, gold: str) -> bool:
        letter = letter_of(predicted)
        return letter is not None and letter == letter_of(gold)
