"""The benchmark's baseline: a deliberately plain single-process rapidfuzz matcher.

Per signature, within the signature's county, ``rapidfuzz.process.extractOne`` of
"FIRST LAST STREET" against every voter's "FIRST LAST STREET" of that county (one
precomputed list per county), with a fixed cutoff. No blocking, no normalisation beyond
upper case, no eligibility or reasons: what a first attempt would do, for ``make bench`` to
compare the real matcher's rate with.
"""

from __future__ import annotations

from collections.abc import Iterable

from rapidfuzz import fuzz, process, utils

from sigverify_matching.domain import SignatureInput, VoterRecord

CUTOFF = 85.0  # WRatio score below which a signature matches nobody


def _line(first: str, last: str, street: str) -> str:
    return f"{first} {last} {street}".upper()


class BaselineMatcher:
    __slots__ = ("_choices", "_ids")

    def __init__(self, choices: dict[str, list[str]], ids: dict[str, list[str]]) -> None:
        self._choices = choices
        self._ids = ids

    @classmethod
    def build(cls, voters: Iterable[VoterRecord]) -> BaselineMatcher:
        choices: dict[str, list[str]] = {}
        ids: dict[str, list[str]] = {}
        for v in voters:
            county = v.county.strip().upper()
            choices.setdefault(county, []).append(_line(v.first_name, v.last_name, v.street))
            ids.setdefault(county, []).append(v.voter_id)
        return cls(choices, ids)

    def match(self, sig: SignatureInput) -> tuple[str, float]:
        """(voter_id, score) of the best voter of the signature's county; ("", 0.0) if none
        reaches the cutoff."""
        county = sig.county.strip().upper()
        choices = self._choices.get(county)
        if not choices:
            return "", 0.0
        best = process.extractOne(_line(sig.first_name, sig.last_name, sig.street), choices,
                                  scorer=fuzz.WRatio, processor=utils.default_process,
                                  score_cutoff=CUTOFF)
        if best is None:
            return "", 0.0
        _, score, i = best
        return self._ids[county][i], float(score)
