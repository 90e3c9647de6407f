"""Synthetic voter rolls and petition batches with known truth, and scoring against that truth.

``generate`` writes a voter roll, signature batches (one county per batch file) and a truth
file that says, for every batch row, what a correct verification must decide and why.
``compare`` (in ``sigverify_cli.scoring``, re-exported here) scores the system's decisions
against the truth. Pure Python: the only I/O is
writing and reading the CSV files.

Everything is deterministic given ``SynthSpec.seed``: faker is seeded per instance and every
random choice goes through one ``random.Random``; sets are sorted before anything is drawn
from them, so ``PYTHONHASHSEED`` does not matter.

The mix and the noise are the module constants below; ``_generate`` takes another mix for
experiments (``SIGNED_BEFORE_REGISTRATION`` is supported but 0 by default, because the brief's
mix has no room for it and DOMAIN.md lets it be reported as NOT_REGISTERED).
"""

from __future__ import annotations

import csv
import math
import random
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from functools import cache
from itertools import accumulate
from pathlib import Path
from typing import TypeVar

from faker import Faker
from faker.providers.person.en_US import Provider as _PersonProvider
from nicknames import NickNamer

# Scoring lives in its own module; these names stay importable from here.
from sigverify_cli.scoring import MISSING as MISSING
from sigverify_cli.scoring import Accuracy as Accuracy
from sigverify_cli.scoring import compare as compare
from sigverify_cli.scoring import format_accuracy as format_accuracy

_T = TypeVar("_T")

# --------------------------------------------------------------------------- tunables

#: Share of each expected reason among the signatures (sums to 1).
MIX: dict[str, float] = {
    "MATCHED": 0.74,
    "NOT_REGISTERED": 0.10,
    "ADDRESS_MISMATCH": 0.03,
    "WRONG_COUNTY": 0.03,
    "VOTER_INACTIVE": 0.03,
    "VOTER_CANCELLED": 0.01,
    "DUPLICATE": 0.04,
    "INCOMPLETE": 0.01,
    "SIGNED_AFTER_DEADLINE": 0.01,
    "SIGNED_BEFORE_REGISTRATION": 0.0,
}
#: Roll status shares.
STATUS_SHARES: tuple[tuple[str, float], ...] = (
    ("ACTIVE", 0.92), ("INACTIVE", 0.06), ("CANCELLED", 0.02),
)
#: Voters per household (spouse, adult children share the address and the surname).
HOUSEHOLD_SIZES: tuple[tuple[int, float], ...] = ((1, 0.34), (2, 0.36), (3, 0.18), (4, 0.12))
UNIT_SHARE = 0.25                 # addresses with an apartment/unit
EMPTY_BIRTH_SHARE = 0.03          # voters whose birth_date is unknown in the roll
NAMESAKE_SHARE = 0.15             # households with 2+ men where a son is his father's JR
MIDDLE_SHARES: tuple[tuple[str, float], ...] = (("full", 0.72), ("initial", 0.10), ("none", 0.18))
COMMON_NAME = ("JOHN", "SMITH")   # several of them in one zip per county
COMMON_NAME_ZIPS = 2
COMMON_NAME_HOUSEHOLDS = (3, 5)
VOTERS_PER_ZIP = 1_500
ZIPS_PER_CITY = 3
STREETS_PER_ZIP = 25
REGISTRATION_START = date(1990, 1, 1)
CIRCULATION_DAYS = 180            # signatures are collected in this many days before deadline
LATE_DAYS = 30                    # after-deadline signatures are at most this late
ONLINE_SHARE = 0.10
CIRCULATORS_PER_COUNTY = (10, 30)
BAD_CIRCULATOR_SHARE = 0.35       # of NOT_REGISTERED rows go to one circulator per county
SUFFIX_WRITTEN_SHARE = 0.5        # voters with JR/SR (not namesakes) who write it after the last
#: Weights for 0, 1, 2 noise kinds on valid-person rows (MATCHED, DUPLICATE, late).
VALID_NOISE_COUNTS = (0.40, 0.38, 0.22)
#: Weights for 0, 1 light noise kinds on the other rows.
OTHER_NOISE_COUNTS = (0.60, 0.40)
NOISE_WEIGHTS: dict[str, float] = {
    "case": 3, "punct": 2, "typo_first": 2, "typo_last": 2, "typo_street": 2, "nickname": 3,
    "middle_initial": 3, "middle_dropped": 4, "swap_names": 1, "street_abbrev": 4,
    "unit_style": 3, "unit_dropped": 2, "zip_digit": 1, "city_dropped": 2,
}
LIGHT_NOISE = frozenset({
    "case", "punct", "middle_initial", "middle_dropped", "street_abbrev", "unit_style",
    "city_dropped",
})
#: Roughly the relative registered-voter counts of California counties (millions).
COUNTY_WEIGHTS: dict[str, float] = {
    "Los Angeles": 5.7, "San Diego": 1.9, "Orange": 1.7, "Riverside": 1.2,
    "San Bernardino": 1.1, "Santa Clara": 1.0, "Alameda": 0.9, "Sacramento": 0.9,
    "Contra Costa": 0.7, "San Francisco": 0.5, "Fresno": 0.5, "Kern": 0.45,
}
DEFAULT_COUNTY_WEIGHT = 0.4
#: California's 58 counties, for a state-scale run (``SynthSpec(counties=CALIFORNIA_COUNTIES)``).
CALIFORNIA_COUNTIES: tuple[str, ...] = (
    "Alameda", "Alpine", "Amador", "Butte", "Calaveras", "Colusa", "Contra Costa", "Del Norte",
    "El Dorado", "Fresno", "Glenn", "Humboldt", "Imperial", "Inyo", "Kern", "Kings", "Lake",
    "Lassen", "Los Angeles", "Madera", "Marin", "Mariposa", "Mendocino", "Merced", "Modoc",
    "Mono", "Monterey", "Napa", "Nevada", "Orange", "Placer", "Plumas", "Riverside",
    "Sacramento", "San Benito", "San Bernardino", "San Diego", "San Francisco", "San Joaquin",
    "San Luis Obispo", "San Mateo", "Santa Barbara", "Santa Clara", "Santa Cruz", "Shasta",
    "Sierra", "Siskiyou", "Solano", "Sonoma", "Stanislaus", "Sutter", "Tehama", "Trinity",
    "Tulare", "Tuolumne", "Ventura", "Yolo", "Yuba",
)

# --------------------------------------------------------------------------- formats

