"""The matching core's words: normalisation of names and addresses, eligibility, settings.

Scoring and deciding are the engine's (``test_matching_engine``); here only the pure
normalisation both sides of a comparison share, and the eligibility rule."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sigverify_common.errors import ConfigError
from sigverify_common.vocab import Reason
from sigverify_matching.config import Config
from sigverify_matching.domain import (
    MatchConfig,
    SignatureInput,
    VoterRecord,
    eligibility,
    first_name_codes,
    first_name_keys,
    house_digit_reading,
    normalize_address,
    normalize_county,
    normalize_suffix,
    normalize_text,
    normalize_unit,
    normalize_zip,
    person_name,
    phonetic,
    run_together_types,
    split_house_reading,
    swapped_names,
    written_line,
)


def voter(*, status: str = "ACTIVE", registered: date | None = date(2010, 1, 1)) -> VoterRecord:
    return VoterRecord(voter_id="V1", first_name="Robert", middle_name="James",
                       last_name="Johnson", suffix="", birth_date=None, street="123 N Main St",
                       unit="", city="Oakland", zip="94110", county="Alameda", status=status,
                       registered_on=registered)


def sig(*, signed: date | None = date(2024, 3, 1), deadline: date | None = None) -> SignatureInput:
    return SignatureInput(first_name="Robert", middle_name="", last_name="Johnson",
                          street="123 North Main Street", unit="", city="Oakland", zip="94110",
                          county="Alameda", signed_on=signed, deadline=deadline)


def parts(line: str, unit: str = "") -> tuple[str, str, str, str]:
    a = normalize_address(line, unit)
    return a.house, a.name, a.direction, a.street_type


# -- text and names ------------------------------------------------------------------------


def test_text_is_ascii_upper_without_punctuation() -> None:
    assert normalize_text("  José  O'Brien-Smith, Jr. ") == "JOSE OBRIEN SMITH JR"
    assert normalize_text("") == ""


@given(st.text(max_size=40))
def test_text_normalisation_is_idempotent(text: str) -> None:
    once = normalize_text(text)
    assert normalize_text(once) == once
    assert once == once.strip() and "  " not in once
    assert all(c.isascii() and (c.isalnum() or c == " ") for c in once)
    assert once == once.upper()


def test_names_split_suffix_and_middle_initial() -> None:
    n = person_name("John Q.", "", "Smith Jr.")
    assert (n.first, n.middle, n.last, n.suffix) == ("JOHN", "Q", "SMITH", "JR")
    d = person_name("Ann", "", "de la Cruz")
    assert (d.last, d.last_parts) == ("DELACRUZ", frozenset({"DE", "LA", "CRUZ"}))
    assert person_name("John", "", "Smith", "Sr.").suffix == "SR"
    assert person_name("Mary Jo", "Anne", "Lee").middle == "JO"  # extra given words first
    assert person_name("", "", "").first == ""


@pytest.mark.parametrize(("written", "suffix"), [
    ("Jr.", "JR"), ("junior", "JR"), ("Senior", "SR"), ("2nd", "II"), ("III", "III"),
    ("4th", "IV"), ("", ""),
])
def test_suffix_spellings(written: str, suffix: str) -> None:
    assert normalize_suffix(written) == suffix


def test_nickname_keys_meet_for_the_same_name_only() -> None:
    def same(a: str, b: str) -> bool:
        return bool(first_name_keys(a) & first_name_keys(b))

    assert same("BOB", "ROBERT") and same("BOB", "ROB") and same("LIZ", "ELIZABETH")
    assert same("MIKE", "MICHAEL")
    assert not same("CHRISTOPHER", "CHRISTINA")
    assert not same("JOHN", "MARY")
    assert first_name_keys("") == frozenset()
    assert "ROBERT" in first_name_keys("BOB") and "BOB" in first_name_keys("BOB")


def test_sounds_and_blocking_codes() -> None:
    assert phonetic("SMITH") == phonetic("SMYTH") != phonetic("JONES")
    assert phonetic("") == ""
    # a nickname's codes include its canonical name's sound, so BOB blocks with ROBERT
    assert phonetic("ROBERT") in first_name_codes("BOB")


# -- addresses -----------------------------------------------------------------------------


@pytest.mark.parametrize(("a", "b"), [
    ("123 North Main Street", "123 N MAIN ST"),
    ("123 N. Main St.", "123 north main street"),
    ("9 Saint James Place", "9 St James Pl"),
    ("500 MacArthur Boulevard NW", "500 Macarthur Blvd Northwest"),
    ("12 First Avenue", "12 1st Ave"),
    ("77 Elm Street Apt 4", "77 Elm St"),
    ("0012 Oak St", "12 Oak Street"),
])
def test_street_spellings_normalise_alike(a: str, b: str) -> None:
    assert parts(a) == parts(b)


@pytest.mark.parametrize("line", ["1 N Pine", "1 North Pine", "1 E Park", "7 W Vista"])
def test_a_street_named_like_a_type_with_the_type_left_off(line: str) -> None:
    """PINE, PARK, VISTA are USPS street types too: without a type after them they are the
    street's name, and the directional before them is a directional."""
    house, name, direction, kind = parts(line)
    full = parts(line + " Street")
    assert (house, name, direction, kind) == (full[0], full[1], full[2], "")
    assert name not in ("N", "E", "W") and direction


