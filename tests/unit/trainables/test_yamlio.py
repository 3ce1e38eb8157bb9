"""Exponents without a dot are numbers in the project's YAML (spaces, trial configs, flags)."""

from __future__ import annotations

from trainables import yamlio


def test_exponents_are_floats_and_the_rest_is_safe_yaml() -> None:
    loaded = yamlio.load("a: 1e9\nb: -1e-3\nc: 1.5\nd: 10\ne: 1.0e+9\nf: abc\ng: e5\nh: [1, x]")
    assert loaded == {"a": 1e9, "b": -1e-3, "c": 1.5, "d": 10, "e": 1e9, "f": "abc", "g": "e5", "h": [1, "x"]}
    assert isinstance(loaded["a"], float) and isinstance(loaded["d"], int)
