"""Models: turn a name (model pack, local path, hub id) into a tokenizer and a PyTorch model, or a GGUF file."""

from agentark.models.gguf import resolve_gguf
from agentark.models.loading import load_model, load_tokenizer, pick_device, pick_dtype, resolve_model
from agentark.models.packs import (
    DEFAULT_MODEL,
    MODEL_PACKS,
    ModelPackError,
    materialize_pack,
    pack_files,
    pack_gguf,
    pack_sha256,
)

__all__ = [
    "DEFAULT_MODEL", "MODEL_PACKS", "ModelPackError", "load_model", "load_tokenizer", "materialize_pack",
    "pack_files", "pack_gguf", "pack_sha256", "pick_device", "pick_dtype", "resolve_gguf", "resolve_model",
]
