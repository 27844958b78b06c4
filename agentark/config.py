"""What every stage config shares: one hasher, one sampling config, one loader for YAML + flags.

A stage's hash covers only what changes what the stage produces, so operational knobs (batch size,
output path, number of questions) can change between a run and its resumption. Every command reads
its settings the same way (:func:`load_config`): the YAML file first, then only the flags actually
given on the command line, so a flag's default never overwrites the file (TRL's parser habit).
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentark.engines.base import SamplingParams
from agentark.errors import one_line_error


def world_size() -> int:
    """Processes working together (``accelerate launch`` / torchrun set ``WORLD_SIZE``)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def stable_hash(obj: Any) -> str:
    """Short SHA-256 of canonical JSON: equal settings give equal hashes across machines.

    The one hasher of the package (run configs, stage fingerprints, training data). Its output must
    never change: a run's directory is resumed only when the hash of its settings matches."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class StageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Fields that do not change a stage's output (where it goes, how fast it runs, how many items).
    operational_fields: ClassVar[frozenset[str]] = frozenset()
    # Fields added after runs were made with this config: hashed only when set away from their default,
    # so every earlier run keeps its fingerprint (and its kept checkpoints stay resumable).
    hashed_when_set: ClassVar[frozenset[str]] = frozenset()

    def config_hash(self) -> str:
        unset = {name for name in self.hashed_when_set
                 if getattr(self, name) == type(self).model_fields[name].get_default(call_default_factory=True)}
        return stable_hash(self.model_dump(exclude=set(self.operational_fields) | unset))

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any):
        """``cls`` from a YAML file, with ``overrides`` (dotted keys reach into sections) on top."""
        return load_config(cls, path, overrides)


_PARAMS = SamplingParams.__pydantic_fields__


class SamplingConfig(BaseModel):
    """How a stage decodes: one typed object in every stage config, turned into the engines'
    :class:`~agentark.engines.SamplingParams` per chunk by :meth:`params` (the one seed rule)."""

    model_config = ConfigDict(extra="forbid")

    # Declared once, in SamplingParams (type, default, bounds, description); the run seed is this class's own.
    temperature: float = _PARAMS["temperature"]
    top_p: float = _PARAMS["top_p"]
    max_new_tokens: int = _PARAMS["max_new_tokens"]
    seed: int = Field(0, description="Run seed: each chunk samples with a seed of it and the chunk's question ids "
                      "(chunk_seed).")

    def params(self, item_ids: Sequence[str]) -> SamplingParams:
        """The engines' sampling object for one chunk of questions. Its seed depends only on the run
        seed and the chunk's ids, so a resumed chunk, or the same chunk on another Ray worker,
        samples alike."""
        return SamplingParams(**self.model_dump(exclude={"seed"}), seed=chunk_seed(self.seed, item_ids))


class WithSampling(BaseModel):
    """A config with a ``sampling`` section. Its fields may also be given flat (``temperature: 0.3``
    beside the other settings, as on the command line), never both ways at once."""

    sampling: SamplingConfig = Field(default_factory=SamplingConfig)

    @model_validator(mode="before")
    @classmethod
    def _flat_sampling(cls, data: Any) -> Any:
        """Flat keys into the section, on top of *this class's* default sampling (an evaluation's is
        greedy), so that ``max_new_tokens: 8`` alone does not bring back the global temperature."""
        if not isinstance(data, dict) or isinstance(data.get("sampling"), SamplingConfig):
            return data
        if not SAMPLING_FIELDS & set(data) and not data.get("sampling"):
            return data
        default = cls.model_fields["sampling"].get_default(call_default_factory=True)
        return lift_sampling(data, default.model_dump())


def lift_sampling(data: dict[str, Any], base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``data`` with its flat sampling fields moved into its ``sampling`` section, over ``base``."""
    data, flat = dict(data), SAMPLING_FIELDS & set(data)
    section = dict(data.get("sampling") or {})
    if both := sorted(flat & set(section)):
        raise ValueError(f"{', '.join(both)} given twice: flat and in the sampling section")
    data["sampling"] = {**(base or {}), **section, **{k: data.pop(k) for k in flat}}
    return data


SAMPLING_FIELDS = frozenset(SamplingConfig.model_fields)


def chunk_seed(seed: int, item_ids: Sequence[str]) -> int:
    """A sampling seed fixed by the run seed and the chunk's questions, so a resumed chunk samples alike."""
    return zlib.crc32(("|".join(item_ids) + f"#{seed}").encode())


C = TypeVar("C", bound=BaseModel)


def _set_dotted(target: dict[str, Any], key: str, value: Any) -> None:
    *sections, last = key.split(".")
    for section in sections:
        target = target.setdefault(section, {})
        if not isinstance(target, dict):
            raise ValueError(f"{key}: {section} is not a section")
    target[last] = value


def load_config(cls: type[C], path: str | Path | None = None, flags: Mapping[str, Any] | None = None,
                flag_names: Mapping[str, str] | None = None, defaults: Mapping[str, Any] | None = None) -> C:
    """``cls`` from ``defaults``, then a YAML file (optional), then ``flags``: only the flags the user gave.

    ``defaults`` are a command's own defaults where they differ from the config class's (a path
    named after the command's arguments). Keys of ``flags`` may be dotted (``sampling.temperature``)
    to reach into a section. Errors are a
    ``ValueError`` of one line per problem that names the field as the user wrote it: ``--n`` for a
    flag (``flag_names`` maps a field path to its flag), ``file.yaml: n`` for a YAML field.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise FileNotFoundError(f"config file {path} not found") from None
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    data = {**(defaults or {}), **data}
    if "sampling" in cls.model_fields:
        data = lift_sampling(data)  # the file may write sampling fields flat; flags say sampling.<field>
    for key, value in (flags or {}).items():
        _set_dotted(data, key, value)
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        given = {**{k: f"--{k.replace('_', '-')}" for k in flags or {}}, **(flag_names or {})}
        raise ValueError(
            one_line_error(lambda loc: given.get(loc) or (f"{path}: {loc}" if path else loc), e, cls)
        ) from None
