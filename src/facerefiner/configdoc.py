"""The docs of config dataclass fields (the string literal under each field, as in nerfstudio's
configs), so that the CLI's ``--help`` is the config's documentation, written once."""

from __future__ import annotations

import ast
import functools
import inspect
import re
import textwrap
from dataclasses import fields, is_dataclass

__all__ = ["field_docs", "field_help", "plain", "settable_fields"]


@functools.lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """``{field name: its docstring}`` of a dataclass and its bases (the base's when a subclass does
    not document a field again); whitespace collapsed to single spaces.

    Raises:
        TypeError: ``cls`` is not a dataclass.
    """
    if not (isinstance(cls, type) and is_dataclass(cls)):
        raise TypeError(f"field_docs: expected a dataclass type, got {cls!r}")
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):  # no source (a frozen app): no docs
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
                docs[node.target.id] = re.sub(r"\s+", " ", nxt.value.value).strip()
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in docs.items() if k in names}


def field_help(cls: type, name: str) -> str:
    """The docstring of field ``name`` of dataclass ``cls`` (for a CLI option's ``help``).

    Raises:
        KeyError: ``cls`` has no documented field ``name`` (so that an undocumented option is
            caught when the CLI module is imported, i.e. by any test).
    """
    docs = field_docs(cls)
    if name not in docs:
        raise KeyError(f"{cls.__name__}.{name} has no docstring (the CLI's help comes from it)")
    return plain(docs[name])


def plain(doc: str) -> str:
    """A docstring's reST markup dropped for a terminal: ``x`` and :func:`x` -> x."""
    doc = re.sub(r":\w+:`~?([^`]+)`", r"\1", doc)
    return doc.replace("``", "")


def settable_fields(cls: type) -> str:
    """The names of every field of ``cls``, comma-separated (for a ``--set FIELD=VALUE`` help)."""
    return ", ".join(f"{f.name}" for f in fields(cls))
