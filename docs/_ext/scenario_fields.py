"""``{scenario-fields} KIND``: the table of every field a scenario of a problem kind accepts.

Generated from the kind's pydantic model (``jointopt.solvers.PROBLEM_KINDS[KIND]``), so the table
never drifts from what the loader validates: one row per dotted field path with its type, its
default (``required`` when it has none) and its description where the model gives one (a field's
``description``, else the first sentence of its section's docstring for the section row).
"""

from __future__ import annotations

import math
import re
import types
import typing

import pydantic
from docutils import nodes
from sphinx.util.docutils import SphinxDirective


def _type_name(annotation) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation)).replace("'", '"')
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin in (list, tuple):
        args = typing.get_args(annotation)
        return f"list[{_type_name(args[0])}]" if args else "list"
    if origin is dict:
        return "table"
    if isinstance(annotation, type):
        if issubclass(annotation, pydantic.BaseModel):
            return "table"
        return {"NoneType": "none", "str": "string", "float": "number", "int": "integer",
                "bool": "boolean", "ndarray": "vector"}.get(annotation.__name__,
                                                             annotation.__name__)
    return str(annotation).replace("typing.", "")


def _models_in(annotation) -> list[type[pydantic.BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return [annotation]
    out = []
    for arg in typing.get_args(annotation):
        out += _models_in(arg)
    return out


def _default(field) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, pydantic.BaseModel):
        return "(section defaults)"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if value is None:
        return "none"
    text = repr(value).replace("'", '"')
    return text if len(text) <= 40 else text[:37] + "..."


def _first_sentence(doc: str | None) -> str:
    if not doc:
        return ""
    text = " ".join(doc.strip().split("\n\n")[0].split())
    match = re.match(r"(.+?\.)(\s|$)", text)
    return match.group(1) if match else text


def field_rows(model: type[pydantic.BaseModel], prefix: str = "", seen=()) -> list[tuple]:
    """``(path, type, default, description)`` for every field of ``model``, depth first."""
    rows = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        sub = [m for m in _models_in(field.annotation) if m not in seen]
        desc = field.description or (_first_sentence(sub[0].__doc__) if sub else "")
        rows.append((path, _type_name(field.annotation), _default(field), desc))
        for m in sub[:1]:
            rows += field_rows(m, path + ".", seen + (model,))
    return rows


def _inline(text: str) -> list[nodes.Node]:
    """Text with ``code`` spans (docstring style) as docutils nodes."""
    out: list[nodes.Node] = []
    for i, part in enumerate(re.split(r"``(.+?)``", text)):
        if part:
            out.append(nodes.literal(part, part) if i % 2 else nodes.Text(part))
    return out


def _row(cells: list[list[nodes.Node]]) -> nodes.row:
    row = nodes.row()
    for content in cells:
        row += nodes.entry("", nodes.paragraph("", "", *content))
    return row


class ScenarioFields(SphinxDirective):
    """The table is built as docutils nodes, so it renders the same from MyST and RST pages."""

    required_arguments = 1
    has_content = False

    def run(self):
        from jointopt.solvers import PROBLEM_KINDS

        kind = self.arguments[0]
        if kind not in PROBLEM_KINDS:
            raise self.error(f"unknown problem kind {kind!r}; known: {sorted(PROBLEM_KINDS)}")
        rows = [("kind", f'"{kind}"', "required", "the problem kind")]
        rows += field_rows(PROBLEM_KINDS[kind])
        table = nodes.table(classes=["scenario-fields"])
        group = nodes.tgroup(cols=4)
        table += group
        for width in (30, 20, 15, 35):
            group += nodes.colspec(colwidth=width)
        head = nodes.thead()
        head += _row([[nodes.Text(h)] for h in ("field", "type", "default", "meaning")])
        group += head
        body = nodes.tbody()
        for path, typ, default, desc in rows:
            body += _row([[nodes.literal(path, path)], [nodes.Text(typ)],
                          [nodes.Text(default)], _inline(desc)])
        group += body
        return [table]


def setup(app):
    app.add_directive("scenario-fields", ScenarioFields)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
