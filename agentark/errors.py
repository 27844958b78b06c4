"""Settings errors as a user can read them: one line per problem, naming the field as they wrote it.

pydantic's own message is a multi-line dump ending in "For further information visit ..."; a user
who typed ``--n 0`` should read ``--n must be >= 1``.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, ValidationError

_BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}


def one_line_error(name: str | Callable[[str], str], error: ValidationError,
                   model: type[BaseModel] | None = None) -> str:
    """``error`` as ``"; "``-joined lines. ``name`` labels a field: a prefix (``"engine hf: "``) or a
    function from the dotted field path to its label (``"sampling.temperature"`` -> ``"--temperature"``).
    With ``model`` (the validated class), an unknown setting is answered with the valid ones."""
    label = name if callable(name) else (lambda loc: f"{name}{loc}")
    parts = []
    for e in error.errors():
        loc = ".".join(str(x) for x in e["loc"])
        kind, ctx = e["type"], e.get("ctx", {})
        if kind == "extra_forbidden":
            valid = ", ".join(_fields_at(model, e["loc"][:-1])) if model else ""
            parts.append(f"{label(loc)}: unknown setting" + (f"; valid: {valid}" if valid else ""))
        elif kind in _BOUNDS:
            bound = next(iter(v for k, v in ctx.items() if k in ("ge", "gt", "le", "lt")), "")
            parts.append(f"{label(loc)} must be {_BOUNDS[kind]} {bound}")
        elif kind == "literal_error":
            parts.append(f"{label(loc)} must be {ctx.get('expected', 'one of the listed values')} (got {e['input']!r})")
        elif not loc:  # a model-level check: its message says it all
            parts.append(e["msg"].removeprefix("Value error, "))
        else:
            parts.append(f"{label(loc)}: {e['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def _fields_at(model: type[BaseModel], path: tuple) -> list[str]:
    """The field names of the (nested) model section at ``path``, or none when it is not a model."""
    for key in path:
        field = model.model_fields.get(str(key))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return sorted(model.model_fields)
