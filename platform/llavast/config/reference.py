"""The job YAML reference (docs/jobs.md), generated from the config models so it cannot drift.

`python -m llavast.config.reference` prints the Markdown; a unit test checks docs/jobs.md holds it.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from llavast.config.loader import JOB_KINDS

BEGIN, END = "<!-- BEGIN GENERATED REFERENCE -->", "<!-- END GENERATED REFERENCE -->"


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(json.dumps(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation) if a is not Ellipsis)
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        return "(section defaults)" if isinstance(value, BaseModel) else f"`{json.dumps(value)}`"
    if field.default is PydanticUndefined:
        return "**required**"
    value = field.default.model_dump(mode="json") if isinstance(field.default, BaseModel) else field.default
    return f"`{json.dumps(value)}`"


def _sections(model: type[BaseModel]) -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = []
    for field in model.model_fields.values():
        for candidate in (field.annotation, *typing.get_args(field.annotation)):
            if inspect.isclass(candidate) and issubclass(candidate, BaseModel) and candidate not in found:
                found.append(candidate)
    return found


def _table(model: type[BaseModel], prefix: str) -> list[str]:
    doc = inspect.cleandoc(model.__doc__ or "")
    lines = [doc, ""] if doc else []
    lines += ["| key | type | default |", "|---|---|---|"]
    for name, field in model.model_fields.items():
        lines.append(f"| `{prefix}{name}` | {_type_name(field.annotation)} | {_default(field)} |")
    return lines + [""]


def reference() -> str:
    out = [BEGIN, ""]
    for kind, model in JOB_KINDS.items():
        out += [f"### kind: {kind}", ""] + _table(model, "")
        for section in _sections(model):
            key = next(n for n, f in model.model_fields.items()
                       if section in (f.annotation, *typing.get_args(f.annotation)))
            out += [f"#### `{key}` ({kind})", ""] + _table(section, f"{key}.")
    return "\n".join(out + [END])


if __name__ == "__main__":
    print(reference())
