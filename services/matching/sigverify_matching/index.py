"""The candidate index: the whole roll, blocked several ways so that a signature is compared
with tens of voters, not millions.

Blocking passes (each also tried with first and last names swapped):

- ``z``: zip and phonetic last name;
- ``f``: zip and phonetic first name (a nickname's canonical forms too): surname typos;
- ``a``: house number and street name: name typos, wrong zips, and the household;
- ``n``: phonetic last and first name statewide: moved voters, zip typos, WRONG_COUNTY.

A block larger than ``PASS_CAP`` keeps its ``PASS_CAP`` members most like the signature on
what the block does not already share (for a statewide name block: the address), and marks
the name as crowded (so no ADDRESS_MISMATCH is inferred from a common name).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from rapidfuzz import fuzz, process

from sigverify_matching.domain import (
    MatchConfig,
    MatchResult,
    PersonName,
    PreparedSignature,
    PreparedVoter,
    RollStats,
    SignatureInput,
    VoterRecord,
    compare,
    decide,
    first_name_codes,
    prepare_signature,
    prepare_voter,
)

PASS_CAP = 100  # voters kept from one block

_DEFAULT_CONFIG = MatchConfig()


def _voter_keys(p: PreparedVoter) -> set[str]:
    n, a = p.name, p.address
    keys: set[str] = set()
    last_code = n.last_code
    first_codes = n.first_codes
    if a.zip:
        if last_code:
            keys.add(f"z{a.zip}|{last_code}")
        keys.update(f"f{a.zip}|{fc}" for fc in first_codes if fc)
    if a.house and a.name:
        keys.add(f"a{a.house}|{a.name}")
    if last_code:
        keys.update(f"n{last_code}|{fc}" for fc in first_codes if fc)
    return keys


def _full_name(p: PreparedVoter) -> str:
    return f"{p.name.first} {p.name.last}"


def _address_line(p: PreparedVoter) -> str:
    return f"{p.address.house} {p.address.name} {p.address.zip}"


class CandidateIndex:
    """An immutable, thread-safe (read-only after ``build``) index of one roll version."""

    __slots__ = ("_blocks", "_stats", "_voters")

    def __init__(self, voters: list[PreparedVoter], blocks: dict[str, list[int]],
                 stats: RollStats | None = None) -> None:
        self._voters = voters
        self._blocks = blocks
        self._stats = stats if stats is not None else RollStats.of(voters)

    @classmethod
    def build(cls, voters: Iterable[VoterRecord]) -> CandidateIndex:
        prepared: list[PreparedVoter] = []
        blocks: dict[str, list[int]] = {}
        stats = RollStats()
        for i, v in enumerate(voters):
            p = prepare_voter(v)
            prepared.append(p)
            stats.add(p)
            for key in _voter_keys(p):
                block = blocks.get(key)
                if block is None:
                    blocks[key] = [i]
                else:
                    block.append(i)
        return cls(prepared, blocks, stats.finish())

    def __len__(self) -> int:
        return len(self._voters)

    # -- candidates ----------------------------------------------------------------------

    def _take(self, key: str, query: str, text: Callable[[PreparedVoter], str],
              found: dict[int, None]) -> bool:
        """Add a block's members to ``found``; True when the block was cut to PASS_CAP."""
        block = self._blocks.get(key)
        if not block:
            return False
        if len(block) <= PASS_CAP:
            found.update(dict.fromkeys(block))
            return False
        voters = self._voters
        best = process.extract(query, [text(voters[i]) for i in block], scorer=fuzz.ratio,
                               limit=PASS_CAP)
        found.update(dict.fromkeys(block[j] for _, _, j in best))
        return True

    def candidates(self, sig: PreparedSignature) -> tuple[list[PreparedVoter], bool]:
        """The voters worth comparing with a signature, and whether its name is crowded."""
        found: dict[int, None] = {}
        crowded = False
        a = sig.address
        address_line = f"{a.house} {a.name} {a.zip}"
        if a.house and a.name:
            self._take(f"a{a.house}|{a.name}", f"{sig.name.first} {sig.name.last}",
                       _full_name, found)
        names: list[PersonName] = [sig.name]
        if sig.swapped.last != sig.name.last:
            names.append(sig.swapped)
        for n in names:
            last_code = n.last_code
            first_codes = [fc for fc in first_name_codes(n.first) if fc]
            if a.zip:
                if last_code:
                    self._take(f"z{a.zip}|{last_code}", n.first, _first, found)
                for fc in first_codes:
                    self._take(f"f{a.zip}|{fc}", n.last, _last, found)
            if last_code:
                for fc in first_codes:
                    if self._take(f"n{last_code}|{fc}", address_line, _address_line, found):
                        crowded = crowded or n is sig.name
        voters = self._voters
        return [voters[i] for i in found], crowded

    # -- matching ------------------------------------------------------------------------

    def match(self, sig: SignatureInput, config: MatchConfig = _DEFAULT_CONFIG) -> MatchResult:
        prepared = prepare_signature(sig)
        voters, crowded = self.candidates(prepared)
        stats = self._stats
        return decide(prepared, [compare(prepared, v, stats) for v in voters], config, crowded)

    def match_many(self, sigs: Sequence[SignatureInput],
                   config: MatchConfig = _DEFAULT_CONFIG) -> list[MatchResult]:
        return [self.match(s, config) for s in sigs]


def _first(p: PreparedVoter) -> str:
    return p.name.first


def _last(p: PreparedVoter) -> str:
    return p.name.last

