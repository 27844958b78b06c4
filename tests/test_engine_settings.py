"""Typed engine settings: one-line errors before anything loads, and which options enter a run's hash."""

from __future__ import annotations

import inspect

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentark.engines import (
    ENGINE_SETTINGS,
    HFSettings,
    LlamaCppSettings,
    OpenAISettings,
    VLLMSettings,
    build_engine,
    engine_settings,
    get_engine,
    with_batch_size,
)
from agentark.errors import one_line_error


def backend_parameters(kind: str) -> dict[str, inspect.Parameter]:
    from agentark.engines.hf import HFEngine
    from agentark.engines.llamacpp import LlamaCppEngine
    from agentark.engines.openai import OpenAIEngine
    from agentark.engines.vllm import VLLMEngine

    build = {"llamacpp": LlamaCppEngine, "hf": HFEngine.from_pretrained, "openai": OpenAIEngine, "vllm": VLLMEngine}[
        kind
    ]
    parameters = inspect.signature(build).parameters
    return {name: p for name, p in list(parameters.items()) if name not in ("self", "cls", "model", "name")}


@pytest.mark.parametrize("kind", sorted(ENGINE_SETTINGS))
def test_settings_mirror_the_backend_and_say_why(kind):
    """A field per constructor option, same defaults, each with help; so a new backend option without a
    settings field (unreachable from configs) fails here."""
    cls = ENGINE_SETTINGS[kind]
    fields = {name: f for name, f in cls.model_fields.items() if name != "kind"}
    parameters = backend_parameters(kind)
    assert set(fields) == set(parameters)
    assert {n: f.default for n, f in fields.items()} == {n: p.default for n, p in parameters.items()}
    assert all(f.description for f in fields.values())
    assert cls.operational_fields <= set(fields) and (
        cls.batch_field is None or cls.batch_field in cls.operational_fields
    )
    assert cls().kind == kind


def test_unknown_option_names_it_and_lists_the_valid_ones():
    with pytest.raises(ValueError) as err:
        engine_settings("hf", {"dtyp": "bf16"})
    assert str(err.value) == "engine hf: unknown option 'dtyp'; valid options: batch_size, device, dtype, prompt_cache"


def test_bad_choice_lists_the_valid_values():
    with pytest.raises(ValueError, match=r"^engine hf: dtype must be one of 'auto', 'float32', 'bfloat16', 'float16' "
                       r"\(got 'fp64'\)$"):
        engine_settings("hf", {"dtype": "fp64"})
    with pytest.raises(ValueError, match=r"^engine llamacpp: outtype must be one of 'f32', 'f16', 'bf16', 'q8_0'"):
        engine_settings("llamacpp", {"outtype": "q4_k_m"})


def test_bounds_and_types_read_as_one_line():
    with pytest.raises(ValueError, match=r"^engine llamacpp: n_parallel must be >= 1$"):
        engine_settings("llamacpp", {"n_parallel": 0})
    with pytest.raises(ValueError, match=r"^engine vllm: gpu_memory_utilization must be <= 1$"):
        engine_settings("vllm", {"gpu_memory_utilization": 1.5})
    with pytest.raises(ValueError) as err:
        engine_settings("openai", {"timeout_s": 0, "concurrency": "many"})
    message = str(err.value)
    assert message.startswith("engine openai: ") and "\n" not in message and "For further information" not in message
    assert "timeout_s must be > 0" in message and "concurrency: input should be a valid integer" in message


def test_identity_is_the_output_changing_options_away_from_defaults():
    assert HFSettings(dtype="bfloat16").identity() == {"dtype": "bfloat16"}
    assert HFSettings(dtype="bf16").identity() == {"dtype": "bfloat16"}  # one spelling, one hash
    assert HFSettings(batch_size=8, device="cpu").identity() == {}
    assert HFSettings(dtype="auto").identity() == {}  # a default written out keeps the hash
    assert LlamaCppSettings(n_parallel=2, n_threads=2, n_ctx_per_seq=4096, outtype="f16").identity() == {
        "outtype": "f16"
    }
    assert OpenAISettings(concurrency=64, timeout_s=5, api_key_env="K").identity() == {}
    assert OpenAISettings(base_url="http://h/v1").identity() == {"base_url": "http://h/v1"}
    assert VLLMSettings(max_model_len=4096, tensor_parallel_size=2).identity() == {"max_model_len": 4096}


def test_get_engine_with_a_typo_fails_before_any_model_loads(monkeypatch):
    from agentark.engines.hf import HFEngine
    from agentark.engines.llamacpp import LlamaCppEngine

    def loaded(*args, **kwargs):
        raise AssertionError("a backend was built before its options were checked")

    monkeypatch.setattr(HFEngine, "from_pretrained", loaded)
    monkeypatch.setattr(LlamaCppEngine, "__init__", loaded)
    with pytest.raises(
        ValueError,
        match=r"^engine hf: unknown option 'batchsize'; valid options: batch_size, device, dtype, prompt_cache$",
    ):
        get_engine("hf", "no/such-model", batchsize=4)
    with pytest.raises(ValueError, match=r"^engine llamacpp: unknown option 'n_paralel'"):
        get_engine("llamacpp", "no/such-model", n_paralel=4)
    with pytest.raises(ValueError, match="unknown engine 'hff'"):
        get_engine("hff", "m")


def test_build_engine_passes_the_validated_values(monkeypatch):
    from agentark.engines.hf import HFEngine

    calls = []
    monkeypatch.setattr(HFEngine, "from_pretrained", lambda name, **kw: calls.append((name, kw)) or "engine")
    assert get_engine("hf", "m", dtype="bf16", batch_size="8") == "engine"
    assert build_engine("n", HFSettings(device="cpu")) == "engine"
    assert calls == [("m", {"device": "auto", "dtype": "bfloat16", "batch_size": 8, "prompt_cache": True}),
                     ("n", {"device": "cpu", "dtype": "auto", "batch_size": 32, "prompt_cache": True})]


def test_kind_and_batch_field():
    assert isinstance(engine_settings("auto"), tuple(ENGINE_SETTINGS.values()))
    with pytest.raises(ValueError, match=r"^engine hf: kind must be 'hf' \(got 'vllm'\)$"):
        engine_settings("hf", {"kind": "vllm"})
    assert with_batch_size("hf", {}, 8) == {"batch_size": 8}
    assert with_batch_size("llamacpp", {"n_parallel": 2}, 8) == {"n_parallel": 2}
    assert with_batch_size("openai", {"concurrency": 4}, 8) == {"concurrency": 4}


class _Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(1.0, ge=0)


class _Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sampling: _Inner = _Inner()
    n: int = 1

    @model_validator(mode="after")
    def _check(self):
        if self.n == 7:
            raise ValueError("n may not be 7\nreally")
        return self


def errors_of(data) -> ValidationError:
    with pytest.raises(ValidationError) as err:
        _Outer.model_validate(data)
    return err.value


def test_one_line_error_is_generic():
    """The CLI reuses it with its own labels (flags, YAML keys) and nested sections."""
    assert one_line_error("cfg: ", errors_of({"sampling": {"temp": 1}}), _Outer) == \
        "cfg: unknown option 'sampling.temp'; valid options: temperature"
    flags = {"sampling.temperature": "--temperature"}.get
    assert one_line_error(lambda loc: flags(loc) or loc, errors_of({"sampling": {"temperature": -1}})) == \
        "--temperature must be >= 0"
    assert one_line_error(str, errors_of({"m": 1})) == "m: unknown option"  # no model: nothing to list
    assert one_line_error("", errors_of({"n": 7})) == "n may not be 7 really"
