"""Tasks read from a file of questions: the shared split/loading machinery and the generic ``jsonl`` task.

Every file task splits the same way: the last ``held_out`` rows are "held-out", all earlier rows are
"train". No shuffling, so a split is a pure function of the file and ``held_out``, and adding rows at
the end of a file never moves an existing train row into held-out.
"""

from __future__ import annotations

import csv
import io
import json
import os
from abc import abstractmethod
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from agentark.tasks.base import SPLITS, Extraction, Item, Split, Task
from agentark.tasks.grading import extract_numeric, grade_numeric, normalize_math, normalize_number


class DataFormatError(ValueError):
    """A malformed data file; the message starts with ``path:LINE:`` so it can be fixed directly."""

    def __init__(self, source: str | os.PathLike, line: int, message: str):
        super().__init__(f"{source}:{line}: {message}")
        self.source, self.line = str(source), line


def check_split(split: str, n: int | None) -> None:
    """Reject a split name or count that a caller mistyped, instead of returning no items."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise ValueError(f"n must be a non-negative integer or None, got {n!r}")


def read_records(path: str | os.PathLike) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, row)`` for every row of a JSONL file, or of a CSV file (by its ``.csv`` suffix).

    Blank JSONL lines are skipped but still counted, so line numbers match an editor's. Every error
    names the file (and the line where there is one): a directory, a missing or empty file, bytes
    that are not UTF-8 (a UTF-8 byte-order mark, as spreadsheets write, is fine), a bad JSON line.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a data file")
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} not found")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        data, start = e.object, e.start  # the bytes after any byte-order mark, as an editor counts them
        line = data.count(b"\n", 0, start) + 1
        column = start - (data.rfind(b"\n", 0, start) + 1) + 1
        raise DataFormatError(path, line, f"not UTF-8 text (byte 0x{data[start]:02x} at column {column})") from None
    csv_file = path.suffix.lower() == ".csv"
    records = _csv_records(text) if csv_file else _jsonl_records(text, path)
    if not records:
        raise ValueError(f"{path} is empty (no {'CSV rows' if csv_file else 'JSON lines'})")
    return records


def _csv_records(text: str) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    return [(reader.line_num, row) for row in reader]


def _jsonl_records(text: str, path: Path) -> list[tuple[int, dict[str, Any]]]:
    records = []
    for line_number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataFormatError(path, line_number, f"invalid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict):
            raise DataFormatError(path, line_number, f"expected a JSON object, got {type(row).__name__}")
        records.append((line_number, row))
    return records


def require_text(row: dict[str, Any], field: str, source: str | os.PathLike, line: int) -> str:
    """``row[field]`` as non-empty text (numbers are accepted and written out)."""
    if field not in row or row[field] is None:
        raise DataFormatError(source, line, f"missing field {field!r} (fields: {', '.join(map(str, row)) or 'none'})")
    value = row[field]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataFormatError(source, line, f"field {field!r} must be text or a number, got {type(value).__name__}")
    text = str(value).strip()
    if not text:
        raise DataFormatError(source, line, f"field {field!r} is empty")
    return text


class FileTask(Task):
    """A task whose items are loaded once (lazily) and split by position: the last ``held_out`` are held out."""

    def __init__(self, held_out: int):
        if isinstance(held_out, bool) or not isinstance(held_out, int) or held_out < 0:
            raise ValueError(f"held_out must be a non-negative integer, got {held_out!r}")
        self.held_out = held_out

    @abstractmethod
    def _load(self) -> list[Item]:
        """Every item of the source, in file order."""

    @cached_property
    def _all_items(self) -> list[Item]:
        items = self._load()
        if self.held_out > len(items):
            raise ValueError(f"held_out={self.held_out} but {self.name} has only {len(items)} items")
        return items

    def items(self, split: Split = "train", n: int | None = None) -> list[Item]:
        check_split(split, n)
        cut = len(self._all_items) - self.held_out
        pool = self._all_items[:cut] if split == "train" else self._all_items[cut:]
        return pool[:n] if n is not None else list(pool)


def unique_ids(ids: list[tuple[str, int]], source: str | os.PathLike) -> None:
    """Item ids join traces across runs, so a repeated id in a file is an error, not a silent overwrite."""
    seen: dict[str, int] = {}
    for item_id, line in ids:
        if item_id in seen:
            raise DataFormatError(source, line, f"duplicate id {item_id!r} (first on line {seen[item_id]})")
        seen[item_id] = line


ANSWER_INSTRUCTION = "Explain your reasoning. State your final answer at the end of the response as \\boxed{answer}."


class JsonlTask(FileTask):
    """Questions with gold answers from any JSONL (or ``.csv``) file, with configurable field names.

    ``answer_type="numeric"`` compares numbers (gold must be a number); ``"math"`` keeps non-numeric
    gold answers and compares them symbolically with math-verify. Ids are ``id_field`` values when
    given, else ``jsonl-<row index>``.
    """

    name = "jsonl"

    def __init__(self, path: str | os.PathLike, question_field: str = "question", answer_field: str = "answer",
                 id_field: str | None = None, held_out: int = 0,
                 answer_type: Literal["numeric", "math"] = "numeric"):
        super().__init__(held_out)
        if answer_type not in ("numeric", "math"):
            raise ValueError(f"answer_type must be 'numeric' or 'math', got {answer_type!r}")
        self.path = Path(path)
        self.question_field, self.answer_field, self.id_field = question_field, answer_field, id_field
        self.answer_type = answer_type

    def _load(self) -> list[Item]:
        items, ids = [], []
        for index, (line, row) in enumerate(read_records(self.path)):
            question = require_text(row, self.question_field, self.path, line)
            raw = require_text(row, self.answer_field, self.path, line)
            gold = self.normalize(raw)
            if gold is None:
                raise DataFormatError(self.path, line, f"answer {raw!r} is not a number (use answer_type=math)")
            item_id = require_text(row, self.id_field, self.path, line) if self.id_field else f"jsonl-{index}"
            ids.append((item_id, line))
            items.append(Item(id=item_id, question=question, answer=gold, meta={"line": line}))
        unique_ids(ids, self.path)
        return items

    def question_prompt(self, item: Item) -> str:
        return f"{item.question}\n\n{ANSWER_INSTRUCTION}"

    def extract(self, text: str) -> Extraction:
        return extract_numeric(text)

    def normalize(self, answer: str | None) -> str | None:
        return normalize_number(answer) if self.answer_type == "numeric" else normalize_math(answer)

    def grade(self, predicted: str | None, gold: str) -> bool:
        return grade_numeric(predicted, gold)
