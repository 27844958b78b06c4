"""Run an experiment so that an interruption at any moment loses at most the work since the last keep.

Stages run in the spec's order (train -> evaluate per student, before the next student). Each one
is restored from the kept folder first, skipped when done, and kept again the moment it makes
progress: a generate/evaluate stage after every chunk, a training at every checkpoint (packed
small, :mod:`agentark.distill.checkpoints`), a trained student as its bf16 adapter. With ``commit``
every finished stage is also committed to git at once (checkpoints at most every
``checkpoint_commit_interval_s``), so a session that is stopped has already landed what it finished.

A kept stage is never silently redone differently: a generate or evaluate stage resumes on the engine
its record names, a training in the precision its checkpoint was made in, and a stage whose settings
no longer match its kept record stops the run with one line (``redo`` clears it on purpose).
"""

from __future__ import annotations

import logging
import math
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from agentark.distill.checkpoints import (
    CHECKPOINT_DIR,
    FINGERPRINT_FILE,
    checkpoint_step,
    kept_meta,
    pack_checkpoint,
    unpack_checkpoint,
)
from agentark.distill.training import TrainHooks, peak_rss_gib, read_manifest, resolve_precision, training_dtype_device
from agentark.evaluate.table import comparison_table, to_markdown
from agentark.experiments import kept as keep
from agentark.experiments.card import model_card
from agentark.experiments.spec import CompareStage, DistillStage, EvaluateStage, ExperimentConfig, GenerateStage, Stage
from agentark.models.adapters import export_adapter
from agentark.models.hardware import cpu_info
from agentark.pipeline.distillation import distill, stage_fingerprint
from agentark.pipeline.evaluation import evaluate_job
from agentark.pipeline.generation import generate
from agentark.traces.store import TRACES_FILE, read_json, read_traces, stage_record

logger = logging.getLogger(__name__)

Event = Callable[[str, str, int, "int | None"], None]
"""``on_event(stage, message, done, total)``: what the CLI draws as a progress bar per stage."""


class StageRefused(RuntimeError):
    """A kept stage would be redone on other settings (engine, precision, inputs); the message says which."""


@dataclass(frozen=True)
class StageStatus:
    """Where one stage stands: done / partial / pending / blocked, how far, and what is left in CPU time."""

    name: str
    kind: str
    state: Literal["done", "partial", "pending", "blocked"]
    done: int
    total: int | None
    unit: str
    estimate_s: float | None
    note: str = ""


