"""The strategy registry: name -> config class, data check, fingerprint and trainer, in one place.

``agentark distill --strategy X`` and the pilot's distill stage both look a strategy up here, so a
new strategy is one entry, not a branch in every caller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agentark.config import StageConfig, load_config
from agentark.distill import grpo, opd, sft
from agentark.distill.steps import build_step_dataset
from agentark.distill.training import TrainHooks
from agentark.errors import one_line_error
from agentark.traces.schema import QuestionTrace
from agentark.traces.store import task_of_run


@dataclass(frozen=True)
class Strategy:
    """How one distillation strategy is configured, checked, fingerprinted and trained."""

    name: str
    config_class: type[StageConfig]
    takes_traces: bool  # does the config carry the traces path itself (SFT, OPD) or get traces passed (PAD)?
    empty: Callable[[Any, list[QuestionTrace]], str | None]
    identity: Callable[[Any], dict[str, str]]
    train: Callable[[Any, Path, TrainHooks], Path]

    def config(self, traces: str | Path, **settings: Any) -> Any:
        """This strategy's config from ``settings`` (a pipeline's ``training`` section), on ``traces``."""
        cls = self.config_class
        try:
            return cls.model_validate({**settings, **self._fixed(cls, traces)})
        except ValidationError as e:
            raise ValueError(one_line_error(f"{self.name}: ", e, cls)) from None

    def load_config(self, traces: str | Path, path: str | Path | None = None, flags: dict[str, Any] | None = None,
                    defaults: dict[str, Any] | None = None) -> Any:
        """This strategy's config as every command reads one (:func:`agentark.config.load_config`):
        ``defaults``, a YAML file, then the flags given; strategy name and traces set here."""
        cls = self.config_class
        return load_config(cls, path, {**(flags or {}), **self._fixed(cls, traces)}, defaults=defaults)

    def _fixed(self, cls: type, traces: str | Path) -> dict[str, Any]:
        fields: dict[str, Any] = {"strategy": self.name} if "strategy" in cls.model_fields else {}
        if self.takes_traces:
            fields["traces"] = str(traces)
        return fields


def _sft_empty(config, traces: list[QuestionTrace]) -> str | None:
    if not config.samples(traces):
        return f"no training samples: {config.strategy} kept none of {len(traces)} debated questions"
    return None


def _train_sft(config, traces: Path, hooks: TrainHooks) -> Path:
    return sft.train_sft(config, hooks)


def _pad_empty(config, traces: list[QuestionTrace]) -> str | None:
    if not build_step_dataset(traces, config.prm.step_mode, config.prm.rounds):
        return f"no labelled reasoning steps for the PRM in {len(traces)} debated questions"
    return None


def _train_pad(config, traces: Path, hooks: TrainHooks) -> Path:
    return grpo.train_pad(config, traces, task=task_of_run(traces), hooks=hooks)


def _train_opd(config, traces: Path, hooks: TrainHooks) -> Path:
    return opd.train_opd(config, hooks)


def _config_hash(config) -> dict[str, str]:
    return {"config": config.config_hash()}


# rsft: verified reasoning traces, corrective ones preferred; da: several correct, structurally different
# traces per question; sft: the answer-only baseline (all TRL SFTTrainer). pad: a PRM from the debate, then
# GRPO against PRM + verifiable reward. opd: on-policy distillation from a teacher model or the team.
STRATEGIES: dict[str, Strategy] = {
    **{
        name: Strategy(name, sft.SFTDistillConfig, True, _sft_empty, _config_hash, _train_sft)
        for name in ("rsft", "da", "sft")
    },
    # The PRM's settings are operational in PADConfig's own hash; its fingerprint adds them.
    "pad": Strategy(
        "pad",
        grpo.PADConfig,
        False,
        _pad_empty,
        lambda c: {"config": c.config_hash(), "prm": c.prm.config_hash()},
        _train_pad,
    ),
    "opd": Strategy(
        "opd",
        opd.OPDConfig,
        True,
        lambda c, traces: None if traces else "no debated questions",
        _config_hash,
        _train_opd,
    ),
}
STRATEGY_NAMES = tuple(STRATEGIES)


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; valid strategies: {', '.join(STRATEGY_NAMES)}")
    return STRATEGIES[name]
