"""The benchmark's baseline: a plain, single-process, blocked rapidfuzz matcher.

What a competent first attempt would do, for ``make bench`` to set the real matcher's rate
and accuracy beside:

- **blocking**: a voter is a candidate for a signature when both give the same zip (its
  first five characters) and the same first letter of the last name (upper case, as
  written; no phonetics, no nicknames, no other rule);
- **scoring**: ``rapidfuzz.process.extractOne`` of the signature's "FIRST LAST STREET"
  against the block's "FIRST LAST STREET" lines, scorer ``fuzz.WRatio`` on text passed
  through ``utils.default_process`` (lower case, punctuation dropped);
- **decision**: the best candidate is the signer when its score reaches ``THRESHOLD``
  (0.6 of 100), else nobody is. No eligibility, no reasons, no county check.

It holds two strings per voter (its line and its id), per block; ``keep`` restricts it to the
blocks some signatures need, so that a sample of signatures can be matched against a very
large roll without holding the whole roll in Python objects (the rate does not change: a
signature is only ever compared with its own block).
"""

from __future__ import annotations

from collections.abc import Container, Iterable

from rapidfuzz import fuzz, process, utils

from sigverify_matching.domain import SignatureInput, VoterRecord

#: The score (0..1 of WRatio's 0..100) from which the best candidate is taken as the signer.
THRESHOLD = 0.6

#: A roll row as the baseline needs it: (voter_id, first_name, last_name, street, zip).
BaselineRow = tuple[str, str, str, str, str]


def block_key(zip_: str, last_name: str) -> str:
    """The block of a voter or a signature: zip (five characters) + first letter of the
    last name, upper case; "" when either is missing (such a row is in no block)."""
    z = zip_.strip()[:5]
    initial = last_name.strip()[:1].upper()
    return f"{z}|{initial}" if z and initial else ""


def _line(first: str, last: str, street: str) -> str:
    return f"{first} {last} {street}"


class BaselineMatcher:
    __slots__ = ("_ids", "_lines")

    def __init__(self, lines: dict[str, list[str]], ids: dict[str, list[str]]) -> None:
        self._lines = lines
        self._ids = ids

    def __len__(self) -> int:
        return sum(len(v) for v in self._ids.values())

    @classmethod
    def from_rows(cls, rows: Iterable[BaselineRow], keep: Container[str] | None = None
                  ) -> BaselineMatcher:
        """From (voter_id, first, last, street, zip) rows; ``keep``: only these blocks."""
        lines: dict[str, list[str]] = {}
        ids: dict[str, list[str]] = {}
        for voter_id, first, last, street, zip_ in rows:
            key = block_key(zip_, last)
            if not key or (keep is not None and key not in keep):
                continue
            lines.setdefault(key, []).append(utils.default_process(_line(first, last, street)))
            ids.setdefault(key, []).append(voter_id)
        return cls(lines, ids)

    @classmethod
    def build(cls, voters: Iterable[VoterRecord], keep: Container[str] | None = None
              ) -> BaselineMatcher:
        return cls.from_rows(((v.voter_id, v.first_name, v.last_name, v.street, v.zip)
                              for v in voters), keep)

    def match(self, sig: SignatureInput) -> tuple[str, float]:
        """(voter_id, score 0..1) of the best voter of the signature's block; ("", 0.0) when
        the block is empty or no voter reaches ``THRESHOLD``."""
        key = block_key(sig.zip, sig.last_name)
        lines = self._lines.get(key) if key else None
        if not lines:
            return "", 0.0
        best = process.extractOne(
            utils.default_process(_line(sig.first_name, sig.last_name, sig.street)), lines,
            scorer=fuzz.WRatio, processor=None, score_cutoff=THRESHOLD * 100)
        if best is None:
            return "", 0.0
        _, score, i = best
        return self._ids[key][i], float(score) / 100
