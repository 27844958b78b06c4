"""One lifecycle for every trainer (SFT for rsft / da / sft, PAD's PRM and GRPO, OPD).

    fingerprint -> up to date? -> clear the manifest -> claim / resume checkpoints -> train
    -> save the student -> manifest (the strategy's fields, the run's resources, library versions)

A strategy supplies only what is its own, as a :class:`TrainJob`: the fingerprint of its rows and
settings (:func:`training_fingerprint`), its trainer (built only when there is something to train,
with the callbacks of the caller's :class:`~agentark.distill.training.TrainHooks`) and the fields it
adds to the manifest. The manifest is written last, so its presence means the directory is complete.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentark.config import StageConfig, stable_hash, world_size
from agentark.distill.checkpoints import CHECKPOINT_DIR, checkpoint_step, claim_checkpoints, last_checkpoint
from agentark.distill.training import (
    NO_HOOKS,
    Precision,
    TrainHooks,
    clear_manifest,
    data_hash,
    is_up_to_date,
    resolve_precision,
    save_student,
    training_dtype_device,
    training_resources,
    write_manifest,
)

logger = logging.getLogger(__name__)


def training_fingerprint(config: StageConfig, rows: Sequence[Mapping[str, Any]], **identity: Any) -> str:
    """What decides a trained model's weights: the config's hash, the training rows, and whatever else
    the trainer names in ``identity`` (its kind, the PRM it is rewarded by, the base model).

    The keys are hashed as canonical JSON (sorted), so every fingerprint made before this function
    existed is unchanged, and with it every kept checkpoint that depends on one."""
    return stable_hash({**identity, "config": config.config_hash(), "data": data_hash(rows)})


Manifest = Callable[[Any, Any, "str | None"], Mapping[str, Any]]
"""``manifest(trainer, train_output, resumed_from)``: the strategy's own manifest fields, called once the
student is saved (the PRM reloads itself from there to measure what PAD will score with)."""


@dataclass(frozen=True)
class TrainJob:
    """One strategy's part of the lifecycle."""

    out: Path
    fingerprint: str
    build: Callable[[list[Any]], Any]
    """``build(callbacks)``: the trainer (``train(resume_from_checkpoint=)``, ``model``,
    ``processing_class``, ``state``), with ``callbacks`` passed to it."""
    manifest: Manifest
    force: bool = False
    precision: Precision = "auto"
    before_train: Callable[[Any], None] | None = None
    """A check of the built trainer on every process before training (SFT: samples cut by max_length)."""


def _processes() -> tuple[bool, Callable[[], None]]:
    """(is this the main process, wait for every process): under ``accelerate launch`` one process writes."""
    if world_size() == 1:
        return True, lambda: None
    from accelerate import PartialState  # the state the trainer's arguments already set up

    state = PartialState()
    return state.is_main_process, state.wait_for_everyone


def library_versions() -> dict[str, str]:
    import peft
    import torch
    import transformers
    import trl

    return {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
            "peft": peft.__version__}


def train_job(job: TrainJob, hooks: TrainHooks = NO_HOOKS) -> Path:
    """Train ``job`` unless ``job.out`` already holds its student (``job.force`` retrains); returns ``job.out``.

    The old manifest is removed before training, so an interrupted run never looks done; checkpoints
    under ``<out>/checkpoints`` are resumed only when the same fingerprint wrote them, and removed once
    the student is saved.
    """
    out = Path(job.out)
    if not job.force and is_up_to_date(out, job.fingerprint):
        logger.info("%s is up to date (fingerprint %s); nothing to train (force retrains)", out, job.fingerprint[:12])
        return out
    trainer = job.build(hooks.callbacks())
    main, wait_for_everyone = _processes()
    if main:
        clear_manifest(out)
        claim_checkpoints(out, job.fingerprint)
    wait_for_everyone()
    if job.before_train is not None:
        job.before_train(trainer)
    resumed_from = last_checkpoint(out)
    result = trainer.train(resume_from_checkpoint=resumed_from)
    wait_for_everyone()
    if not main:
        return out
    save_student(trainer.model, trainer.processing_class, out, merge=True)
    shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)  # the student is complete: checkpoints are spent
    steps_run = trainer.state.global_step - (checkpoint_step(resumed_from) if resumed_from else 0)
    precision = resolve_precision(job.precision, training_dtype_device()[1])
    write_manifest(out, {
        "fingerprint": job.fingerprint,
        **job.manifest(trainer, result, resumed_from),
        "resources": training_resources(result.metrics, steps_run, precision),
        "versions": library_versions(),
    })
    logger.info("saved to %s (final train loss %.4f)", out, result.training_loss)
    return out
