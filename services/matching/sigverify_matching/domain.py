"""The matching core: normalisation, field scoring, eligibility and the decision.

Pure: no I/O, no generated types. ``index.CandidateIndex`` finds candidates; this module
says how alike a signature and a voter are and what that means.

Scoring is in the spirit of Fellegi-Sunter: every compared field adds an agreement weight
(or, when it disagrees, a negative one; partial agreement interpolates), and the score is
the summed weight over the most it could have been, as 0..100. Fields missing on either side
are neutral (neither counted nor charged). A birth date, when both sides have one, weighs
heavily either way. The unit, the city and the county never change the score: a wrong or
missing unit and a missing city are tolerated by law (2 CCR 20931), and the county is a
question of eligibility that ``decide`` asks separately.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from sys import intern

import jellyfish
import usaddress
from nicknames import NickNamer
from rapidfuzz.distance import OSA, Indel, JaroWinkler
from scourgify.address_constants import (
    CITY_ABBRS,
    DIRECTIONAL_REPLACEMENTS,
    OCCUPANCY_TYPE_ABBREVIATIONS,
    STREET_TYPE_ABBREVIATIONS,
)
from unidecode import unidecode

from sigverify_common.vocab import Decision, Reason

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


@dataclass(frozen=True, slots=True)
class ScoredCandidate:
    voter_id: str
    county: str
    score: float  # 0..100
    field_scores: dict[str, float]  # first, middle, last, suffix, address, zip, birth_date


@dataclass(frozen=True, slots=True)
class MatchResult:
    decision: Decision
    reason: Reason
    voter_id: str  # "" when no voter
    score: float
    candidates: tuple[ScoredCandidate, ...]  # best first, at most max_candidates


@dataclass(frozen=True, slots=True)
class MatchConfig:
    # An exact name and address scores 100; one small slip (a name typo of one letter in a
    # long name, a zip with one wrong digit, a middle initial for a middle name) stays above
    # 85. A household member with another first name, or the same name at another address,
    # scores about 45 at most; a first name one letter off in a short name ("JOHN"/"JOAN")
    # about 52. Between 60 and 85 lie the cases a person should look at (one-letter first
    # names in long names, a contradicting middle name, a wholly wrong zip).
    accept_threshold: float = 85.0
    review_threshold: float = 60.0
    max_candidates: int = 5


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
    ROBERT), LIZ ~ ELIZABETH, but not CHRISTOPHER ~ CHRISTINA.
    """
    if not name:
        return frozenset()
    keys = {name}
    keys.update(intern(normalize_text(c).replace(" ", "")) for c in _NICKNAMER.canonicals_of(name))
    return frozenset(keys)


@lru_cache(maxsize=1 << 16)
def phonetic(name: str) -> str:
    """Metaphone of a normalised (spaceless) name; "" for none."""
    return intern(jellyfish.metaphone(name)) if name else ""


@lru_cache(maxsize=1 << 15)
def first_name_codes(name: str) -> tuple[str, ...]:
    """Phonetic codes of a first name and its canonical forms (the blocking keys)."""
    return tuple(sorted({phonetic(k) for k in first_name_keys(name)}))


@dataclass(frozen=True, slots=True)
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


@lru_cache(maxsize=1 << 16)
def person_name(first: str, middle: str, last: str, suffix: str = "") -> PersonName:
    """Normalised name parts. Extra words of the first name join the middle name ("JOHN Q");
    a trailing JR/SR/II/III/IV of the last name becomes the suffix."""
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
    return PersonName(
        first=intern(f[0]) if f else "",
        middle=intern(m[0]) if m else "",
        last=intern("".join(ln)),
        last_parts=frozenset(ln),
        suffix=intern(sfx),
    )


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


@dataclass(frozen=True, slots=True)
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
    s = unidecode(text or "").upper().replace("#", " ")
    words = [w for w in _NON_ALNUM.sub(" ", s).split() if w not in _UNIT_WORDS]
    return intern("".join(words))


_TYPE_WORDS = frozenset(STREET_TYPE_ABBREVIATIONS) | frozenset(STREET_TYPE_ABBREVIATIONS.values())
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


