"""Spanish given names and the familiar forms their bearers sign by (PEPE for JOSE, LUPE
for GUADALUPE, CHUY for JESUS), with their common English forms in the United States
(HENRY for ENRIQUE). The ``nicknames`` package knows English names only; a third of
California's voters have Spanish given names. The table is ``data/hypocorisms.csv``."""

from __future__ import annotations

import csv
from functools import lru_cache
from importlib import resources

from unidecode import unidecode


def _key(text: str) -> str:
    """As ``domain.normalize_text`` keys a first name: ASCII, upper case, no spaces."""
    return "".join(ch for ch in unidecode(text).upper() if ch.isalnum())


@lru_cache(maxsize=1)
def table() -> dict[str, frozenset[str]]:
    """Full name -> the forms it goes by."""
    out: dict[str, set[str]] = {}
    text = resources.files("sigverify_matching").joinpath("data/hypocorisms.csv").read_text(
        encoding="utf-8")
    rows = csv.reader(line for line in text.splitlines() if line and not line.startswith("#"))
    next(rows)  # the header
    for name, forms in rows:
        out.setdefault(_key(name), set()).update(_key(f) for f in forms.split() if f)
    return {k: frozenset(v) for k, v in out.items()}


@lru_cache(maxsize=1)
def _canonicals() -> dict[str, frozenset[str]]:
    out: dict[str, set[str]] = {}
    for name, forms in table().items():
        for f in forms:
            out.setdefault(f, set()).add(name)
    return {k: frozenset(v) for k, v in out.items()}


def canonicals_of(name: str) -> frozenset[str]:
    """The full names ``name`` (normalised, spaceless) is a familiar form of."""
    return _canonicals().get(name, frozenset())


def names() -> frozenset[str]:
    """Every name of the table, full and familiar."""
    return frozenset(table()) | frozenset(_canonicals())
