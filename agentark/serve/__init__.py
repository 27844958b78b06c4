"""Serve a model, a team or the hybrid behind an OpenAI-compatible HTTP API."""

from agentark.serve.app import CompleteFn, MicroBatcher, RequestLimits, background_server, create_app, serve

__all__ = ["CompleteFn", "MicroBatcher", "RequestLimits", "background_server", "create_app", "serve"]