def normalize_zip(text: str) -> str:
    """The postal code's digits: a US zip's first five (ZIP+4 dropped); a shorter code of
    at least four digits as it is (a 4-digit postcode, or a zip missing one digit)."""
    digits = _NOT_DIGITS.sub("", text or "")
    return intern(digits[:5]) if len(digits) >= 4 else ""


@lru_cache(maxsize=1 << 17)
def normalize_address(street: str, unit: str = "", zip_code: str = "") -> Address:
    """Normalise a street line: "123 North Main Street" and "123 N MAIN ST" are one address;
    "Apt 4", "#4", "Unit 4" one unit (a unit written into the street line counts too)."""
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
    if not name and not house and unit:
        # The street line and the second line written in each other's boxes ("#19" as the
        # street, "1076 JODY LANE" as the unit): read them the other way round.
        swapped = normalize_address(unit, street, zip_code)
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
    return _LONG_DIRECTIONS.get(short, short)


def _long_street_type(word: str) -> str:
    short = _STREET_TYPES.get(word, word)
    return _LONG_TYPE_OF.get(short, word)


_LONG_TYPE_OF: dict[str, str] = {}
for _long, _short in STREET_TYPE_ABBREVIATIONS.items():
    if len(_long) > len(_LONG_TYPE_OF.get(_short, "")):
        _LONG_TYPE_OF[_short] = _long


def written_line(s: str) -> str:
    """The street line spaceless, each directional and street type written out."""
    words = s.split()
    return "".join(long_direction(_DIRECTIONS[w]) if w in _DIRECTIONS
                   else _long_street_type(w) if w in _TYPE_WORDS else w for w in words)


def normalize_county(text: str) -> str:
    words = normalize_text(text).split()
    if len(words) > 1 and words[-1] == "COUNTY":
        words.pop()
    return intern(" ".join(words))


# ---------------------------------------------------------------------------------------
# Prepared records
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PreparedVoter:
    record: VoterRecord
    name: PersonName
    address: Address
    county: str  # normalised


@dataclass(frozen=True, slots=True)
class PreparedSignature:
    input: SignatureInput
    name: PersonName
    swapped: PersonName  # first and last exchanged (printed in the wrong boxes)
    address: Address
    county: str


def prepare_voter(v: VoterRecord) -> PreparedVoter:
    return PreparedVoter(
        record=v,
        name=person_name(v.first_name or "", v.middle_name or "", v.last_name or "",
                         v.suffix or ""),
        address=normalize_address(v.street or "", v.unit or "", v.zip or ""),
        county=normalize_county(v.county or ""),
    )


def prepare_signature(s: SignatureInput) -> PreparedSignature:
    name = person_name(s.first_name, s.middle_name, s.last_name)
    swapped = person_name(s.last_name, s.middle_name, s.first_name)
    if swapped.suffix == "" and name.suffix:
        swapped = PersonName(swapped.first, swapped.middle, swapped.last, swapped.last_parts,
                             name.suffix)
    return PreparedSignature(
        input=s, name=name, swapped=swapped,
        address=normalize_address(s.street, s.unit, s.zip), county=normalize_county(s.county),
    )


# ---------------------------------------------------------------------------------------
# What the roll itself says about names and streets
# ---------------------------------------------------------------------------------------

# A spelling that this many voters per million have (and at least one) is a real name, not a
# slip of the pen (a statewide roll has its own typos, so one occurrence is not enough there).
KNOWN_PER_MILLION = 0.5


