"""An experiment as data: an ordered list of stages, each the settings of one ``agentark`` command.

A stage's ``settings`` are the fields of that command's own config (:class:`GenerateConfig`, a
strategy's config, :class:`EvaluateConfig`), validated by that config class when the spec is loaded,
so the experiment adds no setting of its own to any stage; YAML anchors share settings between
stages. Stages refer to each other by name (a student's ``traces``, an evaluation's ``model``, a
table's ``rows``), and the order is the order of evidence: list each student's evaluation right after
its training, so the first finished student is also the first row of the table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentark.distill.registry import get_strategy
from agentark.errors import one_line_error
from agentark.pipeline.evaluation import EvaluateConfig
from agentark.pipeline.generation import GenerateConfig


class _Stage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The stage's folder under the experiment's root (and in its kept folder).")

    @property
    def refs(self) -> list[str]:
        """The stages this one reads."""
        return []


class GenerateStage(_Stage):
    """A multi-agent (or single) run: ``agentark generate`` with these settings."""

    kind: Literal["generate"] = "generate"
    settings: dict[str, Any] = Field(default_factory=dict, description="GenerateConfig fields (not `out`).")

    def config(self, out: Path, **overrides: Any) -> GenerateConfig:
        return _validate(GenerateConfig, self.name, {**self.settings, **overrides, "out": str(out)})


class DistillStage(_Stage):
    """A student: ``agentark distill --strategy`` on a generate stage's traces."""

    kind: Literal["distill"] = "distill"
    strategy: str
    traces: str = Field(description="Name of the generate stage whose traces are distilled.")
    settings: dict[str, Any] = Field(default_factory=dict, description="The strategy's config fields (not `out`).")
    publish: str | None = Field(None, description="Also publish the adapter as <publish_dir>/<publish> with a model card.")

    @property
    def refs(self) -> list[str]:
        return [self.traces]

    def config(self, out: Path, traces: Path, **overrides: Any) -> Any:
        try:
            return get_strategy(self.strategy).config(traces, **{**self.settings, **overrides, "out": str(out)})
        except ValueError as e:
            raise ValueError(f"stage {self.name}: {e}") from None


class EvaluateStage(_Stage):
    """One model, greedy, on evaluation items: ``agentark evaluate`` for one model, no base."""

    kind: Literal["evaluate"] = "evaluate"
    model: str = Field(description="A distill stage's name (its exported adapter is evaluated), or any model.")
    settings: dict[str, Any] = Field(default_factory=dict, description="EvaluateConfig fields (not models/out/base).")

    @property
    def refs(self) -> list[str]:
        return [self.model]

    def config(self, model: str, **overrides: Any) -> EvaluateConfig:
        return _validate(EvaluateConfig, self.name, {**self.settings, **overrides, "models": [model], "base": False})


class CompareStage(_Stage):
    """A table of finished runs on their common items, each paired with the baseline (``agentark compare``)."""

    kind: Literal["compare"] = "compare"
    rows: dict[str, str] = Field(min_length=1, description="Row label -> name of a generate or evaluate stage.")
    baseline: str | None = Field(None, description="Label paired with every row (default: the first).")

    @property
    def refs(self) -> list[str]:
        return list(self.rows.values())


Stage = Annotated[GenerateStage | DistillStage | EvaluateStage | CompareStage, Field(discriminator="kind")]


class ExperimentConfig(BaseModel):
    """``agentark experiment run|status|keep SPEC``: where an experiment lives and what it runs."""

    model_config = ConfigDict(extra="forbid")

    name: str
    root: str = Field(description="Working folder of the stages (ignored by git), e.g. runs/e1.")
    kept: str = Field(description="Folder in git that keeps every finished stage and the latest checkpoint.")
    results: str = Field(description="Folder in git for the tables (compare stages), e.g. results/e1.")
    publish_dir: str = Field("results/students", description="Where `publish` adapters go, with model cards.")
    checkpoint_commit_interval_s: float = Field(
        3600.0, ge=0, description="With --commit, a new kept checkpoint is committed at most this often (each "
        "commit of one adds tens of MiB to the repository); finished stages are committed at once.")
    stages: list[Stage] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self) -> ExperimentConfig:
        kinds: dict[str, str] = {}
        for stage in self.stages:
            if stage.name in kinds:
                raise ValueError(f"two stages are named {stage.name!r}")
            for ref in stage.refs:
                if isinstance(stage, EvaluateStage) and ref not in kinds:
                    continue  # a model name, not a stage
                if ref not in kinds:
                    raise ValueError(f"stage {stage.name!r} reads {ref!r}, which is not an earlier stage")
            if isinstance(stage, DistillStage) and kinds[stage.traces] != "generate":
                raise ValueError(f"stage {stage.name!r}: traces {stage.traces!r} is a {kinds[stage.traces]} stage, "
                                 "not a generate stage")
            kinds[stage.name] = stage.kind
        return self

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise ValueError(f"no stage {name!r} in experiment {self.name!r}; stages: {', '.join(self.stage_names)}")

    @property
    def stage_names(self) -> list[str]:
        return [s.name for s in self.stages]

    @classmethod
    def from_yaml(cls, path: str | Path) -> ExperimentConfig:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"experiment file {path} not found") from None
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping with name, root, kept, results and stages")
        data = {k: v for k, v in data.items() if not k.startswith("x-")}  # x-*: YAML anchors only
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise ValueError(one_line_error(f"{path}: ", e, cls)) from None


def _validate(cls: type, stage: str, data: dict[str, Any]) -> Any:
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise ValueError(one_line_error(f"stage {stage}: ", e, cls)) from None
