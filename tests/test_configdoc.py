"""Config field docs (facerefiner.configdoc): the CLI's help is the config's documentation."""

from __future__ import annotations

from dataclasses import dataclass, fields

import pytest
from typer.testing import CliRunner

from facerefiner.configdoc import field_docs, field_help, plain


@dataclass
class _Base:
    a: int = 1
    """The a field,
    over two lines."""
    b: str = "x"
    c: float = 0.5
    """Uses ``a`` and :func:`~facerefiner.unwrap.sample_side`."""


@dataclass
class _Child(_Base):
    a: int = 2
    d: bool = False
    """New in the child."""


def test_field_docs_of_a_dataclass_and_its_bases():
    assert field_docs(_Base) == {"a": "The a field, over two lines.", "c": "Uses ``a`` and :func:`~facerefiner.unwrap.sample_side`."}
    assert field_docs(_Child) == {**field_docs(_Base), "d": "New in the child."}  # a keeps the base's doc
    assert field_help(_Base, "c") == "Uses a and facerefiner.unwrap.sample_side."
    assert plain(":class:`facerefiner.light.Light` and ``x``") == "facerefiner.light.Light and x"
    with pytest.raises(KeyError, match="_Base.b has no docstring"):
        field_help(_Base, "b")
    with pytest.raises(TypeError, match="expected a dataclass"):
        field_docs(int)


def test_every_user_setting_is_documented_and_the_cli_help_is_that_doc():
    from facerefiner.cli.main import app
    from facerefiner.pipeline import RefineOptions
    from facerefiner.refine import RefineConfig

    for cls in (RefineOptions, RefineConfig):
        assert set(field_docs(cls)) == {f.name for f in fields(cls)}, cls
    r = CliRunner().invoke(app, ["refine", "--help"], terminal_width=400, env={"COLUMNS": "400"})
    text = " ".join(r.output.replace("│", " ").split())
    for name in ("head", "occlusion", "prior"):
        assert field_help(RefineOptions, name) in text, name
    assert "--set" in text and all(f.name in text for f in fields(RefineConfig))