@dataclass(slots=True)
class RollStats:
    """Frequencies from the roll itself, for two Fellegi-Sunter questions:

    - is a written spelling a real name (street) or a slip of the pen? "AAMNDA" is in no
      voter's name, so one edit from AMANDA is a typo and agrees; "JOAN" is a name many voters
      have, so one edit from JOHN is another person;
    - how many people would share this name by chance? ``namesakes`` estimates it from the
      frequency of the first and last name (and the middle name, when both sides agree on
      it): a rare name is evidence of identity, a common one is not.
    """

    voters: int = 0
    given: dict[str, int] = field(default_factory=dict)  # first and full middle names
    last: dict[str, int] = field(default_factory=dict)
    initials: dict[str, int] = field(default_factory=dict)  # first letters of middle names
    streets: set[str] = field(default_factory=set)  # "COUNTY|STREETNAME"
    # voters per nickname key (first_name_keys): how many a nickname could be ("PAT": every
    # PATRICIA, PATRICK, PATSY ...); filled by ``finish``
    given_keys: dict[str, int] = field(default_factory=dict)
    known_min: int = 1  # see KNOWN_PER_MILLION; set by ``finish``

    def add(self, v: PreparedVoter) -> None:
        n = v.name
        self.voters += 1
        given = self.given
        if n.first:
            given[n.first] = given.get(n.first, 0) + 1
        if len(n.middle) > 1:
            given[n.middle] = given.get(n.middle, 0) + 1
        if n.middle:
            self.initials[n.middle[0]] = self.initials.get(n.middle[0], 0) + 1
        if n.last:
            self.last[n.last] = self.last.get(n.last, 0) + 1
        if v.address.name:
            self.streets.add(f"{v.county}|{v.address.name}")

    def finish(self) -> RollStats:
        """Derive the nickname-key counts once every voter is added."""
        keys: dict[str, int] = {}
        for name, k in self.given.items():
            for key in first_name_keys(name):
                keys[key] = keys.get(key, 0) + k
        self.given_keys = keys
        self.known_min = max(1, math.ceil(self.voters * KNOWN_PER_MILLION / 1e6))
        return self

    @classmethod
    def of(cls, voters: Iterable[PreparedVoter]) -> RollStats:
        stats = cls()
        for v in voters:
            stats.add(v)
        return stats.finish()

    def known_given(self, name: str) -> bool:
        return self.given.get(name, 0) >= self.known_min

    def known_last(self, name: str) -> bool:
        return self.last.get(name, 0) >= self.known_min

    def known_street(self, county: str, name: str) -> bool:
        return f"{county}|{name}" in self.streets

    def namesakes(self, voter: PersonName, middle_agrees: str, written_first: str = "") -> float:
        """Expected number of voters who would bear this name by chance (independence of
        first, middle and last name); ``middle_agrees``: "full", "initial" or "";
        ``written_first``: a nickname written for the voter's first name, which any voter
        whose name it may stand for would match."""
        n = max(1, self.voters)
        count = self.given.get(voter.first, 1)
        if written_first:
            count = max(count, sum(self.given_keys.get(k, 0) for k in first_name_keys(written_first)))
        f = count / n
        lst = self.last.get(voter.last, 1) / n
        est = n * f * lst
        if middle_agrees == "full":
            est *= self.given.get(voter.middle, 1) / n
        elif middle_agrees == "initial":
            est *= self.initials.get(voter.middle[:1], 1) / n
        return est


# ---------------------------------------------------------------------------------------
# Field comparison and the score
# ---------------------------------------------------------------------------------------

# (agreement weight, disagreement weight); similarities between (lo, hi) interpolate.
W_LAST = (10.0, -6.0)
W_FIRST = (8.0, -10.0)
W_FIRST_INITIAL = 4.0  # an initial for a first name agrees, but weakly
W_MIDDLE = (3.0, -4.0)
W_MIDDLE_INITIAL = 2.0
W_ADDRESS = (8.0, -8.0)
W_ZIP = (2.0, -2.0)
W_ZIP_ONE_DIGIT = 0.5
W_BIRTH = (10.0, -20.0)
W_SUFFIX = (2.0, -8.0)
W_SUFFIX_ONLY_VOTER = -1.0  # "JOHN SMITH" prefers the father to "JOHN SMITH JR"
W_SUFFIX_ONLY_SIGNATURE = -2.0
W_UNIT = 0.3  # a tie-breaker only: a wrong or missing unit is tolerated
W_SWAPPED = 0.5  # first and last names in each other's boxes

FIRST_RANGE = (0.70, 0.90)  # OSA similarity: one letter in four disagrees, in ten agrees
LAST_RANGE = (0.82, 0.94)  # Jaro-Winkler similarity
ADDRESS_RANGE = (0.60, 0.85)

