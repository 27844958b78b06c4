"""Append-only, resumable JSONL store of :class:`QuestionTrace` records.

Why this shape: a run can be killed at any instant (Ctrl-C, OOM, kill -9). Each record is one
line written with a single ``os.write`` on an ``O_APPEND`` descriptor and fsynced, so a line is
either complete or a torn tail. On open, a torn tail (no final newline or invalid JSON) is cut
off, and the ids already present are skipped by the caller: re-running the same command completes
the set with exactly one record per question.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import ValidationError

from agentark.traces.schema import QuestionTrace

logger = logging.getLogger(__name__)

TRACES_FILE = "traces.jsonl"


class TraceFileError(ValueError):
    """A traces file has a bad record that is not a torn tail; names file and line."""


def _repair_tail(path: Path) -> None:
    """Cut a torn last line left by a killed writer; earlier bad lines are real errors, kept."""
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    cut = data.rfind(b"\n") + 1
    logger.warning("%s: dropping a torn last record (%d bytes) left by an interrupted run", path, len(data) - cut)
    with open(path, "r+b") as f:
        f.truncate(cut)
        f.flush()
        os.fsync(f.fileno())


def read_traces(path: str | Path) -> Iterator[QuestionTrace]:
    """Yield the records of a traces file (or of ``<dir>/traces.jsonl``)."""
    path = Path(path)
    if path.is_dir():
        path = path / TRACES_FILE
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            if not line.endswith("\n"):
                # A torn tail from a killed writer: not a record yet.
                return
            try:
                yield QuestionTrace.model_validate_json(line)
            except ValidationError as e:
                raise TraceFileError(f"{path}:{lineno}: not a valid trace record: {e.errors()[0]['msg']}") from e


class TraceStore:
    """Appends records to ``<run_dir>/traces.jsonl`` and knows which item ids are done."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / TRACES_FILE
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            _repair_tail(self.path)
            self.done_ids: set[str] = {t.item_id for t in read_traces(self.path)}
        else:
            self.done_ids = set()

    def append(self, traces: Iterable[QuestionTrace]) -> int:
        """Append records not yet stored; returns how many were written."""
        written = 0
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            for trace in traces:
                if trace.item_id in self.done_ids:
                    continue
                line = (trace.model_dump_json() + "\n").encode("utf-8")
                os.write(fd, line)  # one write per record: a crash leaves at most one torn tail
                self.done_ids.add(trace.item_id)
                written += 1
            os.fsync(fd)
        finally:
            os.close(fd)
        return written

    def __iter__(self) -> Iterator[QuestionTrace]:
        if not self.path.exists():
            return iter(())
        return read_traces(self.path)

    def __len__(self) -> int:
        return len(self.done_ids)


def write_json_atomic(path: str | Path, obj: object) -> None:
    """Write JSON via a temp file + rename so readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
