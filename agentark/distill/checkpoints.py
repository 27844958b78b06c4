"""Training checkpoints that survive a checkout: packed small and pickle-free for git, unpacked to resume.

A transformers checkpoint of a LoRA run holds the adapter (fp32), the optimizer (``optimizer.pt``, a
pickle twice the adapter's size), the scheduler, the RNG state and the trainer state. Kept in git it
must be small and safe to load, so :func:`pack_checkpoint` writes

- ``adapter_model.safetensors`` + ``adapter_config.json``: the weights exactly (fp32);
- ``optimizer.safetensors`` + ``optimizer.json``: Adam's moments in bf16 (low-precision moments are
  what 8-bit optimizers already rely on; the weights stay exact) and the param groups as JSON;
- ``scheduler.json``, ``trainer_state.json``: small JSON;
- ``meta.json``: the step, the precision it was trained in, the CPU, s/step and peak RSS so far.

The RNG state is left out (it only moves dropout masks); :func:`unpack_checkpoint` rebuilds a
``checkpoint-N`` folder that ``Trainer.train(resume_from_checkpoint=...)`` continues from step N.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from agentark.traces.store import read_json, write_json_atomic

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
FINGERPRINT_FILE = "fingerprint"
META_FILE = "meta.json"
_ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
_STATE_FILES = ("trainer_state.json",)


def checkpoint_step(path: str | Path) -> int:
    """``checkpoint-40`` -> 40."""
    return int(Path(path).name.rsplit("-", 1)[1])


def claim_checkpoints(out: Path, fingerprint: str) -> None:
    """Keep ``<out>/checkpoints`` only if an interrupted run with the same fingerprint wrote them
    (resuming another run's checkpoints would mix two runs), and stamp it with this one's."""
    folder, stamp = out / CHECKPOINT_DIR, out / CHECKPOINT_DIR / FINGERPRINT_FILE
    if folder.is_dir() and (not stamp.exists() or stamp.read_text() != fingerprint):
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint)


def last_checkpoint(out: Path) -> str | None:
    """The newest complete ``checkpoint-N`` under ``<out>/checkpoints``, to resume from."""
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(out / CHECKPOINT_DIR)) if (out / CHECKPOINT_DIR).is_dir() else None
    if last:
        logger.info("resuming from %s", last)
    return last


def pack_checkpoint(checkpoint: str | Path, dest: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``checkpoint`` (a transformers ``checkpoint-N`` folder) to ``dest`` in the kept form.

    Written to a sibling temporary folder and renamed, so ``dest`` always holds one whole checkpoint.
    """
    import torch
    from safetensors.torch import save_file

    checkpoint, dest = Path(checkpoint), Path(dest)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in (*_ADAPTER_FILES, *_STATE_FILES):
        shutil.copy2(checkpoint / name, tmp / name)
    optimizer = torch.load(checkpoint / "optimizer.pt", map_location="cpu", weights_only=True)
    tensors, steps = {}, {}
    for index, state in optimizer["state"].items():
        for key, value in state.items():
            if key == "step":
                steps[str(index)] = float(value)
            else:
                tensors[f"{index}.{key}"] = value.to(torch.bfloat16).contiguous()
    save_file(tensors, tmp / "optimizer.safetensors")
    write_json_atomic(tmp / "optimizer.json", {"param_groups": optimizer["param_groups"], "steps": steps})
    scheduler = torch.load(checkpoint / "scheduler.pt", map_location="cpu", weights_only=True)
    write_json_atomic(tmp / "scheduler.json", scheduler)
    write_json_atomic(tmp / META_FILE, {"step": checkpoint_step(checkpoint), **meta})
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def kept_meta(kept: str | Path) -> dict[str, Any] | None:
    """A kept checkpoint's ``meta.json`` (step, precision, CPU, s/step), or ``None`` if there is none."""
    return read_json(Path(kept) / META_FILE)


def unpack_checkpoint(kept: str | Path, checkpoints: str | Path, fingerprint: str) -> Path:
    """Rebuild ``<checkpoints>/checkpoint-N`` from a kept checkpoint and stamp the folder with the
    training's ``fingerprint`` (so :func:`claim_checkpoints` keeps it); returns the new folder."""
    import torch
    from safetensors.torch import load_file

    kept, checkpoints = Path(kept), Path(checkpoints)
    meta = kept_meta(kept)
    if meta is None:
        raise FileNotFoundError(f"{kept} holds no kept checkpoint ({META_FILE} missing)")
    folder = checkpoints / f"checkpoint-{meta['step']}"
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in (*_ADAPTER_FILES, *_STATE_FILES):
        shutil.copy2(kept / name, tmp / name)
    groups = json.loads((kept / "optimizer.json").read_text())
    state: dict[int, dict[str, Any]] = {}
    for key, value in load_file(kept / "optimizer.safetensors").items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value.float()
    for index, step in groups["steps"].items():
        state.setdefault(int(index), {})["step"] = torch.tensor(step)
    torch.save({"state": state, "param_groups": groups["param_groups"]}, tmp / "optimizer.pt")
    torch.save(json.loads((kept / "scheduler.json").read_text()), tmp / "scheduler.pt")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    (checkpoints / FINGERPRINT_FILE).write_text(fingerprint)
    return folder