STRONG_FIRST = 0.85  # "same person by name"
STRONG_LAST = 0.90
ADDRESS_AGREES = 0.85  # address agreement for a MATCH
ADDRESS_DIFFERS = 0.60  # below this an address is "clearly different"
AMBIGUITY_MARGIN = 1.0  # two acceptable voters this close: a person decides
# A spelling that is no name in the roll, one edit from the voter's: a slip of the pen. Worth
# most, not all, of an agreement (a first-name typo weighs about 6 of 8).
TYPO_FIRST = 0.88
TYPO_LAST = 0.92
TYPO_STREET = 0.90
KNOWN_LAST_CAP = 0.89  # two real surnames that look alike (VELASQUEZ/VELAZQUEZ): not strong
# Expected chance namesakes (RollStats.namesakes) below which a name alone says who someone
# is: enough to say "registered at another address" or "in another county".
# Odds: unregistered signers outnumber those registered elsewhere about 2.4 to 1 (DOMAIN.md,
# Los Angeles 2022: 88,464 not registered against 32,187 + 5,374), and a unique namesake
# is 1/expected-namesakes times likelier for someone registered; break-even near 0.4. Lean
# to NOT_REGISTERED, the reason that claims least.
RARE_NAME = 0.25
DOMINANCE = 20.0  # likelihood ratio (of expected namesakes) that singles out one namesake


def _lerp(sim: float, lo: float, hi: float, weights: tuple[float, float]) -> float:
    agree, disagree = weights
    if sim >= hi:
        return agree
    if sim <= lo:
        return disagree
    return disagree + (agree - disagree) * (sim - lo) / (hi - lo)


def _one_edit(a: str, b: str) -> bool:
    """One substitution, insertion, deletion or transposition of neighbours apart."""
    return OSA.distance(a, b, score_cutoff=1) <= 1


def first_similarity(a: str, b: str, known: bool | None = None) -> float:
    """0..1; nicknames agree fully; an initial agrees with a name it begins (0.9).

    ``known``: ``a``, the written name, is a real given name of the roll (None: not known).
    When it is not, one edit from ``b`` is a slip of the pen (TYPO_FIRST); when it is, "JOAN"
    for "JOHN" is another person and only the edit similarity counts.
    """
    if a == b:
        return 1.0
    if not a or not b:
        return 0.0
    if len(a) == 1 or len(b) == 1:
        return 0.9 if a[0] == b[0] else 0.0
    if first_name_keys(a) & first_name_keys(b):
        return 1.0
    sim = OSA.normalized_similarity(a, b)
    if known is False and max(len(a), len(b)) >= 4 and _one_edit(a, b):
        return max(sim, TYPO_FIRST)
    return sim


def last_similarity(a: PersonName, b: PersonName, known: bool | None = None) -> float:
    """0..1 (Jaro-Winkler). ``known``: ``a.last`` is a surname of the roll (None: not known).
    When it is not, one edit or the same sound is a misspelling; two real surnames that
    merely look or sound alike (CHEN, CHANEY; VELASQUEZ, VELAZQUEZ) are two families."""
    if a.last == b.last:
        return 1.0
    if not a.last or not b.last:
        return 0.0
    sim = JaroWinkler.normalized_similarity(a.last, b.last)
    if known is False and max(len(a.last), len(b.last)) >= 4 and _one_edit(a.last, b.last):
        sim = max(sim, TYPO_LAST)
    if known is True:
        sim = min(sim, KNOWN_LAST_CAP)
    elif sim < 0.93 and len(a.last) > 2 and phonetic(a.last) == phonetic(b.last):
        sim = 0.93  # SMYTHE for SMITH
    if sim < 0.92 and (a.last in b.last_parts or b.last in a.last_parts):
        sim = 0.92  # GARCIA / GARCIA LOPEZ
    return sim


def address_similarity(a: Address, b: Address, known: bool | None = None) -> float:
    """0..1. Another house number is another address (0). Abbreviations are normalised
    away; a missing directional or street type costs nothing, a contradicting one a lot.
    ``known``: ``a.name`` is a street of the county (None: not known); when it is not, one
    edit from ``b.name`` is a misspelling of it."""
    if a.house != b.house and a.house and b.house:
        return 0.0
    if not a.name or not b.name:
        return 0.0
    if a.name == b.name:
        sim = 1.0
    else:
        sim = Indel.normalized_similarity(a.name, b.name)
        if known is False and len(b.name) >= 4 and _one_edit(a.name, b.name):
            sim = max(sim, TYPO_STREET)
    if a.direction and b.direction and a.direction != b.direction:
        sim *= 0.5  # N MAIN and S MAIN are two streets
    if a.street_type and b.street_type and a.street_type != b.street_type:
        sim *= 0.85
    if a.house != b.house:  # one side has no house number
        sim *= 0.7
    return sim