def test_units_compare_equal_however_written() -> None:
    assert {normalize_unit(u) for u in ("Apt 4", "#4", "Unit 4", "apt. # 4", "APARTMENT 4")} == {"4"}
    assert normalize_address("77 Elm St #4").unit == "4"
    assert normalize_address("77 Elm St", "Apt 4").unit == "4"
    assert normalize_address("77 Elm St Apt 4").name == normalize_address("77 Elm St").name


def test_a_fraction_or_house_letter_is_not_another_house() -> None:
    assert normalize_address("123 1/2 Main St").house == "123"
    assert normalize_address("123-B Main St").house == "123"
    assert normalize_address("123-B Main St").unit == "B"


def test_other_house_street_or_direction_stays_different() -> None:
    a = parts("123 N Main St")
    assert parts("125 N Main St")[0] != a[0]
    assert parts("123 Oak Ave")[1:] != a[1:]
    assert parts("123 S Main St")[2] == "S" != a[2]
    assert parts("123 Main St")[2] == ""  # direction left off: missing, not another


def test_house_number_with_a_slip_is_kept_as_written() -> None:
    """A letter in the number (15S7 for 1517) stays the house, one edit from the roll's; it
    is not read as a street name or a unit."""
    slip = normalize_address("15S7 Larkspur St")
    assert (slip.house, slip.name, slip.street_type, slip.unit) == ("15S7", "LARKSPUR", "ST", "")
    assert normalize_address("105B0 Main St").house == "105B0"
    assert normalize_address("ABC Main St").house == ""


@pytest.mark.parametrize(("street", "unit"), [("#", "#"), ("-", "🙂"), ("#", "APT"),
                                              ("...", "UNIT")])
def test_two_boxes_neither_a_street_are_read_once_each_way(street: str, unit: str) -> None:
    """Neither box reads as a street: they are swapped once, not back and forth for ever
    (a RecursionError that made such a row a poison record)."""
    a = normalize_address(street, unit, "95814")
    assert (a.house, a.name, a.zip) == ("", "", "95814")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=12), st.text(max_size=12), st.text(max_size=6))
def test_any_street_and_unit_normalise(street: str, unit: str, zip_code: str) -> None:
    a = normalize_address(street, unit, zip_code)
    assert a.zip == "" or a.zip.isdigit()


def test_swapped_street_and_unit_lines_are_read_back() -> None:
    a = normalize_address("#19", "1076 Jody Lane", "94110")
    assert (a.house, a.name, a.street_type, a.unit, a.zip) == ("1076", "JODY", "LN", "19",
                                                              "94110")


def test_misspelt_street_type_is_not_a_unit() -> None:
    a = normalize_address("5 5th Stret")
    assert a.unit == ""
    assert a.name.startswith("5TH")


def test_written_line_spells_directions_and_types_out() -> None:
    assert written_line("1633 N UNDERWOOD CIR") == written_line("1633 NORTH UNDERWOOD CIRCLE")
    assert normalize_address("1633 9North Underwood Cir").line.startswith("16339NORTHUNDERWOOD")


