"""Settings errors as a user can read them: one line per problem, naming the field as they wrote it.

pydantic's own message is a multi-line dump ending in "For further information visit ..."; a user
who typed ``--n 0`` should read ``--n must be >= 1``, and one who typed ``dtyp=bf16`` should read which
options there are. Engine, task and config settings all report through :func:`one_line_error`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError

_BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
_CHOICES = ("literal_error", "enum")


def one_line_error(prefix: str | Callable[[str], str], error: ValidationError,
                   model: type[BaseModel] | None = None) -> str:
    """``error`` as one line, its problems joined by ``"; "``.

    ``prefix`` is either text put before the line (``"engine hf: "`` gives ``engine hf: unknown
    option 'dtyp'; valid options: ...`` or ``engine hf: dtype must be one of ...``) or a function
    from a field's dotted path to the label the user knows it by (``"sampling.temperature"`` ->
    ``"--temperature"``). With ``model`` (the class that was validated), an unknown option is
    answered with the valid ones.
    """
    label = prefix if callable(prefix) else str
    parts = []
    for e in error.errors():
        loc = ".".join(str(x) for x in e["loc"])
        kind, ctx = e["type"], e.get("ctx", {})
        msg = e["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if kind == "extra_forbidden":
            unknown = f"{label(loc)}: unknown option" if callable(prefix) else f"unknown option {loc!r}"
            valid = _fields_at(model, e["loc"][:-1]) if model else None
            parts.append(unknown + ("" if valid is None else f"; valid options: {', '.join(valid) or 'none'}"))
        elif kind in _BOUNDS:
            bound = next((v for k, v in ctx.items() if k in ("ge", "gt", "le", "lt")), "")
            bound = int(bound) if isinstance(bound, float) and bound.is_integer() else bound
            parts.append(f"{label(loc)} must be {_BOUNDS[kind]} {bound}")
        elif kind in _CHOICES:
            parts.append(f"{label(loc)} must be {_choices(ctx.get('expected', ''))} (got {e['input']!r})")
        elif kind == "missing":
            parts.append(f"{label(loc)} is required")
        elif not loc:  # a model-level check: its message says it all
            parts.append(msg)
        else:
            got = f" (got {e['input']!r})" if isinstance(e.get("input"), (str, int, float)) else ""
            parts.append(f"{label(loc)}: {msg[:1].lower()}{msg[1:]}{got}")
    return ("" if callable(prefix) else prefix) + "; ".join(parts).replace("\n", " ")


def _choices(expected: str) -> str:
    """pydantic's ``"'a', 'b' or 'c'"`` as ``"one of 'a', 'b', 'c'"`` (a single value as itself)."""
    head, sep, last = expected.rpartition(" or ")
    return f"one of {head}, {last}" if sep else expected


def _fields_at(model: type[BaseModel], path: tuple) -> list[str] | None:
    """The option names of the (nested) model section at ``path``, or None when it is not a model.

    A field that can hold one value only (a ``Literal["hf"]`` discriminator) is no choice, so it is
    not listed."""
    for key in path:
        field = model.model_fields.get(str(key))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return sorted(name for name, field in model.model_fields.items()
                  if not (get_origin(field.annotation) is Literal and len(get_args(field.annotation)) == 1))