def zip_similarity(a: str, b: str) -> float | None:
    if not a or not b:
        return None
    if a == b:
        return 1.0
    return 0.5 if sum(x != y for x, y in zip(a, b, strict=True)) == 1 else 0.0


def birth_similarity(a: date | None, b: date | None) -> float | None:
    if a is None or b is None:
        return None
    if a == b:
        return 1.0
    if a.year == b.year and ((a.month, a.day) == (b.day, b.month) or a.month == b.month
                             or a.day == b.day):
        return 0.5  # day and month swapped, or one of them misread
    return 0.0


@dataclass(frozen=True, slots=True)
class Comparison:
    """A signature against one voter: the score, per-field similarities, and the facts the
    decision needs."""

    voter: PreparedVoter
    score: float
    field_scores: dict[str, float] = field(hash=False)
    first: float  # 0..1
    last: float
    address: float
    birth_conflict: bool
    suffix_conflict: bool
    middle_conflict: bool = False  # two full middle names that are not one name
    first_spelled: bool = False  # the first name as written (or misspelt), no initial
    birth_agrees: bool = False
    namesakes: float = 0.0  # voters expected to bear this name by chance (0: not known)

    @property
    def name_strong(self) -> bool:
        """The same person by name (an initial for the first name is enough)."""
        return (self.first >= STRONG_FIRST and self.last >= STRONG_LAST
                and not self.birth_conflict and not self.suffix_conflict)

    @property
    def full_name_strong(self) -> bool:
        """The same person by full name: the first name written out (a nickname will do, its
        rarity is judged by every name it may stand for), no contradicting middle name."""
        return self.name_strong and self.first_spelled and not self.middle_conflict

    @property
    def identified(self) -> bool:
        """The name (with the birth date when there is one) says who this is even at another
        address: a full-name match on a name rare enough that a chance namesake is unlikely,
        or an agreeing birth date."""
        return self.full_name_strong and (self.birth_agrees or self.namesakes < RARE_NAME)

    def candidate(self) -> ScoredCandidate:
        v = self.voter.record
        return ScoredCandidate(voter_id=v.voter_id, county=v.county, score=self.score,
                               field_scores=dict(self.field_scores))


@dataclass(slots=True)
class _Names:
    w: float
    wmax: float
    first: float
    last: float
    fs: dict[str, float]
    suffix_conflict: bool
    middle: str  # "full" / "initial" agreement, "conflict", or ""
    spelled: bool  # first names alike as spelt (not through an initial or a nickname)
    nickname: bool  # first names alike through a nickname
    swapped: bool = False


def _known(stats: RollStats | None, test: Callable[[str], bool], written: str) -> bool | None:
    return None if stats is None else test(written)