ROLL_COLUMNS = (
    "voter_id", "first_name", "middle_name", "last_name", "suffix", "birth_date", "street",
    "unit", "city", "zip", "county", "status", "registered_on",
)
BATCH_COLUMNS = (
    "line", "first_name", "middle_name", "last_name", "street", "unit", "city", "zip",
    "signed_on", "circulator_id", "source",
)
TRUTH_COLUMNS = ("batch_file", "line", "expected_status", "expected_reason", "voter_id", "noise")
REASONS = (
    "MATCHED", "NOT_REGISTERED", "ADDRESS_MISMATCH", "WRONG_COUNTY", "VOTER_INACTIVE",
    "VOTER_CANCELLED", "SIGNED_BEFORE_REGISTRATION", "SIGNED_AFTER_DEADLINE", "DUPLICATE",
    "INCOMPLETE",
)


@dataclass(frozen=True)
class SynthSpec:
    voters: int = 100_000
    signatures: int = 20_000
    counties: tuple[str, ...] = (
        "Los Angeles", "San Diego", "Orange", "Riverside", "Kern", "Alameda",
    )
    batch_size: int = 1_000          # rows per batch file
    seed: int = 7
    deadline: date = date(2017, 7, 25)
    petition_id: str = "calexit"
    #: Whether the petition lets online signatures count (California: no). The truth follows
    #: it: a valid signer's online signature is ONLINE_NOT_ACCEPTED, and still a signature
    #: for finding duplicates (see sigverify_dedupe.domain).
    accept_online: bool = False
    #: The hostile profile (``sigverify_cli.hostile``): California's names (Hispanic, Asian,
    #: namesakes by the hundred), every noise kind seen to break matchers at two to three
    #: times the default rates, more hard negatives. Off, the output is what it always was.
    hostile: bool = False
    #: The three-digit zip prefixes to draw from (empty: 900-961). ``generate_sharded`` gives
    #: each shard its own, so that a zip never spans two shards' counties.
    zip_prefixes: tuple[int, ...] = ()


@dataclass(frozen=True)
class SynthOutput:
    roll_csv: Path
    batches: tuple[tuple[Path, str], ...]   # (batch file, county), in submission order
    truth_csv: Path
    spec: SynthSpec


# --------------------------------------------------------------------------- vocabulary

_DIRS = {"N": "NORTH", "S": "SOUTH", "E": "EAST", "W": "WEST"}
_SUFFIXES = {
    "ST": "STREET", "AVE": "AVENUE", "BLVD": "BOULEVARD", "DR": "DRIVE", "RD": "ROAD",
    "LN": "LANE", "CT": "COURT", "PL": "PLACE", "WAY": "WAY", "CIR": "CIRCLE",
    "TER": "TERRACE", "PKWY": "PARKWAY",
}
_SUFFIX_WEIGHTS = (30, 22, 8, 12, 8, 8, 6, 3, 4, 3, 2, 2)
_STREET_WORDS = (
    "MAIN", "OAK", "PINE", "MAPLE", "CEDAR", "ELM", "WILLOW", "PARK", "LAKE", "HILL", "MISSION",
    "SUNSET", "VISTA", "CANYON", "OCEAN", "VALLEY", "RIDGE", "MEADOW", "ORCHARD", "SPRING",
    "1ST", "2ND", "3RD", "4TH", "5TH", "6TH", "7TH", "8TH", "9TH", "10TH", "12TH", "14TH",
)
_UNIT_STYLES = ("APT", "UNIT", "#")
#: Nicknames people write that do not share their name's first two letters.
_COMMON_NICKNAMES = frozenset({
    "bob", "bobby", "bill", "billy", "dick", "rick", "ricky", "jack", "ted", "ned", "hank",
    "peggy", "polly", "molly", "sally", "patsy", "chuck", "betty", "liz", "lisa", "beth",
    "kate", "katie", "maggie", "meg", "sue", "susie", "jim", "jimmy", "tony", "tom", "tommy",
    "mike", "dave", "joe", "joey", "bud", "sandy", "sandra", "nancy", "kathy", "cathy", "jenny",
    "jen", "jeff", "greg", "steve", "stevie", "ben", "dan", "danny", "sam", "sammy", "will",
    "chris", "nick", "larry", "harry", "jerry", "terry", "becky", "vicky", "trish", "tricia",
})


@cache
def _nicknamer() -> NickNamer:
    return NickNamer()


def _nicknames(first: str) -> list[str]:
    """Usual written nicknames of a first name, upper case, sorted."""
    low = first.lower()
    out = {
        n.upper() for n in _nicknamer().nicknames_of(low)
        if len(n) >= 2 and n != low and (n[:2] == low[:2] or n in _COMMON_NICKNAMES)
    }
    return sorted(out)


def _name_equivalents(first: str) -> set[str]:
    low = first.lower()
    nn = _nicknamer()
    return {first.upper()} | {n.upper() for n in nn.nicknames_of(low) | nn.canonicals_of(low)}


