"""The kept folder: every finished stage of an experiment, in git, the moment it finishes.

Layout under ``<kept>/<stage name>/``:

- a generate or evaluate stage: ``traces.jsonl.gz`` (whole records only) and its small JSON records
  (``stage.json`` or the older ``config.json``, ``wall.json``), saved after every chunk;
- a distill stage: ``stage.json`` and, while it trains, ``checkpoint/`` (the latest training
  checkpoint, :mod:`agentark.distill.checkpoints`); once trained, ``adapter/`` (the bf16 LoRA adapter
  with its manifest: what evaluations load, and what is re-checked elsewhere) and no checkpoint;
- ``meta.json``: the CPU that made the stage and its measured speed (what ``status`` estimates from).

Restoring never overwrites local work that is further along than the kept copy.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import Any

from agentark.traces.store import TRACES_FILE, read_json, write_json_atomic

KEPT_TRACES = TRACES_FILE + ".gz"
RECORD_FILES = ("stage.json", "config.json", "wall.json")
META_FILE = "meta.json"
CHECKPOINT = "checkpoint"
ADAPTER = "adapter"


def count_lines(path: Path) -> int:
    if not path.is_file():
        return 0
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        return sum(1 for _ in f)


def save_traces(stage_dir: Path, kept_dir: Path) -> int:
    """Keep a generate/evaluate stage's traces and records; returns the number of records kept."""
    traces = stage_dir / TRACES_FILE
    if not traces.is_file():
        return 0
    data = traces.read_bytes()
    data = data[: data.rfind(b"\n") + 1]  # whole lines only: a writer may be half-way through its last record
    kept_dir.mkdir(parents=True, exist_ok=True)
    if (kept_dir / KEPT_TRACES).is_file() and gzip.decompress((kept_dir / KEPT_TRACES).read_bytes()) == data:
        save_records(stage_dir, kept_dir)
        return data.count(b"\n")  # same records: the kept bytes (maybe gzipped elsewhere) stay as they are
    tmp = kept_dir / (KEPT_TRACES + ".tmp")
    with gzip.GzipFile(tmp, "wb", mtime=0) as f:  # mtime 0: equal traces give equal bytes, no empty commits
        f.write(data)
    tmp.replace(kept_dir / KEPT_TRACES)
    save_records(stage_dir, kept_dir)
    return data.count(b"\n")


def save_records(stage_dir: Path, kept_dir: Path, names: tuple[str, ...] = RECORD_FILES) -> None:
    kept_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (stage_dir / name).is_file():
            shutil.copy2(stage_dir / name, kept_dir / name)


def restore_traces(kept_dir: Path, stage_dir: Path) -> int:
    """Put a kept generate/evaluate stage back unless the local one holds as many records; returns how
    many records were restored (0: nothing to do)."""
    kept = kept_dir / KEPT_TRACES
    want = count_lines(kept)
    if want == 0 or count_lines(stage_dir / TRACES_FILE) >= want:
        return 0
    stage_dir.mkdir(parents=True, exist_ok=True)
    tmp = stage_dir / (TRACES_FILE + ".tmp")
    with gzip.open(kept, "rb") as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst)
    tmp.replace(stage_dir / TRACES_FILE)
    for name in RECORD_FILES:
        if (kept_dir / name).is_file():
            shutil.copy2(kept_dir / name, stage_dir / name)
    return want


def read_meta(kept_dir: Path) -> dict[str, Any]:
    return read_json(kept_dir / META_FILE) or {}


def write_meta(kept_dir: Path, **fields: Any) -> None:
    kept_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(kept_dir / META_FILE, {**read_meta(kept_dir), **fields})


def replace_dir(src: Path, dest: Path) -> None:
    """Copy the folder ``src`` over ``dest`` through a temporary sibling, so ``dest`` is never half-written."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