def compare_names(sig: PersonName, voter: PersonName, stats: RollStats | None = None) -> _Names:
    w = wmax = 0.0
    spelled = nickname = False
    fs: dict[str, float] = {}
    last = last_similarity(sig, voter, _known(stats, stats.known_last, sig.last)
                           if stats else None)
    w += _lerp(last, *LAST_RANGE, W_LAST)
    wmax += W_LAST[0]
    fs["last"] = round(100 * last, 1)
    first = 0.0
    if sig.first and voter.first:
        first = first_similarity(sig.first, voter.first, _known(
            stats, stats.known_given, sig.first) if stats else None)
        initial = (len(sig.first) == 1 or len(voter.first) == 1) and first > 0
        spelled = not initial and (sig.first == voter.first or not (
            first_name_keys(sig.first) & first_name_keys(voter.first)))
        nickname = not initial and not spelled
        w += W_FIRST_INITIAL if initial else _lerp(first, *FIRST_RANGE, W_FIRST)
        wmax += W_FIRST[0]
        fs["first"] = round(100 * first, 1)
    middle = ""
    if sig.middle and voter.middle:
        wmax += W_MIDDLE[0]
        if sig.middle == voter.middle:
            w += W_MIDDLE[0]
            fs["middle"] = 100.0
            middle = "full" if len(sig.middle) > 1 else "initial"
        elif (len(sig.middle) == 1 or len(voter.middle) == 1) and sig.middle[0] == voter.middle[0]:
            w += W_MIDDLE_INITIAL
            fs["middle"] = 90.0
            middle = "initial"
        else:
            msim = first_similarity(sig.middle, voter.middle, _known(
                stats, stats.known_given, sig.middle) if stats else None)
            w += _lerp(msim, *FIRST_RANGE, W_MIDDLE)
            fs["middle"] = round(100 * msim, 1)
            if msim >= STRONG_FIRST:
                middle = "full" if min(len(sig.middle), len(voter.middle)) > 1 else "initial"
            else:
                middle = "conflict"
    conflict = False
    if sig.suffix and voter.suffix:
        wmax += W_SUFFIX[0]
        conflict = sig.suffix != voter.suffix
        w += W_SUFFIX[1] if conflict else W_SUFFIX[0]
        fs["suffix"] = 0.0 if conflict else 100.0
    elif voter.suffix:
        w += W_SUFFIX_ONLY_VOTER
    elif sig.suffix:
        w += W_SUFFIX_ONLY_SIGNATURE
    return _Names(w, wmax, first, last, fs, conflict, middle, spelled, nickname)


def _swap_may_win(swapped: PersonName, voter: PersonName) -> bool:
    """Whether reading the names swapped can make the last names agree (the swap is only
    worth scoring then; an upper bound of ``last_similarity``)."""
    if swapped.last == voter.last:
        return True
    if JaroWinkler.normalized_similarity(swapped.last, voter.last) >= STRONG_LAST:
        return True
    return (_one_edit(swapped.last, voter.last) or swapped.last in voter.last_parts
            or voter.last in swapped.last_parts or phonetic(swapped.last) == phonetic(voter.last))


def compare(sig: PreparedSignature, voter: PreparedVoter, stats: RollStats | None = None
            ) -> Comparison:
    """Score a signature against a voter (0..100), trying the names swapped as well.

    ``stats``: the roll's name and street frequencies (``RollStats``); without them no
    spelling is taken for a typo and every name counts as rare."""
    nm = compare_names(sig.name, voter.name, stats)
    if (sig.swapped.last != sig.name.last and (nm.first < STRONG_FIRST or nm.last < STRONG_LAST)
            and _swap_may_win(sig.swapped, voter.name)):
        sw = compare_names(sig.swapped, voter.name, stats)
        if sw.w - W_SWAPPED > nm.w:
            nm = sw
            nm.w -= W_SWAPPED
            nm.swapped = True
    w, wmax, fs = nm.w, nm.wmax, nm.fs
    sa, va = sig.address, voter.address
    known_street = stats.known_street(sig.county, sa.name) if stats else None
    addr = address_similarity(sa, va, known_street)
    w += _lerp(addr, *ADDRESS_RANGE, W_ADDRESS)
    wmax += W_ADDRESS[0]
    fs["address"] = round(100 * addr, 1)
    if sa.unit and sa.unit == va.unit and addr >= ADDRESS_AGREES:
        w += W_UNIT
    zsim = zip_similarity(sa.zip, va.zip)
    if zsim is not None:
        wmax += W_ZIP[0]
        w += W_ZIP_ONE_DIGIT if zsim == 0.5 else W_ZIP[0] if zsim == 1.0 else W_ZIP[1]
        fs["zip"] = 100 * zsim
    bsim = birth_similarity(sig.input.birth_date, voter.record.birth_date)
    if bsim is not None and bsim != 0.5:  # a date half right (day/month swapped) is neutral
        wmax += W_BIRTH[0]
        w += W_BIRTH[0] if bsim == 1.0 else W_BIRTH[1]
        fs["birth_date"] = 100 * bsim
    score = round(100 * min(1.0, max(0.0, w / wmax)), 2)
    namesakes = 0.0
    if stats is not None:
        written = (sig.swapped if nm.swapped else sig.name).first if nm.nickname else ""
        namesakes = stats.namesakes(voter.name, nm.middle if nm.middle != "conflict" else "",
                                    written)
    return Comparison(voter=voter, score=score, field_scores=fs, first=nm.first, last=nm.last,
                      address=addr, birth_conflict=bsim == 0.0, suffix_conflict=nm.suffix_conflict,
                      middle_conflict=nm.middle == "conflict", birth_agrees=bsim == 1.0,
                      first_spelled=nm.spelled or nm.nickname,
                      namesakes=namesakes)