def _slug(county: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", county.lower()).strip("-")


def _pick(rng: random.Random, weighted: Sequence[tuple[_T, float]]) -> _T:
    return rng.choices([k for k, _ in weighted], [w for _, w in weighted])[0]


def _apportion(total: int, weights: Sequence[float]) -> list[int]:
    """Largest-remainder split of ``total`` by ``weights``."""
    s = sum(weights)
    if total <= 0 or s <= 0:
        return [0] * len(weights)
    raw = [total * w / s for w in weights]
    out = [math.floor(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (out[i] - raw[i], i))
    for i in order[: total - sum(out)]:
        out[i] += 1
    return out


def _rand_date(rng: random.Random, lo: date, hi: date) -> date:
    if hi <= lo:
        return lo
    return lo + timedelta(days=rng.randrange((hi - lo).days + 1))


# --------------------------------------------------------------------------- roll model


@dataclass(frozen=True, slots=True)
class _Address:
    number: str
    predir: str
    name: str
    suffix: str
    unit: str
    city: str
    zip: str
    county: str
    expanded: bool   # the roll spells the directional and suffix out

    def street(self, dir_long: bool, suf_long: bool) -> str:
        parts = [self.number]
        if self.predir:
            parts.append(_DIRS[self.predir] if dir_long else self.predir)
        parts.append(self.name)
        parts.append(_SUFFIXES[self.suffix] if suf_long else self.suffix)
        return " ".join(parts)

    @property
    def roll_street(self) -> str:
        return self.street(self.expanded, self.expanded)


@dataclass(slots=True)
class _Voter:
    first: str
    middle: str
    last: str
    suffix: str
    birth: date | None
    addr: _Address
    household: int
    status: str = "ACTIVE"
    registered_on: date = REGISTRATION_START
    voter_id: str = ""
    namesake: bool = False   # shares first name and address with a JR/SR relative
    # the hostile profile only: the name's origin and its full written forms
    origin: str = ""
    given: str = ""          # e.g. MARÍA JOSÉ (accents kept), whatever the roll holds
    family: str = ""         # e.g. GARCÍA LÓPEZ


@dataclass
class _Row:
    county: str
    batch: int               # index into the county's batches
    reason: str
    voter: _Voter | None = None
    fields: dict[str, str] = field(default_factory=dict)
    noise: list[str] = field(default_factory=list)
    signed_on: date | None = None
    circulator: str = ""
    source: str = "paper"


class _Pools:
    """Name, street and city vocabularies, built once from faker per seed."""

    def __init__(self, fake: Faker) -> None:
        p = _PersonProvider
        self.male = [n.upper() for n in p.first_names_male]
        self.male_w = list(accumulate(p.first_names_male.values()))
        self.female = [n.upper() for n in p.first_names_female]
        self.female_w = list(accumulate(p.first_names_female.values()))
        self.last = [n.upper() for n in p.last_names]
        self.last_w = list(accumulate(p.last_names.values()))
        words: set[str] = set(_STREET_WORDS)
        while len(words) < 400:
            base = fake.street_name().rsplit(" ", 1)[0].upper()
            if base.isalpha():
                words.add(base)
        self.street_words = sorted(words)
        self._fake = fake
        self._cities: set[str] = set()

    def first(self, rng: random.Random, male: bool) -> str:
        if male:
            return rng.choices(self.male, cum_weights=self.male_w)[0]
        return rng.choices(self.female, cum_weights=self.female_w)[0]

    def surname(self, rng: random.Random) -> str:
        return rng.choices(self.last, cum_weights=self.last_w)[0]

    def city(self) -> str:
        while True:
            c = self._fake.city().upper()
            if c not in self._cities:
                self._cities.add(c)
                return c


class _County:
    def __init__(self, name: str, zips: list[str], cities: dict[str, str],
                 streets: dict[str, list[tuple[str, str, str]]]) -> None:
        self.name = name
        self.zips = zips
        self.city_of = cities            # zip -> city
        self.streets = streets           # zip -> [(predir, name, suffix)]
        self.voters: list[_Voter] = []
        self.addresses: list[_Address] = []


class _Roll:
    """Builds the voters of every county, in households."""

    def __init__(self, spec: SynthSpec, rng: random.Random, pools: _Pools) -> None:
        self.spec = spec
        self.rng = rng
        self.pools = pools
        self.voters: list[_Voter] = []
        self.households: list[list[_Voter]] = []
        self.counties: dict[str, _County] = {}
        self._taken: set[tuple[str, str, str, str, str]] = set()
        weights = [COUNTY_WEIGHTS.get(c, DEFAULT_COUNTY_WEIGHT) for c in spec.counties]
        self.county_voters = dict(zip(spec.counties, _apportion(spec.voters, weights),
                                      strict=True))
        self._layout()
        for c in spec.counties:
            self._populate(self.counties[c], self.county_voters[c])
        self._finish()

    # geography
    def _layout(self) -> None:
        rng = self.rng
        pool = self.spec.zip_prefixes or tuple(range(900, 962))
        prefixes = list(pool)
        rng.shuffle(prefixes)
        for name in self.spec.counties:
            n_zips = max(3, math.ceil(self.county_voters[name] / VOTERS_PER_ZIP))
            zips: list[str] = []
            while len(zips) < n_zips:
                if not prefixes:
                    prefixes = list(pool)
                    rng.shuffle(prefixes)
                pre = prefixes.pop()
                k = min(n_zips - len(zips), 60)
                zips += [f"{pre:03d}{n:02d}" for n in sorted(rng.sample(range(1, 99), k))]
            zips = sorted(set(zips) - {z for c in self.counties.values() for z in c.zips})
            cities = [self.pools.city() for _ in range(max(2, math.ceil(len(zips) / ZIPS_PER_CITY)))]
            city_of = {z: cities[i] if i < len(cities) else rng.choice(cities)
                       for i, z in enumerate(zips)}
            streets: dict[str, list[tuple[str, str, str]]] = {}
            for z in zips:
                seen: set[tuple[str, str, str]] = set()
                while len(seen) < STREETS_PER_ZIP:
                    predir = rng.choice(tuple(_DIRS)) if rng.random() < 0.2 else ""
                    suffix = rng.choices(tuple(_SUFFIXES), _SUFFIX_WEIGHTS)[0]
                    seen.add((predir, rng.choice(self.pools.street_words), suffix))
                streets[z] = sorted(seen)
            self.counties[name] = _County(name, zips, city_of, streets)

    def _address(self, county: _County, zip_: str | None = None) -> _Address:
        rng = self.rng
        while True:
            z = zip_ or rng.choice(county.zips)
            predir, name, suffix = rng.choice(county.streets[z])
            number = str(rng.randrange(100, 20000))
            unit = ""
            if rng.random() < UNIT_SHARE:
                style = rng.choice(_UNIT_STYLES)
                ident = str(rng.randrange(1, 40))
                if rng.random() < 0.2:
                    ident += rng.choice("ABCD")
                unit = f"#{ident}" if style == "#" else f"{style} {ident}"
            key = (z, predir, name, suffix, number + "/" + unit)
            if key in self._taken:
                continue
            self._taken.add(key)
            a = _Address(number, predir, name, suffix, unit, county.city_of[z], z, county.name,
                         expanded=rng.random() < 0.1)
            county.addresses.append(a)
            return a

    # people
    def _birth(self, lo: date, hi: date) -> date:
        """A birth date in [lo, hi], old enough to have registered before the deadline."""
        cap = self.spec.deadline - timedelta(days=19 * 365)
        return _rand_date(self.rng, min(lo, cap), min(hi, cap))

    def _middle(self, male: bool) -> str:
        kind = _pick(self.rng, MIDDLE_SHARES)
        if kind == "none":
            return ""
        m = self.pools.first(self.rng, male)
        return m[0] if kind == "initial" else m

    def _household(self, county: _County, size: int, forced: tuple[str, str] | None = None,
                   zip_: str | None = None) -> None:
        rng, pools = self.rng, self.pools
        addr = self._address(county, zip_)
        surname = forced[1] if forced else pools.surname(rng)
        hid = len(self.households)
        members: list[tuple[_Voter, bool]] = []   # (voter, male)
        firsts: set[str] = set()

        def person(male: bool, birth: date) -> _Voter:
            while True:
                f = pools.first(rng, male)
                if f not in firsts:
                    break
            firsts.add(f)
            middle = self._middle(male)
            while middle == f:
                middle = self._middle(male)
            v = _Voter(f, middle, surname, "", birth, addr, hid)
            members.append((v, male))
            return v

        head_male = True if forced else rng.random() < 0.5
        head_birth = self._birth(date(1927, 1, 1), date(1995, 12, 31))
        head = person(head_male, head_birth)
        if forced:
            firsts.discard(head.first)
            head.first = forced[0]
            firsts.add(head.first)
        if size >= 2:
            off = timedelta(days=rng.randrange(-6 * 365, 6 * 365))
            person(not head_male if rng.random() < 0.95 else head_male, self._birth(
                head_birth + off, head_birth + off))
        for _ in range(size - 2):
            child_birth = head_birth + timedelta(days=rng.randrange(20 * 365, 38 * 365))
            if child_birth > self.spec.deadline - timedelta(days=19 * 365):
                # too young to have registered: a sibling instead
                child_birth = head_birth + timedelta(days=rng.randrange(-8 * 365, 8 * 365))
            person(rng.random() < 0.5, self._birth(child_birth, child_birth))
        # a son named after his father
        if size >= 3 and head_male and rng.random() < NAMESAKE_SHARE:
            sons = [v for v, male in members[2:] if male]
            if sons:
                son = sons[0]
                firsts.discard(son.first)
                son.first = head.first
                son.suffix = "JR"
                if rng.random() < 0.5:
                    son.middle = head.middle
                if rng.random() < 0.6:
                    head.suffix = "SR"
                son.namesake = head.namesake = True
        house = [v for v, _ in members]
        self.households.append(house)
        county.voters += house

    def _populate(self, county: _County, n: int) -> None:
        rng = self.rng
        start = len(county.voters)
        zips = rng.sample(county.zips, min(COMMON_NAME_ZIPS, len(county.zips)))
        for z in zips:
            for _ in range(rng.randint(*COMMON_NAME_HOUSEHOLDS)):
                if len(county.voters) - start < n:
                    self._household(county, rng.choice((1, 2, 2, 3)), COMMON_NAME, z)
        while len(county.voters) - start < n:
            self._household(county, _pick(rng, HOUSEHOLD_SIZES))
        extra = len(county.voters) - start - n
        for _ in range(extra):   # trim the last household to hit the count exactly
            v = county.voters.pop()
            self.households[v.household].remove(v)

    def _finish(self) -> None:
        rng, deadline = self.rng, self.spec.deadline
        for c in self.spec.counties:
            self.voters += self.counties[c].voters
        ids = rng.sample(range(10_000_000, 100_000_000), len(self.voters))
        hi = deadline - timedelta(days=30)
        for v, vid in zip(self.voters, ids, strict=True):
            v.voter_id = f"V{vid}"
            v.status = _pick(rng, STATUS_SHARES)
            lo = REGISTRATION_START
            if v.birth is not None:
                lo = max(lo, v.birth + timedelta(days=18 * 365 + 5))
            v.registered_on = _rand_date(rng, min(lo, hi), hi)
            if rng.random() < EMPTY_BIRTH_SHARE:
                v.birth = None


# --------------------------------------------------------------------------- noise


def _typo(rng: random.Random, word: str) -> str:
    """One edit (substitution, deletion, insertion or adjacent transposition) of a word."""
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    for _ in range(20):
        i = rng.randrange(1, len(word))     # keep the first letter: people rarely miss it
        op = rng.randrange(4)
        if op == 0:
            out = word[:i] + rng.choice(letters) + word[i + 1:]
        elif op == 1:
            out = word[:i] + word[i + 1:]
        elif op == 2:
            out = word[:i] + rng.choice(letters) + word[i:]
        else:
            if i + 1 >= len(word):
                continue
            out = word[:i] + word[i + 1] + word[i] + word[i + 2:]
        if out != word:
            return out
    return word[:-1]


def _title(s: str) -> str:
    return " ".join(w[:1].upper() + w[1:].lower() for w in s.split(" "))


class _Writer:
    """Renders a person at an address as a batch row, applying noise kinds."""

    #: noise kinds and their weights (their order is the order noise is applied in)
    weights: Mapping[str, float] = NOISE_WEIGHTS
    #: kinds never chosen together for one row
    exclusive: tuple[frozenset[str], ...] = (
        frozenset({"typo_first", "typo_last", "typo_street", "nickname"}),
        frozenset({"middle_initial", "middle_dropped"}),
        frozenset({"unit_style", "unit_dropped"}),
        frozenset({"zip_digit", "city_dropped"}),
        frozenset({"swap_names", "nickname"}),
    )

    def __init__(self, rng: random.Random, roll: _Roll) -> None:
        self.rng = rng
        self.roll = roll
        self.zip_county = {z: c.name for c in roll.counties.values() for z in c.zips}

    def _applicable(self, kind: str, v: _Voter, a: _Address, first: str, middle: str,
                    suffix_written: bool) -> bool:
        if kind in ("middle_initial", "middle_dropped") and v.namesake:
            return False
        if kind == "typo_first" or kind == "nickname":
            if kind == "nickname":
                return bool(self._nick_choices(v, first))
            return len(first) >= 4
        if kind == "typo_last":
            return len(v.last) >= 4
        if kind == "typo_street":
            return a.name.isalpha() and len(a.name) >= 4
        if kind == "middle_initial":
            return len(middle) > 1
        if kind == "middle_dropped":
            return bool(middle)
        if kind == "swap_names":
            return not suffix_written
        if kind == "street_abbrev":
            return bool(a.predir) or _SUFFIXES[a.suffix] != a.suffix
        if kind in ("unit_style", "unit_dropped"):
            return bool(a.unit)
        return True

    def _house(self, v: _Voter) -> list[_Voter]:
        return self.roll.households[v.household] if v.household >= 0 else []

    def _nick_choices(self, v: _Voter, first: str) -> list[str]:
        others = {m.first for m in self._house(v) if m is not v}
        return [n for n in _nicknames(first) if n not in others]

    def kinds(self, v: _Voter, a: _Address, count: int, allowed: Iterable[str],
              suffix_written: bool) -> list[str]:
        chosen: list[str] = []
        weights = self.weights
        allowed = set(allowed)
        pool = [k for k in weights    # a fixed order: never iterate over a set
                if k in allowed and self._applicable(k, v, a, v.first, v.middle, suffix_written)]
        while len(chosen) < count and pool:
            k = self.rng.choices(pool, [weights[p] for p in pool])[0]
            chosen.append(k)
            banned = {k}
            for group in self.exclusive:
                if k in group:
                    banned |= group
            pool = [p for p in pool if p not in banned]
        order = list(weights)
        return sorted(chosen, key=order.index)

    def render(self, v: _Voter, a: _Address, kinds: Sequence[str],
               suffix_written: bool | None = None) -> tuple[dict[str, str], list[str]]:
        rng = self.rng
        first, middle, last = v.first, v.middle, v.last
        if suffix_written is None:
            suffix_written = bool(v.suffix) and (v.namesake or rng.random() < SUFFIX_WRITTEN_SHARE)
        dir_long = suf_long = a.expanded
        unit, city, zip_ = a.unit, a.city, a.zip
        street_name = a.name
        applied: list[str] = []
        for k in kinds:
            if k == "nickname":
                choices = self._nick_choices(v, first)
                if not choices:
                    continue
                first = rng.choice(choices)
            elif k == "typo_first":
                others = {m.first for m in self._house(v)}
                t = _typo(rng, first)
                if t in others:
                    continue
                first = t
            elif k == "typo_last":
                last = _typo(rng, last)
            elif k == "typo_street":
                street_name = _typo(rng, street_name)
            elif k == "middle_initial":
                middle = middle[0]
            elif k == "middle_dropped":
                middle = ""
            elif k == "swap_names":
                first, last = last, first
            elif k == "street_abbrev":
                flip_dir = bool(a.predir) and (
                    _SUFFIXES[a.suffix] == a.suffix or rng.random() < 0.5)
                if flip_dir:
                    dir_long = not dir_long
                if not flip_dir or rng.random() < 0.3:
                    suf_long = not suf_long
            elif k == "unit_style":
                ident = unit.split(" ", 1)[1] if " " in unit else unit.lstrip("#")
                forms = [f"APT {ident}", f"#{ident}", f"UNIT {ident}", f"NO {ident}"]
                unit = rng.choice([f for f in forms if f != unit])
            elif k == "unit_dropped":
                unit = ""
            elif k == "zip_digit":
                z = self._zip_typo(zip_, a.county)
                if z is None:
                    continue
                zip_ = z
            elif k == "city_dropped":
                city = ""
            elif k in ("case", "punct"):
                pass
            applied.append(k)
        if suffix_written and v.suffix and "swap_names" not in applied:
            last = f"{last} {v.suffix}"
        street = _Address(a.number, a.predir, street_name, a.suffix, "", "", "", "", False)
        fields = {
            "first_name": first, "middle_name": middle, "last_name": last,
            "street": street.street(dir_long, suf_long), "unit": unit, "city": city,
            "zip": zip_,
        }
        if "punct" in applied and not self._punct(fields, a, dir_long, suf_long):
            applied.remove("punct")
        if "case" in applied:
            style = rng.choice((_title, str.lower))
            for key in ("first_name", "middle_name", "last_name", "street", "unit", "city"):
                fields[key] = style(fields[key])
        return fields, applied

    def _punct(self, f: dict[str, str], a: _Address, dir_long: bool, suf_long: bool) -> bool:
        rng = self.rng
        ops: list[str] = []
        if len(f["middle_name"]) == 1:
            ops.append("middle")
        if not suf_long and _SUFFIXES[a.suffix] != a.suffix:
            ops.append("suffix")
        if a.predir and not dir_long:
            ops.append("dir")
        ops.append("comma")
        op = rng.choice(ops)
        if op == "middle":
            f["middle_name"] += "."
        elif op == "suffix":
            f["street"] += "."
        elif op == "dir":
            num, rest = f["street"].split(" ", 1)
            f["street"] = f"{num} {rest[:1]}.{rest[1:]}"
        else:
            num, rest = f["street"].split(" ", 1)
            f["street"] = f"{num}, {rest}" if rng.random() < 0.3 else f"{num} {rest},"
        return True

    def _zip_typo(self, zip_: str, county: str) -> str | None:
        rng = self.rng
        for _ in range(10):
            i = rng.randrange(2, 5)
            d = rng.choice([c for c in "0123456789" if c != zip_[i]])
            z = zip_[:i] + d + zip_[i + 1:]
            if self.zip_county.get(z, county) == county:
                return z
        return None


# --------------------------------------------------------------------------- signatures


class _Petition:
    writer_cls: type[_Writer] = _Writer
    full_noise: Iterable[str] = NOISE_WEIGHTS       # kinds for rows of valid people
    light_noise: Iterable[str] = LIGHT_NOISE        # kinds for the other rows
    valid_noise_counts: Sequence[float] = VALID_NOISE_COUNTS
    other_noise_counts: Sequence[float] = OTHER_NOISE_COUNTS

    def __init__(self, spec: SynthSpec, rng: random.Random, roll: _Roll,
                 mix: Mapping[str, float]) -> None:
        self.spec, self.rng, self.roll = spec, rng, roll
        self.writer = self.writer_cls(rng, roll)
        self.used: set[str] = set()
        self.deadline = spec.deadline
        self.window_start = spec.deadline - timedelta(days=CIRCULATION_DAYS)
        self.fallbacks: Counter[str] = Counter()
        self._duplicated: set[str] = set()
        self._orig_cache: dict[str, tuple[list[_Row], list[int]]] = {}
        counties = spec.counties
        self.names_in: dict[str, set[tuple[str, str]]] = {
            c: {(v.first, v.last) for v in roll.counties[c].voters} for c in counties}
        self.all_names = set().union(*self.names_in.values())
        name_counts = {c: Counter((v.first, v.last) for v in roll.counties[c].voters)
                       for c in counties}
        self._lists: dict[tuple[str, str], list[_Voter]] = {}
        self._pos: dict[tuple[str, str], int] = {}
        for c in counties:
            vs = roll.counties[c].voters
            active = [v for v in vs if v.status == "ACTIVE"]
            self._add((c, "ACTIVE"), active)
            self._add((c, "INACTIVE"), [v for v in vs if v.status == "INACTIVE"])
            self._add((c, "CANCELLED"), [v for v in vs if v.status == "CANCELLED"])
            self._add((c, "UNIQUE"), [v for v in active if name_counts[c][v.first, v.last] == 1
                                      and not v.namesake])
            self._add((c, "LATE_REG"), [v for v in active
                                        if v.registered_on > self.window_start + timedelta(2)])
            others = [v for o in counties if o != c for v in roll.counties[o].voters
                      if v.status == "ACTIVE" and (v.first, v.last) not in self.names_in[c]
                      and not v.namesake]
            self._add((c, "ELSEWHERE"), others)
        # signatures per county, then rows per batch
        weights = [COUNTY_WEIGHTS.get(c, DEFAULT_COUNTY_WEIGHT) for c in counties]
        self.county_sigs = dict(zip(counties, _apportion(spec.signatures, weights), strict=True))
        reasons = [r for r in REASONS if mix.get(r, 0) > 0]
        self.rows: dict[str, list[list[_Row]]] = {}
        for c in counties:
            n = self.county_sigs[c]
            counts = dict(zip(reasons, _apportion(n, [mix[r] for r in reasons]), strict=True))
            self.rows[c] = self._layout(c, n, counts)

    def _add(self, key: tuple[str, str], voters: list[_Voter]) -> None:
        voters = list(voters)
        self.rng.shuffle(voters)
        self._lists[key] = voters
        self._pos[key] = 0

    def _take(self, county: str, pool: str) -> _Voter | None:
        key = (county, pool)
        lst, i = self._lists[key], self._pos[key]
        while i < len(lst) and lst[i].voter_id in self.used:
            i += 1
        self._pos[key] = i + 1
        if i >= len(lst):
            return None
        v = lst[i]
        self.used.add(v.voter_id)
        return v

    def _layout(self, county: str, n: int, counts: dict[str, int]) -> list[list[_Row]]:
        rng = self.rng
        if n == 0:
            return []
        n_batches = math.ceil(n / self.spec.batch_size)
        sizes = _apportion(n, [1.0] * n_batches)
        labels = [r for r, k in counts.items() if r != "DUPLICATE" for _ in range(k)]
        rng.shuffle(labels)
        first = sizes[0] if n_batches > 1 else max(1, n // 2)
        dup_positions = set(rng.sample(range(first, n), min(counts.get("DUPLICATE", 0),
                                                            n - first)))
        labels += ["MATCHED"] * (counts.get("DUPLICATE", 0) - len(dup_positions))
        it = iter(labels)
        flat = ["DUPLICATE" if i in dup_positions else next(it) for i in range(n)]
        out: list[list[_Row]] = []
        pos = 0
        for b, size in enumerate(sizes):
            out.append([_Row(county, b, r) for r in flat[pos:pos + size]])
            pos += size
        return out

    # dates
    def _signed(self, v: _Voter | None) -> date:
        lo = self.window_start
        if v is not None:
            lo = max(lo, v.registered_on + timedelta(days=1))
        return _rand_date(self.rng, lo, self.deadline)

    def _noise_count(self, valid: bool) -> int:
        w = self.valid_noise_counts if valid else self.other_noise_counts
        return self.rng.choices(range(len(w)), w)[0]

    def _suffix_written(self, v: _Voter) -> bool:
        return bool(v.suffix) and (v.namesake or self.rng.random() < SUFFIX_WRITTEN_SHARE)

    def _person(self, row: _Row, v: _Voter, a: _Address, valid: bool) -> None:
        allowed = self.full_noise if valid else self.light_noise
        suffix_written = self._suffix_written(v)
        kinds = self.writer.kinds(v, a, self._noise_count(valid), allowed, suffix_written)
        row.fields, row.noise = self.writer.render(v, a, kinds, suffix_written)
        row.voter = v

    # the categories
    def fill(self) -> None:
        for c in self.spec.counties:
            for batch in self.rows[c]:
                for row in batch:
                    if row.reason != "DUPLICATE":
                        self._fill(row)
        for c in self.spec.counties:
            for batch in self.rows[c]:
                for row in batch:
                    if row.reason == "DUPLICATE":
                        self._duplicate(row)

    def _fill(self, row: _Row) -> None:
        c, reason = row.county, row.reason
        if reason == "NOT_REGISTERED":
            self._unregistered(row)
            return
        pool = {
            "MATCHED": "ACTIVE", "SIGNED_AFTER_DEADLINE": "ACTIVE", "INCOMPLETE": "ACTIVE",
            "VOTER_INACTIVE": "INACTIVE", "VOTER_CANCELLED": "CANCELLED",
            "ADDRESS_MISMATCH": "UNIQUE", "WRONG_COUNTY": "ELSEWHERE",
            "SIGNED_BEFORE_REGISTRATION": "LATE_REG",
        }[reason]
        v = self._take(c, pool)
        if v is None:
            self.fallbacks[reason] += 1
            row.reason = "NOT_REGISTERED"
            self._unregistered(row)
            return
        if reason == "MATCHED":
            self._person(row, v, v.addr, valid=True)
            row.signed_on = self._signed(v)
        elif reason == "SIGNED_AFTER_DEADLINE":
            self._person(row, v, v.addr, valid=True)
            row.signed_on = self.deadline + timedelta(days=self.rng.randint(1, LATE_DAYS))
        elif reason == "SIGNED_BEFORE_REGISTRATION":
            self._person(row, v, v.addr, valid=True)
            row.signed_on = _rand_date(self.rng, self.window_start,
                                       v.registered_on - timedelta(days=1))
        elif reason == "INCOMPLETE":
            self._person(row, v, v.addr, valid=False)
            if self.rng.random() < 0.5:
                row.fields["first_name"] = row.fields["last_name"] = ""
                row.fields["middle_name"] = ""
                row.noise.append("blank_name")
            else:
                row.fields["street"] = row.fields["unit"] = ""
                row.noise.append("blank_street")
            row.signed_on = self._signed(v)
        elif reason == "ADDRESS_MISMATCH":
            county = self.roll.counties[c]
            while True:
                other = self.rng.choice(county.addresses)
                if other.number != v.addr.number or other.name != v.addr.name:
                    break
            self._person(row, v, other, valid=False)
            row.signed_on = self._signed(v)
        else:   # WRONG_COUNTY, VOTER_INACTIVE, VOTER_CANCELLED: their own address
            self._person(row, v, v.addr, valid=False)
            row.signed_on = self._signed(v)

    def _unregistered(self, row: _Row) -> None:
        rng, pools = self.rng, self.roll.pools
        county = self.roll.counties[row.county]
        row.voter = None
        if rng.random() < 0.5 and county.voters:
            # a spouse or adult child of a registered voter, at the voter's address
            host = rng.choice(county.voters)
            house = self.roll.households[host.household]
            initials = {m.first[0] for m in house} | {m.middle[:1] for m in house}
            for _ in range(50):
                first = pools.first(rng, rng.random() < 0.5)
                if first[0] in initials:
                    continue
                if any((e, host.last) in self.names_in[row.county]
                       for e in _name_equivalents(first)):
                    continue
                break
            else:
                first = ""
            if first:
                fake = _Voter(first, self._fake_middle(), host.last, "", None, host.addr,
                              host.household)
                self._fake_row(row, fake, host.addr)
                row.noise.append("household")
                return
        for _ in range(200):
            first = pools.first(rng, rng.random() < 0.5)
            last = pools.surname(rng)
            if not any((e, last) in self.all_names for e in _name_equivalents(first)):
                break
        addr = self.roll._address(county)
        county.addresses.pop()   # a made-up address: not a roll address
        fake = _Voter(first, self._fake_middle(), last, "", None, addr, -1)
        self._fake_row(row, fake, addr)

    def _fake_middle(self) -> str:
        return self.roll._middle(self.rng.random() < 0.5)

    def _fake_row(self, row: _Row, fake: _Voter, addr: _Address) -> None:
        kinds = self.writer.kinds(fake, addr, self._noise_count(False), self.light_noise, False)
        row.fields, row.noise = self.writer.render(fake, addr, kinds, False)
        row.signed_on = self._signed(None)

    def _originals(self, county: str) -> tuple[list[_Row], list[int]]:
        """The county's valid rows in batch order, and how many lie before each batch."""
        if county not in self._orig_cache:
            rows: list[_Row] = []
            before: list[int] = []
            for batch in self.rows[county]:
                before.append(len(rows))
                rows += [r for r in batch if r.reason == "MATCHED" and r.signed_on is not None
                         and r.signed_on < self.deadline]
            self._orig_cache[county] = (rows, before)
        return self._orig_cache[county]

    def _duplicate(self, row: _Row) -> None:
        rng = self.rng
        rows, before = self._originals(row.county)
        # an earlier batch of the county; the same batch only when the county has one
        limit = before[row.batch] if row.batch > 0 else len(rows)
        orig = None
        for _ in range(100):
            if limit == 0:
                break
            cand = rows[rng.randrange(limit)]
            assert cand.voter is not None
            if cand.voter.voter_id not in self._duplicated:
                orig = cand
                break
        if orig is None:
            self.fallbacks["DUPLICATE"] += 1
            row.reason = "MATCHED"
            self._fill(row)
            return
        v = orig.voter
        assert v is not None and orig.signed_on is not None
        self._duplicated.add(v.voter_id)
        self._person(row, v, v.addr, valid=True)
        row.signed_on = _rand_date(rng, orig.signed_on + timedelta(days=1), self.deadline)

    def finish(self) -> None:
        """Circulators and sources; rows grouped by circulator within each batch."""
        rng = self.rng
        next_id = 1
        for c in self.spec.counties:
            k = rng.randint(*CIRCULATORS_PER_COUNTY)
            ids = [f"C-{next_id + i:04d}" for i in range(k)]
            next_id += k
            weights = [rng.uniform(0.3, 3.0) for _ in ids]
            bad = ids[0]
            for batch in self.rows[c]:
                for row in batch:
                    if row.reason == "NOT_REGISTERED" and rng.random() < BAD_CIRCULATOR_SHARE:
                        row.circulator = bad
                    else:
                        row.circulator = rng.choices(ids, weights)[0]
                    row.source = "online" if rng.random() < ONLINE_SHARE else "paper"
                batch.sort(key=lambda r: (r.source != "paper", r.circulator))


def _batch_order(rows: Mapping[str, list[list[_Row]]], counties: Sequence[str]
                 ) -> list[tuple[str, int]]:
    """Submission order: counties take turns, each county's batches in their order."""
    order: list[tuple[str, int]] = []
    most = max((len(rows[c]) for c in counties), default=0)
    for b in range(most):
        order += [(c, b) for c in counties if b < len(rows[c])]
    return order


# --------------------------------------------------------------------------- generate


def generate(out_dir: Path, spec: SynthSpec = SynthSpec()) -> SynthOutput:
    """Write ``roll.csv``, ``batches/<county>-NNN.csv`` and ``truth.csv`` under ``out_dir``."""
    return _generate(out_dir, spec, MIX)


def _final_reasons(rows: Mapping[str, list[list[_Row]]], spec: SynthSpec) -> dict[int, str]:
    """Each row's expected reason once the petition's rules on duplicates and online
    signatures are applied (the same rules the dedupe service applies)."""
    from sigverify_common.vocab import Reason
    from sigverify_dedupe.domain import Entry, Rules, resolve

    final: dict[int, str] = {}
    by_voter: dict[str, list[tuple[_Row, Entry]]] = {}
    seq = 0
    for county, b in _batch_order(rows, spec.counties):
        for row in rows[county][b]:
            seq += 1
            final[id(row)] = row.reason
            if row.voter is not None and row.reason in ("MATCHED", "DUPLICATE"):
                entry = Entry(str(id(row)), Reason.MATCHED, row.signed_on, seq,
                              row.source == "online")
                by_voter.setdefault(row.voter.voter_id, []).append((row, entry))
    rules = Rules(accept_online=spec.accept_online)
    for group in by_voter.values():
        decided = resolve((e for _, e in group), rules)
        for row, entry in group:
            final[id(row)] = decided[entry.signature_id][1].value
    return final


def _generate(out_dir: Path, spec: SynthSpec, mix: Mapping[str, float]) -> SynthOutput:
    if not spec.counties or len(set(spec.counties)) != len(spec.counties):
        raise ValueError("counties must be non-empty and distinct")
    if spec.batch_size < 1 or spec.voters < 1 or spec.signatures < 0:
        raise ValueError("voters and batch_size must be positive, signatures not negative")
    if spec.signatures > spec.voters // 2:
        raise ValueError("signatures must be at most half the voters")
    unknown = set(mix) - set(REASONS)
    if unknown:
        raise ValueError(f"unknown reasons in mix: {sorted(unknown)}")
    rng = random.Random(spec.seed)
    fake = Faker("en_US")
    fake.seed_instance(spec.seed)
    pools = _Pools(fake)
    roll_cls, petition_cls = _Roll, _Petition
    if spec.hostile:
        from sigverify_cli.hostile import HostilePetition, HostileRoll
        roll_cls, petition_cls = HostileRoll, HostilePetition
    roll = roll_cls(spec, rng, pools)
    petition = petition_cls(spec, rng, roll, mix)
    petition.fill()
    petition.finish()

    out_dir = Path(out_dir)
    batch_dir = out_dir / "batches"
    batch_dir.mkdir(parents=True, exist_ok=True)
    roll_csv = out_dir / "roll.csv"
    with roll_csv.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(ROLL_COLUMNS)
        for v in sorted(roll.voters, key=lambda v: v.voter_id):
            a = v.addr
            w.writerow((v.voter_id, v.first, v.middle, v.last, v.suffix,
                        v.birth.isoformat() if v.birth else "", a.roll_street, a.unit, a.city,
                        a.zip, a.county, v.status, v.registered_on.isoformat()))
    batches: list[tuple[Path, str]] = []
    final = _final_reasons(petition.rows, spec)
    truth_csv = out_dir / "truth.csv"
    with truth_csv.open("w", newline="", encoding="utf-8") as tfh:
        tw = csv.writer(tfh, lineterminator="\n")
        tw.writerow(TRUTH_COLUMNS)
        for county, b in _batch_order(petition.rows, spec.counties):
            path = batch_dir / f"{_slug(county)}-{b + 1:03d}.csv"
            with path.open("w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh, lineterminator="\n")
                w.writerow(BATCH_COLUMNS)
                for line, row in enumerate(petition.rows[county][b], start=1):
                    f = row.fields
                    assert row.signed_on is not None
                    w.writerow((line, f["first_name"], f["middle_name"], f["last_name"],
                                f["street"], f["unit"], f["city"], f["zip"],
                                row.signed_on.isoformat(), row.circulator, row.source))
                    reason = final[id(row)]
                    status = "VALID" if reason == "MATCHED" else "INVALID"
                    tw.writerow((path.name, line, status, reason,
                                 row.voter.voter_id if row.voter else "", "+".join(row.noise)))
            batches.append((path, county))
    return SynthOutput(roll_csv, tuple(batches), truth_csv, spec)


# --------------------------------------------------------------------------- state scale


def plan_shards(spec: SynthSpec, shard_voters: int, shard_counties: int = 8
                ) -> list[SynthSpec]:
    """Split a spec into independent shards of whole counties, each of at most about
    ``shard_voters`` voters and ``shard_counties`` counties (a shard's signers from another
    county are drawn from a list per county of the shard's other counties' voters, so many
    counties in one shard cost memory), and at least two counties (WRONG_COUNTY signers come
    from another county of the same shard; a county larger than ``shard_voters`` gets the
    smallest county for company). Voters and signatures are apportioned by county exactly as one run
    would; each shard has its own seed and its own zip prefixes."""
    if len(spec.counties) < 2:
        raise ValueError("a sharded run needs at least two counties")
    weights = [COUNTY_WEIGHTS.get(c, DEFAULT_COUNTY_WEIGHT) for c in spec.counties]
    voters = dict(zip(spec.counties, _apportion(spec.voters, weights), strict=True))
    sigs = dict(zip(spec.counties, _apportion(spec.signatures, weights), strict=True))
    order = sorted(spec.counties, key=lambda c: (-voters[c], c))
    shards: list[list[str]] = []
    totals: list[int] = []
    for c in order:   # first fit, largest county first
        for i, total in enumerate(totals):
            if total + voters[c] <= shard_voters and len(shards[i]) < shard_counties:
                shards[i].append(c)
                totals[i] += voters[c]
                break
        else:
            shards.append([c])
            totals.append(voters[c])
    while any(len(s) < 2 for s in shards):
        lone = next(i for i, s in enumerate(shards) if len(s) < 2)
        donors = [i for i, s in enumerate(shards) if len(s) > 2]
        if donors:   # take the smallest county of the shard with the most counties
            d = max(donors, key=lambda i: (len(shards[i]), -i))
            c = min(shards[d], key=lambda c: (voters[c], c))
            shards[d].remove(c)
            shards[lone].append(c)
        else:        # merge with the smallest other shard
            other = min((i for i in range(len(shards)) if i != lone),
                        key=lambda i: (sum(voters[c] for c in shards[i]), i))
            shards[other] += shards.pop(lone)
    prefixes = list(range(900, 962))
    if len(shards) > len(prefixes):
        raise ValueError(f"{len(shards)} shards need more zip prefixes than California has; "
                         "raise shard_voters")
    sizes = [sum(voters[c] for c in s) for s in shards]
    share = _apportion(len(prefixes) - len(shards), sizes)
    out: list[SynthSpec] = []
    at = 0
    for i, (counties, k) in enumerate(zip(shards, share, strict=True)):
        mine = tuple(prefixes[at:at + k + 1])
        at += k + 1
        in_order = tuple(c for c in spec.counties if c in counties)
        out.append(replace(
            spec, counties=in_order, voters=sum(voters[c] for c in in_order),
            signatures=sum(sigs[c] for c in in_order), seed=spec.seed * 1_000 + i,
            zip_prefixes=mine))
    return out


def _shard_job(args: tuple[Path, SynthSpec]) -> SynthOutput:
    return generate(*args)


def generate_sharded(out_dir: Path, spec: SynthSpec, shard_voters: int = 2_000_000,
                     workers: int = 1, shard_counties: int = 8) -> SynthOutput:
    """A state-scale run in bounded memory: ``plan_shards`` splits the counties into shards,
    each generated on its own (``workers`` at a time, in processes) and appended to one
    ``roll.csv`` and ``truth.csv``; batch files keep their county names. Voter ids carry the
    shard (``V`` + two digits + the shard's eight), so they stay unique. Memory is about one
    shard's (0.8 GB per million voters) per worker. Zips never span shards; city names may
    repeat across shards. Not byte-identical to ``generate`` with the same spec."""
    import shutil
    from concurrent.futures import ProcessPoolExecutor

    out_dir = Path(out_dir)
    plans = plan_shards(spec, shard_voters, shard_counties)
    work = out_dir / "shards"
    (out_dir / "batches").mkdir(parents=True, exist_ok=True)
    roll_csv, truth_csv = out_dir / "roll.csv", out_dir / "truth.csv"
    batches: list[tuple[Path, str]] = []
    with roll_csv.open("w", newline="", encoding="utf-8") as rfh, \
            truth_csv.open("w", newline="", encoding="utf-8") as tfh:
        rw, tw = csv.writer(rfh, lineterminator="\n"), csv.writer(tfh, lineterminator="\n")
        rw.writerow(ROLL_COLUMNS)
        tw.writerow(TRUTH_COLUMNS)
        jobs = [(work / f"{i:02d}", plan) for i, plan in enumerate(plans)]

        def merge(i: int, part: SynthOutput) -> None:
            with part.roll_csv.open(newline="", encoding="utf-8") as fh:
                reader = csv.reader(fh)
                next(reader)
                for row in reader:
                    row[0] = f"V{i:02d}{row[0][1:]}"
                    rw.writerow(row)
            with part.truth_csv.open(newline="", encoding="utf-8") as fh:
                reader = csv.reader(fh)
                next(reader)
                for row in reader:
                    if row[4]:
                        row[4] = f"V{i:02d}{row[4][1:]}"
                    tw.writerow(row)
            for path, county in part.batches:
                dest = out_dir / "batches" / path.name
                shutil.move(str(path), dest)
                batches.append((dest, county))
            shutil.rmtree(part.roll_csv.parent)

        if workers <= 1:
            for i, job in enumerate(jobs):
                merge(i, _shard_job(job))
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for i, part in enumerate(pool.map(_shard_job, jobs)):
                    merge(i, part)
    shutil.rmtree(work, ignore_errors=True)
    return SynthOutput(roll_csv, tuple(batches), truth_csv, spec)
