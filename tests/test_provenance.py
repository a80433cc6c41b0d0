"""Source digests ignore comments, docstrings and formatting but not code; provenance is complete."""

from __future__ import annotations

import textwrap

import pytest

from landscape_utils.study import provenance as P

BASE = '''
"""Module docstring."""
import math


def f(x):
    """Docstring."""
    # a comment
    return math.sqrt(x) + 1
'''


@pytest.mark.parametrize("edited, same", [
    (BASE.replace("# a comment", "# another comment"), True),
    (BASE.replace('"""Docstring."""', '"""Another docstring, longer."""'), True),
    (BASE.replace("return math.sqrt(x) + 1", "return (math.sqrt(x)\n            + 1)"), True),
    (BASE.replace("+ 1", "+ 2"), False),
    (BASE.replace("def f(x):", "def g(x):"), False),
    (BASE + "\nY = 3\n", False),
])
def test_source_digest_sees_code_only(tmp_path, edited, same):
    a, b = tmp_path / "a" / "m.py", tmp_path / "b" / "m.py"
    for path, text in ((a, BASE), (b, edited)):
        path.parent.mkdir()
        path.write_text(textwrap.dedent(text))
    assert (P.source_digest([a]) == P.source_digest([b])) == same


def test_source_digest_notices_an_edit_in_place(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(BASE)
    before = P.source_digest([path])
    path.write_text(BASE.replace("+ 1", "+ 3"))
    assert P.source_digest([path]) != before


def test_provenance_records_what_made_a_result():
    info = P.provenance("cpu")
    for key in ("schema_version", "package_version", "package_source_digest", "python", "libraries", "device",
                "cpu_model", "torch_threads", "platform", "package_path"):
        assert info[key] not in (None, ""), key
    assert info["libraries"]["torch"] and info["libraries"]["snakemake"]


def test_short_hash_is_canonical():
    assert P.short_hash({"a": 1, "b": [1, 2]}) == P.short_hash({"b": [1, 2], "a": 1})
    assert P.short_hash({"a": 1}) != P.short_hash({"a": 2})