# ---------------------------------------------------------------------------------------
# Eligibility and the decision
# ---------------------------------------------------------------------------------------

_STATUS_RANK = {"ACTIVE": 0, "INACTIVE": 1, "CANCELLED": 2}


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


def _order(c: Comparison) -> tuple[float, int, str]:
    status = _STATUS_RANK.get((c.voter.record.status or "").strip().upper(), 3)
    return (-c.score, status, c.voter.record.voter_id)


def decide(sig: PreparedSignature, comparisons: Sequence[Comparison], config: MatchConfig,
           crowded: bool = False) -> MatchResult:
    """The decision over the compared candidates (``crowded``: the name is so common that
    not every voter of that name was compared)."""
    ranked = sorted(comparisons, key=_order)
    shown = tuple(c.candidate() for c in ranked[: max(0, config.max_candidates)])

    def result(decision: Decision, reason: Reason, c: Comparison | None) -> MatchResult:
        return MatchResult(decision=decision, reason=reason,
                           voter_id=c.voter.record.voter_id if c else "",
                           score=c.score if c else (ranked[0].score if ranked else 0.0),
                           candidates=shown)

    county = sig.county
    # 1. The signer's own registration in the section's county.
    here = [c for c in ranked if c.voter.county == county and c.name_strong
            and c.address >= ADDRESS_AGREES and c.score >= config.accept_threshold]
    if here:
        best = here[0]
        rank = _STATUS_RANK.get(best.voter.record.status.strip().upper(), 3)
        rival = next((c for c in here[1:]
                      if _STATUS_RANK.get(c.voter.record.status.strip().upper(), 3) == rank), None)
        if rival is not None and best.score - rival.score < AMBIGUITY_MARGIN:
            return result(Decision.REVIEW, Reason.PENDING_REVIEW, best)  # Jr or Sr? twins?
        return result(Decision.MATCH, eligibility(best.voter.record, sig.input), best)
    strong = [c for c in ranked if c.name_strong]
    # 2. Registered at this very address, in another county: the address is the evidence.
    there = [c for c in strong if c.voter.county != county and c.address >= ADDRESS_AGREES
             and c.score >= config.review_threshold]
    if there:
        return result(Decision.NO_MATCH, Reason.WRONG_COUNTY, there[0])
    # 3. Registered at another address (in this county: ADDRESS_MISMATCH; elsewhere:
    # WRONG_COUNTY), when the name says who it is: a full-name namesake whose name is rare
    # enough (or whose birth date agrees) that a chance namesake is unlikely, and whom no
    # other namesake rivals (another voter of that name counts unless the middle name makes
    # this one DOMINANCE times likelier). A candidate at the signer's own address worth a
    # look beats a namesake elsewhere.
    at_address = any(c.address >= ADDRESS_AGREES and c.score >= config.review_threshold
                     for c in ranked)
    full = sorted((c for c in strong if c.full_name_strong), key=lambda c: c.namesakes)
    if not crowded and not at_address and full and full[0].identified and all(
            o.namesakes > full[0].namesakes and o.namesakes >= DOMINANCE * full[0].namesakes
            for o in full[1:]):
        c = full[0]
        if c.voter.county != county:
            return result(Decision.NO_MATCH, Reason.WRONG_COUNTY, c)
        if c.address < ADDRESS_DIFFERS:
            return result(Decision.NO_MATCH, Reason.ADDRESS_MISMATCH, c)
    # 4. Close enough for a person to look at.
    for c in ranked:
        if c.score < config.review_threshold:
            break
        if c.name_strong and c.address < ADDRESS_DIFFERS:
            continue  # a namesake elsewhere is no evidence that this signer is registered
        return result(Decision.REVIEW, Reason.PENDING_REVIEW, c)
    return result(Decision.NO_MATCH, Reason.NOT_REGISTERED, None)
