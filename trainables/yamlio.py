"""YAML as users write it: `1e-3` and `1e9` are numbers.

PyYAML follows YAML 1.1, where a float needs a dot (`1.0e-3`), so `lr: 1e-3` would load as the
text "1e-3" and be refused as "expected a number". This loader reads such exponents as floats,
as YAML 1.2 does; everything else is PyYAML's safe loader.
"""

from __future__ import annotations

import re
from typing import Any

import yaml


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load(text: str) -> Any:
    """Parses YAML text with the safe loader, exponents without a dot included."""
    return yaml.load(text, Loader=_Loader)
