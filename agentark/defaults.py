"""Defaults that several settings share, each written once here and referenced everywhere else.

The engines, the stage configs and the command line's help all read these names; this module imports
nothing, so even ``agentark --help`` can show them without loading a library.
"""

DEFAULT_TEMPERATURE = 0.7
"""Sampling temperature of every sampled system (debates, self-consistency, the served team): identical
greedy voters would agree on everything. Single-model evaluations are greedy (0) instead."""

DEFAULT_BATCH_SIZE = 32
"""Sequences decoded together: the hf engine's batch, llamacpp's parallel slots, the requests a server
merges into one engine call."""

DEFAULT_CHUNK_SIZE = 16
"""Questions per chunk of a generate run (one engine call per agent x question of a round); traces are
saved after each chunk."""

DEFAULT_MAX_NEW_TOKENS = 256
"""Most tokens generated per agent turn (or per request)."""