@st.composite
def street_lines(draw: st.DrawFn) -> str:
    house = draw(st.integers(1, 99999))
    direction = draw(st.sampled_from(["", "N ", "North ", "SW ", "East "]))
    name = draw(st.sampled_from(["Main", "Oak", "Martin Luther King", "Elm", "Sunset", "Pine"]))
    kind = draw(st.sampled_from(["", " St", " Street", " Ave", " Avenue", " Blvd", " Ct"]))
    unit = draw(st.sampled_from(["", " Apt 4", " #12", " Unit 3B"]))
    return f"{house} {direction}{name}{kind}{unit}"


@given(street_lines())
@settings(max_examples=200)
def test_address_normalisation_is_idempotent(line: str) -> None:
    a = normalize_address(line)
    again = normalize_address(a.render())
    assert (again.house, again.name, again.direction, again.street_type, again.unit) == (
        a.house, a.name, a.direction, a.street_type, a.unit)


@pytest.mark.parametrize(("written", "zip_code"), [
    ("94110", "94110"), ("94110-1234", "94110"), ("941101234", "94110"), (" 94110 ", "94110"),
    ("9411", "9411"), ("941", ""), ("", ""), ("n/a", ""),
])
def test_zip(written: str, zip_code: str) -> None:
    assert normalize_zip(written) == zip_code
    assert normalize_address("1 Main St", "", written).zip == zip_code


def test_county() -> None:
    assert normalize_county("los  angeles county") == normalize_county("Los Angeles") == (
        "LOS ANGELES")
    assert normalize_county("County") == "COUNTY"


# -- eligibility ---------------------------------------------------------------------------


@pytest.mark.parametrize(("v", "s", "reason"), [
    (voter(), sig(), Reason.MATCHED),
    (voter(status="CANCELLED"), sig(), Reason.VOTER_CANCELLED),
    (voter(status="inactive"), sig(), Reason.VOTER_INACTIVE),
    (voter(status=" Active "), sig(), Reason.MATCHED),
    (voter(registered=date(2024, 5, 1)), sig(), Reason.SIGNED_BEFORE_REGISTRATION),
    (voter(registered=date(2024, 3, 1)), sig(), Reason.MATCHED),
    (voter(registered=None), sig(), Reason.MATCHED),
    (voter(), sig(deadline=date(2024, 2, 1)), Reason.SIGNED_AFTER_DEADLINE),
    (voter(), sig(deadline=date(2024, 3, 1)), Reason.MATCHED),
    (voter(), sig(signed=None, deadline=date(2024, 2, 1)), Reason.MATCHED),
    (voter(status="CANCELLED"), sig(deadline=date(2024, 2, 1)), Reason.VOTER_CANCELLED),
])
def test_eligibility(v: VoterRecord, s: SignatureInput, reason: Reason) -> None:
    assert eligibility(v, s) is reason


# -- settings ------------------------------------------------------------------------------

BASE = {"DATABASE_URL": "postgresql://x/y", "KAFKA_BOOTSTRAP_SERVERS": "k:9092",
        "GRPC_PORT": "1", "METRICS_PORT": "2"}


def test_match_config_defaults_and_environment() -> None:
    d = MatchConfig()
    assert 0 < d.review_threshold <= d.accept_threshold <= 100 and d.max_candidates >= 1
    c = Config.from_env(BASE)
    assert c.match == d
    c = Config.from_env({**BASE, "MATCH_ACCEPT_THRESHOLD": "99", "MATCH_REVIEW_THRESHOLD": "60"})
    assert (c.match.accept_threshold, c.match.review_threshold) == (99.0, 60.0)


@pytest.mark.parametrize("env", [
    {"MATCH_REVIEW_THRESHOLD": "0"},
    {"MATCH_REVIEW_THRESHOLD": "-5"},
    {"MATCH_ACCEPT_THRESHOLD": "101"},
    {"MATCH_ACCEPT_THRESHOLD": "40", "MATCH_REVIEW_THRESHOLD": "60"},
])
def test_match_thresholds_are_checked(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="THRESHOLD"):
        Config.from_env({**BASE, **env})


