"""The one cache mechanism of every stage: ``<stage dir>/stage.json`` and a fingerprint.

A stage directory holds its outputs and a ``stage.json`` written by :func:`run_stage` with a
fingerprint of what decides those outputs. Two policies, because two kinds of output exist:

- ``on_change="rerun"`` (evaluations, students, the report — cheap to redo, must never be stale):
  same fingerprint and complete: skipped, the recorded result reused; same fingerprint but
  incomplete (a crash): run again over what was left, so resumable work resumes; other fingerprint:
  the directory is cleared first, so outputs of different inputs are never mixed.
- ``on_change="refuse"`` (``agentark generate``'s traces — hours of CPU): a different fingerprint
  is an error that names both; the same one always runs the stage, which skips finished questions,
  so a run can also be extended to more questions.

A non-empty directory without a record was not made by a stage and is left alone (error), never
deleted. Directories made by ``agentark generate`` before stage.json existed have a ``config.json``
with a ``config_hash``: that hash is read as their fingerprint, so they resume unchanged.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from agentark.config import stable_hash, world_size
from agentark.engines import Engine, close_engine, get_engine
from agentark.models.loading import pick_device
from agentark.traces.store import STAGE_FILE, stage_record, write_json_atomic

logger = logging.getLogger(__name__)

class StageError(RuntimeError):
    """A stage cannot run in its directory (foreign files there); the message says why."""


class RunConfigMismatch(ValueError):
    """The output dir holds traces made with different settings; mixing them would be silent corruption."""


@dataclass(frozen=True)
class StageRecord:
    """A finished stage: its fingerprint, its JSON result, and whether this run skipped it."""

    name: str
    fingerprint: str
    result: dict[str, Any]
    cached: bool


def check_stage(
    out_dir: str | Path, fingerprint: str, on_change: Literal["rerun", "refuse"] = "rerun"
) -> dict[str, Any] | None:
    """The directory's record if it was made with ``fingerprint`` (to resume or reuse), else ``None``
    (a fresh start). Raises when the directory may not be used: foreign files in it, or (``refuse``)
    outputs of other settings. Cheap, so callers check before loading a model."""
    out = Path(out_dir)
    record = stage_record(out)
    if record is None and out.exists() and any(out.iterdir()):
        raise StageError(f"{out} holds files no stage recorded; move them away or use another out")
    if record is None or record.get("fingerprint") == fingerprint:
        return record
    if on_change == "refuse":
        raise RunConfigMismatch(
            f"{out} holds traces made with different settings (config hash {record.get('fingerprint')} != "
            f"{fingerprint}); use another --out, or the same settings to resume")
    return None


def run_stage(name: str, fingerprint: str, out_dir: str | Path, fn: Callable[[], dict[str, Any]],
              on_change: Literal["rerun", "refuse"] = "rerun", config: dict[str, Any] | None = None,
              force: bool = False) -> StageRecord:
    """Run ``fn`` (which writes into ``out_dir`` and returns a JSON-able result) unless already done.

    ``config`` (the stage's settings, for people and for :func:`agentark.traces.task_of_run`) is
    stored in the record. See the module docstring for the two ``on_change`` policies. ``force``
    runs a finished stage again in place (what it left, e.g. a trainer's checkpoints, stays).
    """
    out = Path(out_dir)
    main = int(os.environ.get("RANK", "0")) == 0
    base = {"stage": name, "fingerprint": fingerprint, **({"config": config} if config is not None else {})}
    with _main_process_first():  # under accelerate launch, the others see the record the main one left
        record = check_stage(out, fingerprint, on_change)
        if record is not None and record.get("complete") and on_change == "rerun" and not force:
            logger.info("%s: unchanged (fingerprint %s), skipped", name, fingerprint)
            return StageRecord(name, fingerprint, record.get("result", {}), cached=True)
        if main:
            if record is None and out.exists():
                logger.info("%s: inputs changed (now fingerprint %s); clearing %s", name, fingerprint, out)
                shutil.rmtree(out)
            out.mkdir(parents=True, exist_ok=True)
            write_json_atomic(out / STAGE_FILE, {**base, "complete": False})
    start = time.perf_counter()
    result = fn()
    if main:
        write_json_atomic(out / STAGE_FILE, {**base, "complete": True, "result": result,
                                             "duration_s": time.perf_counter() - start})
    return StageRecord(name, fingerprint, result, cached=False)


def _main_process_first() -> contextlib.AbstractContextManager:
    """One process (``RANK`` 0) checks, clears and records a stage dir before the others read it:
    without this, a second process of ``accelerate launch`` sees the first one's half-written
    directory as foreign files. A single process needs no process group and gets none. Without a GPU,
    accelerate builds a process group only when told ``cpu=True`` (as the trainers are, ``use_cpu``);
    otherwise its state is "not distributed" and the barrier does nothing."""
    if world_size() <= 1:
        return contextlib.nullcontext()
    from accelerate import PartialState  # the process group the trainer joins anyway

    return PartialState(cpu=pick_device() == "cpu").main_process_first()


def free_memory() -> None:
    """Hand a dropped model's memory back now, not at some later collection (24 GiB machines)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


class EngineSlot:
    """At most one model in memory: asking for another model (or engine) frees the current one first.

    The pilot runs all jobs of one model back to back, so each model loads once (the gate's student
    may load a second time for its confidence samples, chosen only after all students ran).
    """

    def __init__(self) -> None:
        self._key: str | None = None
        self._engine: Engine | None = None

    def get(self, model: str, kind: str, options: dict[str, Any]) -> Engine:
        key = stable_hash([model, kind, options])
        if self._engine is None or self._key != key:
            self.release()
            logger.info("loading %s (%s engine)", model, kind)
            self._engine = get_engine(kind, model, **options)
            self._key = key
        return self._engine

    def release(self) -> None:
        if self._engine is not None:
            close_engine(self._engine)
            self._engine, self._key = None, None
            free_memory()
