"""The settings of ``agentark serve`` and ``agentark loadtest``: typed, and read like every other
command's (:func:`agentark.config.load_config`: ``--config`` YAML, then the flags given)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agentark.defaults import DEFAULT_BATCH_SIZE, DEFAULT_MAX_NEW_TOKENS
from agentark.models.packs import DEFAULT_MODEL
from agentark.serve.app import RequestLimits
from agentark.serve.systems import SERVED_SYSTEMS

API_KEY_ENV = "AGENTARK_API_KEY"
"""The environment variable that holds the API key, unless ``api_key_env`` names another."""


class ServeConfig(BaseModel):
    """``agentark serve``: a model, a team or the hybrid behind an OpenAI-compatible API."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(DEFAULT_MODEL, description="Model pack, local path (e.g. a student) or hub id; the hybrid's "
                       "student.")
    system: str = Field("single", description="What answers: single (the model), self_consistency or debate (a team "
                        "of team_model), hybrid (student first, team below threshold).")
    team_model: str | None = Field(None, description="The team's model (default: model).")
    task: str = Field("gsm8k", description="Task whose answer format the team votes on (arithmetic, gsm8k, choice, "
                      "...).")
    agents: int = Field(3, ge=1, description="Team agents (debate) or samples (self_consistency).")
    rounds: int = Field(2, ge=1, description="Debate rounds.")
    k: int = Field(3, ge=2, description="Hybrid: student samples whose agreement is its confidence.")
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="Hybrid: fall back to the team below this "
                                    "agreement.")
    decision: str | None = Field(None, description="Hybrid: a pilot's report/decision.json, whose threshold is used.")
    engine: str = Field("auto", description="Engine: auto, llamacpp, hf, openai, vllm.")
    engine_options: dict[str, Any] = Field(default_factory=dict, description="The engine's settings.")
    host: str = Field("127.0.0.1", description="Bind address; the default keeps the server on this machine.")
    port: int = Field(8000, ge=1, le=65535, description="Port (1-65535).")
    api_key_env: str = Field(API_KEY_ENV, description="Environment variable holding the API key clients must send.")
    served_model_name: str | None = Field(None, description="Model name reported by /v1/models (default: model).")
    max_batch_wait_ms: float = Field(10.0, ge=0.0, description="How long to gather concurrent requests into one "
                                     "batch.")
    max_batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1, description="Most requests merged into one engine call.")
    max_body_bytes: int = Field(RequestLimits.max_body_bytes, ge=1, description="Larger request bodies get 413.")
    max_prompt_chars: int = Field(RequestLimits.max_prompt_chars, ge=1, description="Longer prompts (all "
                                  "messages) get 400.")
    max_tokens: int = Field(RequestLimits.max_tokens, ge=1, description="Larger max_tokens requests get 400.")

    @model_validator(mode="after")
    def _check(self) -> ServeConfig:
        if self.system not in SERVED_SYSTEMS:
            raise ValueError(f"system {self.system!r}: valid systems are {', '.join(SERVED_SYSTEMS)}")
        if self.system == "hybrid" and (self.threshold is None) == (self.decision is None):
            raise ValueError("system hybrid needs exactly one of threshold and decision")
        return self

    def limits(self) -> RequestLimits:
        return RequestLimits(max_body_bytes=self.max_body_bytes, max_prompt_chars=self.max_prompt_chars,
                             max_tokens=self.max_tokens)


class LoadtestConfig(BaseModel):
    """``agentark loadtest``: a fixed load against an OpenAI-compatible server."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="Base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1.")
    model: str = Field(description="Model name the server serves.")
    task: str = Field("arithmetic", description="Task whose questions are sent.")
    task_options: dict[str, Any] = Field(default_factory=dict, description="The task's settings (path for file "
                                         "tasks).")
    split: Literal["held-out", "train"] = Field("held-out", description="held-out or train.")
    n: int = Field(100, ge=1, description="Requests to send (questions are cycled).")
    concurrency: int | None = Field(None, ge=1, description="Closed loop: requests in flight.")
    rate: float | None = Field(None, gt=0.0, description="Open loop: Poisson arrivals per second.")
    max_tokens: int = Field(DEFAULT_MAX_NEW_TOKENS, ge=1, description="max_tokens of each request.")
    stream: bool = Field(False, description="Send stream=true and measure time to first token.")
    temperature: float = Field(0.0, ge=0.0, description="Request temperature (greedy for a single model).")
    server_temperature: bool = Field(False, description="Send no temperature: the served system's default "
                                     "applies (a voting team or the hybrid samples).")
    duration: float = Field(600.0, gt=0.0, description="Stop sending after this many seconds.")
    api_key_env: str = Field(API_KEY_ENV, description="Environment variable holding the server's API key.")
    out: str | None = Field(None, description="Write the result as JSON here.")
