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
from typing import Any

from pydantic import ValidationError

from agentark.tasks import Task, get_task
from agentark.traces.schema import QuestionTrace

logger = logging.getLogger(__name__)

TRACES_FILE = "traces.jsonl"
STAGE_FILE = "stage.json"
"""A stage directory's record: fingerprint, completeness, result and settings (agentark.pipeline.cache)."""
LEGACY_CONFIG_FILE = "config.json"
"""What ``agentark generate`` wrote before stage.json: ``{"config_hash", "config"}``."""


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
    if not path.is_file():
        raise FileNotFoundError(f"no traces at {path}: give a run directory made by `agentark generate` "
                                f"(or its {TRACES_FILE})")
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


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's object, or ``None`` when the file does not exist."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def stage_record(run_dir: str | Path) -> dict[str, Any] | None:
    """The stage record of a directory (``stage.json``, or a pre-stage ``config.json`` read as one)."""
    out = Path(run_dir)
    record = read_json(out / STAGE_FILE)
    if record is None and (legacy := read_json(out / LEGACY_CONFIG_FILE)) is not None:
        record = {"stage": "generate", "fingerprint": legacy.get("config_hash"), "complete": False,
                  "config": legacy.get("config", {})}
    return record


def task_of_run(run_dir: str | Path) -> Task:
    """The task (with its options, e.g. a data path) that a run directory's traces were made on."""
    path = Path(run_dir)
    path = path if path.is_dir() else path.parent
    record = stage_record(path)
    if record is None or "task" not in record.get("config", {}):
        raise FileNotFoundError(f"{path} has no {STAGE_FILE}: not a run directory made by `agentark generate`")
    config = record["config"]
    return get_task(config["task"], **config.get("task_options", {}))
