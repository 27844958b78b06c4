"""Serve any engine (typically a distilled student) behind an OpenAI-compatible HTTP API."""

from agentark.serve.app import CompleteFn, MicroBatcher, RequestLimits, create_app, serve

__all__ = ["CompleteFn", "MicroBatcher", "RequestLimits", "create_app", "serve"]