def test_model_settings_are_checked() -> None:
    c = Config.from_env(BASE)
    assert 1 <= c.model.train_min <= c.model.train_max
    with pytest.raises(ConfigError, match="MATCH_TRAIN_MIN"):
        Config.from_env({**BASE, "MATCH_TRAIN_MIN": "0"})
    with pytest.raises(ConfigError, match="MATCH_TRAIN_MIN"):
        Config.from_env({**BASE, "MATCH_TRAIN_MIN": "500", "MATCH_TRAIN_MAX": "100"})


@pytest.mark.parametrize(("line", "reading"), [
    ("453 6SMITH", "4536 SMITH"),
    ("269 0Grant Circle", "2690 GRANT CIRCLE"),
    ("1481 8E. DECKER ST", "14818 E. DECKER ST"),
    ("12 3RD ST", ""),       # an ordinal street
    ("12 21st St", ""),
    ("12 MAIN ST", ""),
    ("UNIT 4", ""),
])
def test_a_house_number_read_across_a_space(line: str, reading: str) -> None:
    assert split_house_reading(line) == reading
    if reading:
        # the same characters, the house number one digit longer
        assert normalize_address(reading).house == normalize_address(line).house + line.split()[1][0]


@pytest.mark.parametrize(("line", "reading"), [
    ("1A793 KATHRYN TER", "14793 KATHRYN TER"),
    ("g220 Carrie Dr", "9220 Carrie Dr"),      # a lower-case g is a 9 ...
    ("G220 Carrie Dr", "6220 Carrie Dr"),      # ... an upper-case G a 6
    ("260b Wilkins Blvd", "2606 Wilkins Blvd"),
    ("17s75 west ave", "17575 west ave"),
    ("1704o E GIBSON AVE", "17040 E GIBSON AVE"),
    ("4536 LARKSPUR ST", ""),   # digits only
    ("4X36 LARKSPUR ST", ""),   # X looks like no digit
    ("5 OAK ST", ""),           # one digit: not a house number with a slip inside
    ("A1B OAK ST", ""),         # fewer than two digits
    ("12AB3 OAK ST", "12483 OAK ST"),
    ("1A793", ""),              # no street after it
])
def test_letters_in_a_house_number_read_as_the_digits_they_look_like(
        line: str, reading: str) -> None:
    assert house_digit_reading(line) == reading


def test_a_street_type_run_onto_the_name() -> None:
    assert run_together_types("ANGELICAAVENUE")[0] == "ANGELICA"
    assert run_together_types("TIFFANYCT") == ("TIFFANY",)
    assert "BROAD" in run_together_types("BROADWAY")
    assert run_together_types("MAIN") == ()
    assert run_together_types("ST") == ()      # no name left before the type


_NAME_BOX = st.lists(st.sampled_from(
    ["de la", "Cruz", "JR", "sr", "III", "Nguyễn", "Thị", "O'Brien", "Mary-Jo", "x", "", "  ",
     "2nd", "Jean Luc", "IV", "van", "Da Silva", "Núñez"]), max_size=4).map(" ".join)


@given(firsts=st.lists(_NAME_BOX, max_size=12), data=st.data())
def test_swapped_names_are_person_name_read_the_other_way(firsts: list[str],
                                                          data: st.DataObject) -> None:
    lasts = data.draw(st.lists(_NAME_BOX, min_size=len(firsts), max_size=len(firsts)))
    want = [person_name(last, "", first) for first, last in zip(firsts, lasts, strict=True)]
    got = swapped_names(firsts, lasts)
    assert got == ([w.first for w in want], [w.middle for w in want], [w.last for w in want])


@given(st.lists(st.sampled_from(["N", "NORTH", "ST", "STREET", "AVE", "Main", "123", "5TH",
                                 "CIR", "PKWY", "W", "  ", "\t", "a\tb", ""]), max_size=7),
       st.sampled_from([" ", "  ", "\t"]))
def test_written_line_writes_each_word_out(words: list[str], sep: str) -> None:
    line = sep.join(words)
    assert written_line(line) == "".join(written_line(w) for w in line.split())
    assert " " not in written_line(line)
