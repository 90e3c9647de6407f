"""The matching core's words: the records, their normalisation, and eligibility.

Pure: no I/O, no generated types. Names are normalised with unidecode, nameparser-style
token rules and the ``nicknames`` package, sounds with jellyfish's metaphone; addresses
with usaddress and usaddress-scourgify's USPS tables (street types, directionals, units),
tolerant of the slips a pen makes (a letter in a house number, words run together, the
street and unit lines swapped). The same code normalises voters and signatures.

``columnar`` turns a roll into coded columns, ``fs`` is the Fellegi-Sunter model and
``engine`` compares and decides in bulk; ``eligibility`` is the rule for a matched voter.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from sys import intern

import jellyfish
import usaddress
from nicknames import NickNamer
from scourgify.address_constants import (
    CITY_ABBRS,
    DIRECTIONAL_REPLACEMENTS,
    OCCUPANCY_TYPE_ABBREVIATIONS,
    STREET_TYPE_ABBREVIATIONS,
)
from unidecode import unidecode

from sigverify_common.vocab import Decision, Reason
from sigverify_matching import hypocorisms

# ---------------------------------------------------------------------------------------
# The interface
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VoterRecord:
    """One row of the voter roll, raw strings as in the CSV."""

    voter_id: str
    first_name: str
    middle_name: str
    last_name: str
    suffix: str
    birth_date: date | None
    street: str
    unit: str
    city: str
    zip: str
    county: str
    status: str  # "ACTIVE" | "INACTIVE" | "CANCELLED"
    registered_on: date | None


@dataclass(frozen=True, slots=True)
class SignatureInput:
    """One signature as printed on the petition (``county`` is the section's county)."""

    first_name: str
    middle_name: str
    last_name: str
    street: str
    unit: str
    city: str
    zip: str
    county: str
    signed_on: date | None
    birth_date: date | None = None
    deadline: date | None = None


# ScoredCandidate and MatchResult are values (never changed once made) but not frozen: a
# batch makes thousands of each, and a frozen dataclass's __init__ costs four times a plain
# one's (0.66 against 0.17 µs).
@dataclass(slots=True)
class ScoredCandidate:
    voter_id: str
    county: str
    score: float  # P(this voter signed), 0..100
    field_scores: dict[str, float]  # {"weight": bits}
    #: the match weight (bits: log2 likelihood ratio, without the prior)
    weight: float = 0.0
    #: (field, level, bits) per comparison, then ("prior", where, bits): the waterfall
    evidence: tuple[tuple[str, str, float], ...] = ()


@dataclass(slots=True)
class MatchResult:
    decision: Decision
    reason: Reason
    voter_id: str  # "" when no voter
    score: float  # P(the best candidate signed), 0..100
    candidates: tuple[ScoredCandidate, ...]  # best first, at most max_candidates


@dataclass(frozen=True, slots=True)
class MatchConfig:
    """Decision bands on the posterior probability (0..100) that the best candidate signed:
    at or above ``accept_threshold`` the signature is that voter's (then county, address
    and eligibility decide its reason); from ``review_threshold`` a person looks (when the
    voters at the signature's address in the section's county hold that much together: a
    father and son both fitting a signature without JR/SR); below, nobody on the roll
    signed it."""

    accept_threshold: float = 95.0
    review_threshold: float = 50.0
    max_candidates: int = 3


# ---------------------------------------------------------------------------------------
# Text and names
# ---------------------------------------------------------------------------------------

_NON_ALNUM = re.compile(r"[^A-Z0-9]+")
_APOSTROPHES = re.compile(r"['`]")


@lru_cache(maxsize=1 << 16)
def normalize_text(text: str) -> str:
    """ASCII (unidecode), upper case, apostrophes dropped, other punctuation a space."""
    s = _APOSTROPHES.sub("", unidecode(text or "").upper())
    return intern(" ".join(_NON_ALNUM.sub(" ", s).split()))


SUFFIXES = {
    "JR": "JR", "JUNIOR": "JR", "SR": "SR", "SENIOR": "SR", "II": "II", "2ND": "II",
    "III": "III", "3RD": "III", "IV": "IV", "4TH": "IV",
}


def normalize_suffix(text: str) -> str:
    s = normalize_text(text).replace(" ", "")
    return SUFFIXES.get(s, s)


_NICKNAMER = NickNamer()


@lru_cache(maxsize=1 << 15)
def first_name_keys(name: str) -> frozenset[str]:
    """The name and the canonical names it is a nickname of ("BOB" -> {BOB, ROBERT, ...}).

    Two first names are equivalent when their keys meet: BOB ~ ROBERT, BOB ~ ROB (both
    ROBERT), LIZ ~ ELIZABETH, but not CHRISTOPHER ~ CHRISTINA. The canonical names are the
    ``nicknames`` package's and, for Spanish names, ``hypocorisms`` (PEPE -> JOSE).
    """
    if not name:
        return frozenset()
    keys = {name}
    keys.update(intern(normalize_text(c).replace(" ", "")) for c in _NICKNAMER.canonicals_of(name))
    keys.update(intern(c) for c in hypocorisms.canonicals_of(name))
    return frozenset(keys)


@lru_cache(maxsize=1 << 16)
def phonetic(name: str) -> str:
    """Metaphone of a normalised (spaceless) name; "" for none."""
    return intern(jellyfish.metaphone(name)) if name else ""


@lru_cache(maxsize=1 << 15)
def first_name_codes(name: str) -> tuple[str, ...]:
    """Phonetic codes of a first name and its canonical forms (the blocking keys)."""
    return tuple(sorted({phonetic(k) for k in first_name_keys(name)}))


# PersonName and Address are values, but not frozen: made for every signature, and a frozen
# dataclass's __init__ costs four times a plain one's (see ScoredCandidate).
@dataclass(slots=True)
class PersonName:
    first: str  # first token ("ROBERT")
    middle: str  # first middle token, maybe an initial ("J")
    last: str  # spaceless ("DELACRUZ"), suffix removed
    last_parts: frozenset[str]  # its tokens ({"DE", "LA", "CRUZ"}) for double surnames
    suffix: str  # "JR", "SR", "II", ... or ""

    @property
    def first_keys(self) -> frozenset[str]:
        return first_name_keys(self.first)

    @property
    def first_codes(self) -> tuple[str, ...]:
        return first_name_codes(self.first)

    @property
    def last_code(self) -> str:
        return phonetic(self.last)


def _name_words(first: str, middle: str, last: str, suffix: str = ""
                ) -> tuple[list[str], list[str], list[str], str]:
    """(first, middle, last words, suffix) as ``person_name`` reads them."""
    f = normalize_text(first).split()
    m = normalize_text(middle).split()
    ln = normalize_text(last).split()
    sfx = normalize_suffix(suffix)
    while len(ln) > 1 and ln[-1] in SUFFIXES:
        sfx = sfx or SUFFIXES[ln[-1]]
        ln.pop()
    if len(f) > 1:
        m = f[1:] + m
        f = f[:1]
    return f, m, ln, sfx


@lru_cache(maxsize=1 << 16)
def person_name(first: str, middle: str, last: str, suffix: str = "") -> PersonName:
    """Normalised name parts. Extra words of the first name join the middle name ("JOHN Q");
    a trailing JR/SR/II/III/IV of the last name becomes the suffix."""
    f, m, ln, sfx = _name_words(first, middle, last, suffix)
    return PersonName(
        first=intern(f[0]) if f else "",
        middle=intern(m[0]) if m else "",
        last=intern("".join(ln)),
        last_parts=frozenset(ln),
        suffix=intern(sfx),
    )


def swapped_names(firsts: Sequence[str], lasts: Sequence[str]
                  ) -> tuple[list[str], list[str], list[str]]:
    """(first, middle, last) of each name read the other way round: what
    ``person_name(last, "", first)`` gives, without a ``PersonName`` (or a place in its
    cache) for every signature of a batch."""
    out_f: list[str] = []
    out_m: list[str] = []
    out_l: list[str] = []
    for first, last in zip(firsts, lasts, strict=True):
        f, m, ln, _ = _name_words(last, "", first)
        out_f.append(f[0] if f else "")
        out_m.append(m[0] if m else "")
        out_l.append("".join(ln))
    return out_f, out_m, out_l


# ---------------------------------------------------------------------------------------
# Addresses
# ---------------------------------------------------------------------------------------

_DIRECTIONS = {**DIRECTIONAL_REPLACEMENTS, **{v: v for v in DIRECTIONAL_REPLACEMENTS.values()}}
_STREET_TYPES = STREET_TYPE_ABBREVIATIONS
# Name words written both ways ("SAINT JAMES" / "ST JAMES", "MOUNT" / "MT"), from scourgify.
_NAME_WORDS = {v: k for k, v in CITY_ABBRS.items() if k != "VA"}
_ORDINALS = {
    "FIRST": "1ST", "SECOND": "2ND", "THIRD": "3RD", "FOURTH": "4TH", "FIFTH": "5TH",
    "SIXTH": "6TH", "SEVENTH": "7TH", "EIGHTH": "8TH", "NINTH": "9TH", "TENTH": "10TH",
}
_UNIT_WORDS = frozenset(OCCUPANCY_TYPE_ABBREVIATIONS) | frozenset(
    OCCUPANCY_TYPE_ABBREVIATIONS.values()) | {"NO", "NUM", "NUMBER", "APT", "STE", "UNIT"}
_STREET_CHARS = re.compile(r"[^A-Z0-9#/ ]+")
_HOUSE_LETTER = re.compile(r"^(\d+)-([A-Z])\b")
_UNIT_TAIL = re.compile(
    r"\s*(?:#|\b(?:APT|APARTMENT|UNIT|STE|SUITE|SPC|SPACE|RM|ROOM|LOT|TRLR|NO)\b)\s*#?\s*"
    r"([A-Z]? ?\d+ ?[A-Z]?|[A-Z])$")
_HOUSE = re.compile(r"^(\d+)([A-Z])?(?:\s+\d+/\d+)?(?:\s+|$)(.*)$")
_UNIT_LABELS = frozenset({"OccupancyType", "OccupancyIdentifier", "SubaddressType",
                          "SubaddressIdentifier"})
_NAME_LABELS = ("StreetNamePreModifier", "StreetNamePreType", "StreetName", "USPSBoxType",
                "USPSBoxID", "USPSBoxGroupType", "USPSBoxGroupID", "LandmarkName",
                "BuildingName")


@dataclass(slots=True)
class Address:
    house: str  # house number, digits only ("123"; a fraction or letter dropped); "" if none
    name: str  # street name, spaceless ("MAIN", "STJAMES", "AVENUEB")
    direction: str  # pre- or post-directional, abbreviated ("N"), or ""
    street_type: str  # USPS suffix ("ST", "AVE") or ""
    unit: str  # unit identifier only ("4" for "Apt 4", "#4", "Unit 4"); "" if none
    zip: str  # five digits (four for a postcode) or ""
    #: the street line as written, spaceless, its directionals and types written out
    #: ("1633 9NORTH UNDERWOOD CIR" -> "16339NORTHUNDERWOODCIRCLE"): for slips that split
    #: or join the parts
    line: str = ""

    def render(self) -> str:
        """The normalised street line ("123 N MAIN ST #4")."""
        parts = [self.house, self.direction, self.name, self.street_type]
        line = " ".join(p for p in parts if p)
        return f"{line} #{self.unit}" if self.unit else line


def normalize_unit(text: str) -> str:
    """The unit identifier alone: "Apt 4", "#4", "Unit 4", "apt. #4" -> "4"."""
    if not text:  # most signatures have none
        return ""
    s = unidecode(text).upper().replace("#", " ")
    words = [w for w in _NON_ALNUM.sub(" ", s).split() if w not in _UNIT_WORDS]
    return intern("".join(words))


_TYPE_WORDS = frozenset(STREET_TYPE_ABBREVIATIONS) | frozenset(STREET_TYPE_ABBREVIATIONS.values())
_TYPES_LONGEST_FIRST = sorted(_TYPE_WORDS, key=lambda t: (-len(t), t))
_ORDINAL = re.compile(r"^\d+(ST|ND|RD|TH)$")


def _plain_street(rest: str) -> tuple[str, str, str, str] | None:
    """The common case without usaddress: words of a name (letters, or an ordinal like 5TH),
    an optional leading or trailing directional, and a known street type last ("N MAIN ST",
    "SAN PABLO AVE", "5TH ST W"). None for anything else (usaddress decides)."""
    words = rest.split()
    if len(words) < 2 or "#" in rest:
        return None
    direction = ""
    if len(words) >= 3 and words[-1] in _DIRECTIONS and words[-2] in _TYPE_WORDS:
        direction = _DIRECTIONS[words.pop()]
    if words[-1] not in _TYPE_WORDS:
        return None
    stype = _STREET_TYPES.get(words.pop(), "")
    if all(w in _DIRECTIONS for w in words):
        # "N PINE", "E PARK": a name that is also a type word, the type left off (a street
        # called NORTH ST is read alike either way): usaddress decides.
        return None
    if not direction and len(words) >= 2 and words[0] in _DIRECTIONS:
        direction = _DIRECTIONS[words.pop(0)]
    for w in words:
        if not (w.isalpha() or _ORDINAL.match(w)) or w in _UNIT_WORDS or w in _TYPE_WORDS:
            return None
    name = "".join(_NAME_WORDS.get(w, _ORDINALS.get(w, _DIRECTIONS.get(w, w))) for w in words)
    return intern(name), intern(direction), intern(stype), ""


@lru_cache(maxsize=1 << 18)
def _parse_street(rest: str) -> tuple[str, str, str, str]:
    """(name, direction, type, unit) of a street line without its house number (memoised:
    usaddress is the slow part, and one street serves many houses; a plain line skips it)."""
    plain = _plain_street(rest)
    if plain is not None and plain[2]:
        return plain
    return _usaddress_street(rest)


def _usaddress_street(rest: str) -> tuple[str, str, str, str]:
    parsed = usaddress.parse("1 " + rest)[1:]
    # A unit only where a unit word says so ("APT 4", "#4"); else usaddress mistook a
    # misspelt street for one ("5TH STRET": unit 5TH of type STRET): those words are the
    # street's name.
    genuine_unit = "#" in rest or any(t.strip(",").replace("#", "") in _UNIT_WORDS
                                      for t, _ in parsed)
    labelled: dict[str, list[str]] = {}
    for token, label in parsed:
        if label in _UNIT_LABELS and not genuine_unit:
            label = "StreetName"
        labelled.setdefault(label, []).append(token.strip(",").replace("#", ""))
    name_words = [w for lab in _NAME_LABELS for w in labelled.get(lab, ())]
    if not name_words:  # nothing usaddress calls a name: keep what is not a unit or type
        name_words = [w for lab, ws in labelled.items()
                      if lab not in _UNIT_LABELS and lab != "StreetNamePostType" for w in ws]
    name = "".join(_NAME_WORDS.get(w, _ORDINALS.get(w, _DIRECTIONS.get(w, w)))
                   for w in name_words)
    direction = " ".join(
        _DIRECTIONS.get(w, w)
        for lab in ("StreetNamePreDirectional", "StreetNamePostDirectional")
        for w in labelled.get(lab, ())
    )
    stype = " ".join(_STREET_TYPES.get(w, w) for w in labelled.get("StreetNamePostType", ()))
    unit = normalize_unit(" ".join(labelled.get("OccupancyIdentifier", ())
                                   or labelled.get("SubaddressIdentifier", ())))
    return intern(name), intern(direction), intern(stype), unit


_NOT_DIGITS = re.compile(r"\D+")


@lru_cache(maxsize=1 << 14)
def normalize_zip(text: str) -> str:
    """The postal code's digits: a US zip's first five (ZIP+4 dropped); a shorter code of
    at least four digits as it is (a 4-digit postcode, or a zip missing one digit)."""
    digits = _NOT_DIGITS.sub("", text or "")
    return intern(digits[:5]) if len(digits) >= 4 else ""


_SPLIT_HOUSE = re.compile(r"^\s*(\d+)\s+(\d{1,2})(?!(?:ST|ND|RD|TH)\b)(?=[A-Z])")


def split_house_reading(street: str) -> str:
    """The street line with a house number read across a space ("453 6SMITH" as 4536
    SMITH, "269 0GRANT CIRCLE" as 2690 GRANT CIRCLE): a digit of the number written onto
    the street name. "" where the line does not read so (an ordinal street, "12 3RD ST",
    is left alone). Only another reading to look for candidates by; the line as written is
    what is compared."""
    m = _SPLIT_HOUSE.match(unidecode(street or "").upper())
    if not m:
        return ""
    up = unidecode(street).upper()
    return f"{m.group(1)}{m.group(2)} {up[m.end():]}"


# A digit keyed as the letter it looks like ("1A793" for 14793, "g220" for 9220), lower and
# upper case apart (a "b" is a 6, a "B" an 8).
_DIGIT_SHAPES = str.maketrans({
    "O": "0", "o": "0", "Q": "0", "D": "0", "I": "1", "i": "1", "l": "1", "L": "1",
    "|": "1", "Z": "2", "z": "2", "E": "3", "A": "4", "S": "5", "s": "5", "b": "6",
    "G": "6", "T": "7", "B": "8", "g": "9", "q": "9",
})


def house_digit_reading(street: str) -> str:
    """The street line with the letters of its house number read as the digits they look
    like ("1A793 KATHRYN TER" as 14793 KATHRYN TER, "g220 CARRIE DR" as 9220). "" where the
    first word is not a number of at least two digits with one or two such letters. Only
    another reading to look for candidates by (123A may be a real house)."""
    first, _, after = (street or "").strip().partition(" ")
    digits = sum(ch.isdigit() for ch in first)
    if not after or digits < 2 or not 1 <= len(first) - digits <= 2:
        return ""
    read = first.translate(_DIGIT_SHAPES)
    return f"{read} {after}" if read.isdigit() else ""


@lru_cache(maxsize=1 << 16)
def run_together_types(name: str) -> tuple[str, ...]:
    """The street name read with a street type written onto it ("ANGELICAAVENUE" as
    ANGELICA, "TIFFANYCT" as TIFFANY; "BROADWAY" as BROAD too): the names left, the
    longest type first. Which reading, if any, is right only the roll can say."""
    return tuple(name[: -len(t)] for t in _TYPES_LONGEST_FIRST
                 if len(name) - len(t) >= 3 and name.endswith(t))


@lru_cache(maxsize=1 << 17)
def normalize_address(street: str, unit: str = "", zip_code: str = "") -> Address:
    """Normalise a street line: "123 North Main Street" and "123 N MAIN ST" are one address;
    "Apt 4", "#4", "Unit 4" one unit (a unit written into the street line counts too)."""
    return _address(street, unit, zip_code, True)


def _address(street: str, unit: str, zip_code: str, may_swap: bool) -> Address:
    s = _HOUSE_LETTER.sub(r"\1\2", unidecode(street or "").upper())
    s = " ".join(_STREET_CHARS.sub(" ", s.replace(".", "")).split())
    street_unit = ""
    tail = _UNIT_TAIL.search(s)
    if tail:
        street_unit, s = normalize_unit(tail.group(1)), s[: tail.start()]
    house, letter, rest = "", "", s
    m = _HOUSE.match(s)
    if m:
        house, letter, rest = m.group(1).lstrip("0") or "0", m.group(2) or "", m.group(3)
    else:
        # A house number with a slip of the pen inside ("105B0", "1G394"): kept as written,
        # so that it is one edit from the roll's.
        first, _, after = s.partition(" ")
        digits = sum(ch.isdigit() for ch in first)
        if 3 <= len(first) <= 8 and digits >= 2 and digits >= len(first) - 1 and after:
            house, rest = first, after
    rest = rest.replace("/", " ")
    name, direction, stype, parsed_unit = _parse_street(rest) if rest else ("", "", "", "")
    if not name and not house and unit and may_swap:
        # The street line and the second line written in each other's boxes ("#19" as the
        # street, "1076 JODY LANE" as the unit): read them the other way round, once (two
        # boxes that are neither a street, "-" and "APT", read back and forth for ever).
        swapped = _address(unit, street, zip_code, False)
        if swapped.name and swapped.house:
            return swapped
    return Address(
        house=intern(house), name=name, direction=direction, street_type=stype,
        unit=normalize_unit(unit) or street_unit or parsed_unit or letter,
        zip=normalize_zip(zip_code), line=written_line(s),
    )


_LONG_DIRECTIONS = {v: k for k, v in DIRECTIONAL_REPLACEMENTS.items() if len(k) > len(v)}


def long_direction(short: str) -> str:
    """"N" -> "NORTH" ("NE" -> "NORTHEAST")."""
    return str(_LONG_DIRECTIONS.get(short, short))


def _long_street_type(word: str) -> str:
    short = _STREET_TYPES.get(word, word)
    return _LONG_TYPE_OF.get(short, word)


_LONG_TYPE_OF: dict[str, str] = {}
for _long, _short in STREET_TYPE_ABBREVIATIONS.items():
    if len(_long) > len(_LONG_TYPE_OF.get(_short, "")):
        _LONG_TYPE_OF[_short] = _long


def written_line(s: str) -> str:
    """The street line spaceless, each directional and street type written out."""
    parts = s.split(None, 1)
    if not parts:
        return ""
    return _written_word(parts[0]) + (_written_words(parts[1]) if len(parts) > 1 else "")


def _written_word(w: str) -> str:
    return (long_direction(_DIRECTIONS[w]) if w in _DIRECTIONS
            else _long_street_type(w) if w in _TYPE_WORDS else w)


@lru_cache(maxsize=1 << 16)
def _written_words(s: str) -> str:
    """``written_line`` of the words after a line's first (the house number, mostly: one
    street's line is written out once for all its houses)."""
    return "".join(_written_word(w) for w in s.split())


def normalize_county(text: str) -> str:
    words = normalize_text(text).split()
    if len(words) > 1 and words[-1] == "COUNTY":
        words.pop()
    return intern(" ".join(words))


# ---------------------------------------------------------------------------------------
# Eligibility
# ---------------------------------------------------------------------------------------

def eligibility(voter: VoterRecord, sig: SignatureInput) -> Reason:
    """The reason for a signature matched to this voter."""
    status = (voter.status or "").strip().upper()
    if status == "CANCELLED":
        return Reason.VOTER_CANCELLED
    if status == "INACTIVE":
        return Reason.VOTER_INACTIVE
    if sig.signed_on and voter.registered_on and sig.signed_on < voter.registered_on:
        return Reason.SIGNED_BEFORE_REGISTRATION
    if sig.deadline and sig.signed_on and sig.signed_on > sig.deadline:
        return Reason.SIGNED_AFTER_DEADLINE
    return Reason.MATCHED