class ExperimentRunner:
    """Runs, keeps, restores and reports one :class:`ExperimentConfig`."""

    def __init__(self, config: ExperimentConfig, commit: bool = False, on_event: Event | None = None,
                 cwd: str | Path = ".") -> None:
        self.config, self.commit, self.on_event = config, commit, on_event
        self.cwd = Path(cwd)
        self.root, self.kept = self.cwd / config.root, self.cwd / config.kept
        self.cpu = cpu_info().describe()
        self._last_checkpoint_commit = 0.0

    # --- where things are ---------------------------------------------------------------------------

    def stage_dir(self, name: str) -> Path:
        return self.root / name

    def kept_dir(self, name: str) -> Path:
        return self.kept / name

    def model_of(self, stage: EvaluateStage) -> str:
        """An evaluation's model: a distill stage's kept adapter (the artefact that is published and
        re-checked), or the model name as given."""
        if stage.model in self.config.stage_names:
            return str(self.kept_dir(stage.model) / keep.ADAPTER)
        return stage.model

    # --- running ------------------------------------------------------------------------------------

    def run(self, only: Sequence[str] | None = None, redo: Sequence[str] = ()) -> list[StageStatus]:
        """Run every stage (or ``only`` these) in order; returns the status afterwards. A stage whose
        inputs are not finished is passed over (blocked), the others go on."""
        for name in [*(only or ()), *redo]:
            self.config.stage(name)  # unknown names fail before anything runs
        for name in redo:
            self._clear(name)
        self.restore()
        for stage in self.config.stages:
            if only and stage.name not in only:
                continue
            if blocker := self._blocker(stage):
                logger.info("%s: waits for %s", stage.name, blocker)
                continue
            {"generate": self._generate, "distill": self._distill, "evaluate": self._evaluate,
             "compare": self._compare}[stage.kind](stage)
        return self.status()

    def restore(self) -> None:
        """Put every kept run (traces and records) where the stages read it, before any stage runs: a
        fresh clone then resumes a later stage alone (``--only``) on the inputs its earlier stages kept."""
        for stage in self.config.stages:
            if isinstance(stage, (GenerateStage, EvaluateStage)):
                keep.restore_traces(self.kept_dir(stage.name), self.stage_dir(stage.name))

    def _emit(self, stage: str, message: str, done: int, total: int | None) -> None:
        if self.on_event:
            self.on_event(stage, message, done, total)

    def _blocker(self, stage: Stage) -> str | None:
        for ref in stage.refs:
            if ref in self.config.stage_names and not self.is_done(self.config.stage(ref)):
                return ref
        return None

    def _clear(self, name: str) -> None:
        was_kept = self.kept_dir(name).exists()
        for path in (self.stage_dir(name), self.kept_dir(name)):
            shutil.rmtree(path, ignore_errors=True)
        if was_kept:
            self._commit([self.kept_dir(name)], f"{self.config.name}: {name} cleared to redo")

    def _adopted_engine(self, stage: GenerateStage | EvaluateStage) -> dict[str, Any]:
        """Settings that make a kept run resume on the engine it was made with. ``auto`` (or no engine)
        adopts the recorded one on any machine; an explicit, different engine is refused."""
        record = stage_record(self.stage_dir(stage.name)) or stage_record(self.kept_dir(stage.name))
        if not record or "engine" not in record.get("config", {}):
            return {}
        made = record["config"]
        asked = stage.settings.get("engine", "auto")
        if asked not in ("auto", made["engine"]):
            raise StageRefused(f"stage {stage.name} was made on engine {made['engine']} (its kept record); the spec "
                               f"asks for {asked}: keep {made['engine']}, or redo the stage on purpose (--redo)")
        return {"engine": made["engine"], "engine_options": made.get("engine_options", {}),
                "batch_size": made.get("batch_size", stage.settings.get("batch_size", 32))}

    def _refuse_changed(self, name: str, fingerprint: str) -> None:
        record = stage_record(self.stage_dir(name)) or stage_record(self.kept_dir(name))
        if record and record.get("fingerprint") not in (None, fingerprint):
            raise StageRefused(f"stage {name} is kept with other settings (fingerprint {record['fingerprint']}, now "
                               f"{fingerprint}); it is not redone silently: restore its settings, or --redo {name}")

    def _generate(self, stage: GenerateStage) -> None:
        out, kept_dir = self.stage_dir(stage.name), self.kept_dir(stage.name)
        keep.restore_traces(kept_dir, out)
        if self.is_done(stage):
            return  # every question kept: nothing to load, nothing to rewrite
        config = stage.config(out, **self._adopted_engine(stage))
        start, first_done = time.perf_counter(), []  # the questions done when this session began

        def progress(done: int, total: int) -> None:
            self._emit(stage.name, "generating", done, total)
            first_done[:] = first_done or [done]
            if keep.save_traces(out, kept_dir):
                self._measure(stage.name, done, start, first_done[0])
                self._commit([kept_dir], f"{self.config.name}: {stage.name} {done} of {total} kept")

        generate(config, on_progress=progress)
        self._finish_traces(stage.name, config.n)

    def _evaluate(self, stage: EvaluateStage) -> None:
        out, kept_dir = self.stage_dir(stage.name), self.kept_dir(stage.name)
        keep.restore_traces(kept_dir, out)
        if self.is_done(stage):
            return  # kept whole: its model need not exist here
        model = self.model_of(stage)
        config = stage.config(model, **self._adopted_engine(stage))
        job = config.job(model)
        job.run = job.run.model_copy(update={"out": str(out)})
        self._refuse_changed(stage.name, job.fingerprint())

        def progress(done: int, total: int) -> None:
            self._emit(stage.name, "evaluating", done, total)
            if keep.save_traces(out, kept_dir):
                self._commit([kept_dir], f"{self.config.name}: {stage.name} {done} of {total} kept")

        evaluate_job(job, on_progress=progress)
        wall = (read_json(out / "wall.json") or {}).get("wall_time_s")
        keep.write_meta(kept_dir, cpu=self.cpu, s_per_question=wall / config.n if wall else None)
        self._finish_traces(stage.name, config.n)

    def _measure(self, name: str, done: int, start: float, first_done: int) -> None:
        """s/question of this session's chunks on this CPU (an estimate for ``status``)."""
        if done > first_done:
            keep.write_meta(self.kept_dir(name), cpu=self.cpu,
                            s_per_question=(time.perf_counter() - start) / (done - first_done))

    def _finish_traces(self, name: str, n: int) -> None:
        kept_dir = self.kept_dir(name)
        keep.save_traces(self.stage_dir(name), kept_dir)
        traces = list(read_traces(self.stage_dir(name)))
        right = sum(t.final_correct for t in traces)
        self._commit([kept_dir], f"{self.config.name}: {name} done, {len(traces)} of {n} ({right} right, "
                                 f"accuracy {right / max(len(traces), 1):.3f}; {self.cpu})")

    def _distill_config(self, stage: DistillStage) -> Any:
        """The strategy's config; a training with a kept checkpoint continues in the precision it began in."""
        out, traces = self.stage_dir(stage.name), self.stage_dir(stage.traces)
        meta = kept_meta(self.kept_dir(stage.name) / keep.CHECKPOINT)
        config = stage.config(out, traces)
        if meta and "precision" in meta and hasattr(config, "precision"):
            if config.precision not in ("auto", meta["precision"]):
                raise StageRefused(f"stage {stage.name} has a kept checkpoint trained in {meta['precision']}; the spec "
                                   f"asks for {config.precision}: keep it, or --redo {stage.name}")
            if config.precision == "auto" and resolve_precision("auto", training_dtype_device()[1]) != meta["precision"]:
                logger.info("%s: continuing in %s, the precision its checkpoint was made in", stage.name,
                            meta["precision"])
            config = stage.config(out, traces, precision=meta["precision"])
        return config

    def _distill(self, stage: DistillStage) -> None:
        out, kept_dir = self.stage_dir(stage.name), self.kept_dir(stage.name)
        config = self._distill_config(stage)
        fingerprint = stage_fingerprint(stage.strategy, config, self.stage_dir(stage.traces))
        self._refuse_changed(stage.name, fingerprint)
        record = stage_record(kept_dir)
        if record and record.get("complete") and (kept_dir / keep.ADAPTER / "manifest.json").is_file():
            return  # trained, exported and kept: what evaluations load needs no local weights
        if self._restore_checkpoint(stage.name):
            logger.info("%s: resuming from the kept checkpoint", stage.name)
        precision = resolve_precision(getattr(config, "precision", "auto"), training_dtype_device()[1])
        times: list[float] = []

        def progress(step: int, total: int) -> None:
            times.append(time.perf_counter())
            self._emit(stage.name, "training", step, total)

        def on_checkpoint(checkpoint: Path) -> None:
            s_per_step = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else None
            stamp = (checkpoint.parent / FINGERPRINT_FILE).read_text()
            pack_checkpoint(checkpoint, kept_dir / keep.CHECKPOINT,
                            {"precision": precision, "cpu": self.cpu, "s_per_step": s_per_step,
                             "peak_rss_gib": round(peak_rss_gib(), 2), "training_fingerprint": stamp})
            keep.save_records(out, kept_dir, ("stage.json",))
            if s_per_step:
                keep.write_meta(kept_dir, cpu=self.cpu, s_per_step=s_per_step, precision=precision)
            if time.monotonic() - self._last_checkpoint_commit >= self.config.checkpoint_commit_interval_s:
                self._last_checkpoint_commit = time.monotonic()
                self._commit([kept_dir], f"{self.config.name}: {stage.name} checkpoint at step "
                                         f"{checkpoint_step(checkpoint)} kept ({self.cpu})")

        result = distill(stage.strategy, config, self.stage_dir(stage.traces), TrainHooks(progress, on_checkpoint))
        if result.skipped:
            raise StageRefused(f"stage {stage.name}: {result.skipped}")
        if result.cached and (kept_dir / keep.ADAPTER).is_dir():
            return
        self._finish_student(stage, result.path)

    def _finish_student(self, stage: DistillStage, student: Path) -> None:
        kept_dir = self.kept_dir(stage.name)
        export_adapter(student, kept_dir / keep.ADAPTER)
        keep.save_records(student, kept_dir, ("stage.json",))
        shutil.rmtree(kept_dir / keep.CHECKPOINT, ignore_errors=True)
        manifest = read_manifest(student) or {}
        train = manifest.get("train", {})
        keep.write_meta(kept_dir, cpu=self.cpu, **{k: v for k, v in manifest.get("resources", {}).items() if k != "cpu"})
        paths = [kept_dir]
        if stage.publish:
            published = self.cwd / self.config.publish_dir / stage.publish
            keep.replace_dir(kept_dir / keep.ADAPTER, published)
            tables = sorted(p.name for p in (self.cwd / self.config.results).glob("*.md"))
            (published / "README.md").write_text(model_card(stage.publish, published, self.config, stage, tables))
            paths.append(published)
        self._commit(paths, f"{self.config.name}: {stage.name} trained ({train.get('global_step')} steps, "
                            f"{manifest.get('dataset', {}).get('samples')} samples; {self.cpu}), bf16 adapter kept")

    def _restore_checkpoint(self, name: str) -> bool:
        """Put the kept checkpoint back when the local run is behind it (a fresh checkout)."""
        kept_dir, out = self.kept_dir(name), self.stage_dir(name)
        meta = kept_meta(kept_dir / keep.CHECKPOINT)
        if meta is None:
            return False
        local = [checkpoint_step(p) for p in (out / CHECKPOINT_DIR).glob("checkpoint-*") if p.is_dir()]
        if local and max(local) >= meta["step"]:
            return False
        if stage_record(out) is None and not (out.exists() and any(out.iterdir())):
            keep.save_records(kept_dir, out, ("stage.json",))
        unpack_checkpoint(kept_dir / keep.CHECKPOINT, out / CHECKPOINT_DIR, meta["training_fingerprint"])
        return True

    def _compare(self, stage: CompareStage) -> None:
        runs = {label: list(read_traces(self.stage_dir(ref))) for label, ref in stage.rows.items()}
        baseline = stage.baseline or next(iter(stage.rows))
        rows = comparison_table(runs, baseline)
        path = self.cwd / self.config.results / f"{stage.name}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"<!-- agentark experiment {self.config.name}, stage {stage.name}; {self.cpu} -->\n"
                        + to_markdown(rows, baseline))
        self._commit([path], f"{self.config.name}: table {stage.name} ({len(rows)} rows, n={rows[0].n})")

    # --- keeping ------------------------------------------------------------------------------------

    def keep_now(self) -> list[Path]:
        """Keep what is partial now (traces of unfinished stages, the newest local checkpoint of each
        training), e.g. before a session stops; with ``commit``, commit it."""
        kept: list[Path] = []
        for stage in self.config.stages:
            out, kept_dir = self.stage_dir(stage.name), self.kept_dir(stage.name)
            if isinstance(stage, (GenerateStage, EvaluateStage)) and keep.save_traces(out, kept_dir):
                kept.append(kept_dir)
            elif isinstance(stage, DistillStage):
                local = sorted((out / CHECKPOINT_DIR).glob("checkpoint-*"), key=checkpoint_step)
                meta = kept_meta(kept_dir / keep.CHECKPOINT) or {}
                if local and checkpoint_step(local[-1]) > meta.get("step", -1):
                    made = (stage_record(out) or {}).get("config", {}).get("precision", "auto")  # this machine's run
                    pack_checkpoint(local[-1], kept_dir / keep.CHECKPOINT, {
                        "precision": meta.get("precision") or resolve_precision(made, training_dtype_device()[1]),
                        **{k: v for k, v in meta.items() if k not in ("step", "precision")},
                        "cpu": meta.get("cpu", self.cpu),
                        "training_fingerprint": (out / CHECKPOINT_DIR / FINGERPRINT_FILE).read_text()})
                    keep.save_records(out, kept_dir, ("stage.json",))
                    kept.append(kept_dir)
        self._commit(kept, f"{self.config.name}: partial stages kept ({', '.join(p.name for p in kept)})")
        return kept

    def _commit(self, paths: Sequence[Path], message: str) -> None:
        """Commit exactly ``paths`` (other staged or unstaged work is left alone). A failure is logged and
        never stops a training: the kept files are on disk for the next commit."""
        if not self.commit or not paths:
            return
        names = [str(p) for p in paths]
        for attempt in range(5):
            add = subprocess.run(["git", "add", "-A", "--", *names], cwd=self.cwd, capture_output=True, text=True)
            done = add.returncode == 0 and subprocess.run(
                ["git", "diff", "--cached", "--quiet", "--", *names], cwd=self.cwd).returncode == 0
            if done:
                return  # nothing changed
            if add.returncode == 0:
                commit = subprocess.run(["git", "commit", "-q", "-m", message, "--", *names], cwd=self.cwd,
                                        capture_output=True, text=True)
                if commit.returncode == 0:
                    logger.info("committed: %s", message)
                    return
                add = commit
            if "index.lock" not in add.stderr:
                break
            time.sleep(2 * (attempt + 1))  # another git command holds the index
        logger.warning("could not commit %s: %s", ", ".join(names), add.stderr.strip())

    # --- status -------------------------------------------------------------------------------------

    def is_done(self, stage: Stage) -> bool:
        return self._state(stage)[0] == "done"

    def _state(self, stage: Stage) -> tuple[str, int, int | None, str]:
        """(state, done, total, unit) from the local and kept folders."""
        out, kept_dir = self.stage_dir(stage.name), self.kept_dir(stage.name)
        if isinstance(stage, CompareStage):  # a table is done once written from finished rows
            done = (self.cwd / self.config.results / f"{stage.name}.md").is_file() and self._blocker(stage) is None
            return ("done" if done else "pending"), int(done), 1, "table"
        if isinstance(stage, DistillStage):
            if (kept_dir / keep.ADAPTER / "manifest.json").is_file():
                return "done", 1, 1, "student"
            meta = kept_meta(kept_dir / keep.CHECKPOINT) or {}
            local = [checkpoint_step(p) for p in (out / CHECKPOINT_DIR).glob("checkpoint-*") if p.is_dir()]
            step = max([meta.get("step", 0), *local])
            return ("partial" if step else "pending"), step, self._total_steps(stage), "steps"
        n = int(stage.settings.get("n", 50))
        have = max(keep.count_lines(kept_dir / keep.KEPT_TRACES), keep.count_lines(out / TRACES_FILE))
        return ("done" if have >= n else "partial" if have else "pending"), have, n, "questions"

    def _total_steps(self, stage: DistillStage) -> int | None:
        """Optimiser steps of a training: from its settings and its training set (built, not trained)."""
        traces = self.stage_dir(stage.traces)
        if not (traces / TRACES_FILE).is_file():
            keep.restore_traces(self.kept_dir(stage.traces), traces)
        if not (traces / TRACES_FILE).is_file():
            return None
        config = stage.config(self.stage_dir(stage.name), traces)
        if getattr(config, "max_steps", -1) > 0:
            return config.max_steps
        if not hasattr(config, "samples"):
            return None
        batches = math.ceil(len(config.samples(list(read_traces(traces)))) / config.per_device_train_batch_size)
        per_epoch = math.ceil(batches / config.gradient_accumulation_steps)
        return math.ceil(per_epoch * config.num_train_epochs)

    def _speed(self, stage: Stage, key: str) -> tuple[float | None, str]:
        """A measured speed for ``stage`` (``s_per_step`` or ``s_per_question``): its own on this CPU, else
        a like stage's (same model) on this CPU, else any measurement, named as made elsewhere."""
        def model(s: Stage) -> str | None:
            """The weights that set a stage's speed: a student's evaluation runs at its base model's."""
            if isinstance(s, EvaluateStage):
                ref = s.model
                return self.config.stage(ref).settings.get("model") if ref in self.config.stage_names else ref
            return s.settings.get("model") if hasattr(s, "settings") else None

        def strategy(s: Stage) -> str | None:
            return s.strategy if isinstance(s, DistillStage) else None

        candidates = [stage] + [s for s in self.config.stages if s is not stage and s.kind == stage.kind
                                and model(s) == model(stage) and strategy(s) == strategy(stage)]
        metas = [(s.name, keep.read_meta(self.kept_dir(s.name))) for s in candidates]
        for name, meta in metas:
            if meta.get(key) and meta.get("cpu") == self.cpu:
                return meta[key], "" if name == stage.name else f"speed of {name}"
        for name, meta in metas:
            if meta.get(key):
                return meta[key], f"measured on {meta.get('cpu')} ({name}), not this CPU"
        return None, "no measurement yet"

    def status(self) -> list[StageStatus]:
        rows = []
        for stage in self.config.stages:
            state, done, total, unit = self._state(stage)
            if state != "done" and (blocker := self._blocker(stage)):
                state = "blocked" if state == "pending" else state
                note = f"waits for {blocker}"
            else:
                note = ""
            estimate = None
            if state != "done" and isinstance(stage, (GenerateStage, EvaluateStage, DistillStage)) and total:
                key = "s_per_step" if isinstance(stage, DistillStage) else "s_per_question"
                speed, how = self._speed(stage, key)
                estimate = speed * (total - done) if speed else None
                note = "; ".join(x for x in (note, how) if x)
            rows.append(StageStatus(stage.name, stage.kind, state, done, total, unit, estimate, note))
        return rows
