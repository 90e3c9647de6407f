"""The matching core: normalisation, field scores, eligibility and the decision rules."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sigverify_common.vocab import Decision, Reason
from sigverify_matching.domain import (
    MatchConfig,
    SignatureInput,
    VoterRecord,
    address_similarity,
    compare,
    decide,
    eligibility,
    first_similarity,
    normalize_address,
    normalize_county,
    normalize_text,
    normalize_unit,
    person_name,
    prepare_signature,
    prepare_voter,
    zip_similarity,
)

CONFIG = MatchConfig()


def voter(voter_id: str = "V1", first: str = "Robert", last: str = "Johnson", *,
          middle: str = "James", suffix: str = "", street: str = "123 N Main St",
          unit: str = "", zip_code: str = "94110", county: str = "Alameda",
          status: str = "ACTIVE", birth: date | None = None,
          registered: date | None = date(2010, 1, 1)) -> VoterRecord:
    return VoterRecord(voter_id=voter_id, first_name=first, middle_name=middle, last_name=last,
                       suffix=suffix, birth_date=birth, street=street, unit=unit, city="Oakland",
                       zip=zip_code, county=county, status=status, registered_on=registered)


def sig(first: str = "Robert", last: str = "Johnson", *, middle: str = "",
        street: str = "123 North Main Street", unit: str = "", city: str = "Oakland",
        zip_code: str = "94110", county: str = "Alameda", signed: date | None = date(2024, 3, 1),
        birth: date | None = None, deadline: date | None = None) -> SignatureInput:
    return SignatureInput(first_name=first, middle_name=middle, last_name=last, street=street,
                          unit=unit, city=city, zip=zip_code, county=county, signed_on=signed,
                          birth_date=birth, deadline=deadline)


def score(s: SignatureInput, v: VoterRecord) -> float:
    return compare(prepare_signature(s), prepare_voter(v)).score


# -- normalisation -------------------------------------------------------------------------


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


@pytest.mark.parametrize(("a", "b"), [
    ("123 North Main Street", "123 N MAIN ST"),
    ("123 N. Main St.", "123 north main street"),
    ("9 Saint James Place", "9 St James Pl"),
    ("500 MacArthur Boulevard NW", "500 Macarthur Blvd Northwest"),
    ("12 First Avenue", "12 1st Ave"),
    ("77 Elm Street Apt 4", "77 Elm St"),
])
def test_street_spellings_normalise_alike(a: str, b: str) -> None:
    x, y = normalize_address(a), normalize_address(b)
    assert (x.house, x.name, x.direction, x.street_type) == (y.house, y.name, y.direction,
                                                             y.street_type)
    assert address_similarity(x, y) == 1.0


def test_units_compare_equal_however_written() -> None:
    assert {normalize_unit(u) for u in ("Apt 4", "#4", "Unit 4", "apt. # 4", "APARTMENT 4")} == {"4"}
    assert normalize_address("77 Elm St #4").unit == "4"
    assert normalize_address("77 Elm St", "Apt 4").unit == "4"
    assert normalize_address("77 Elm St Apt 4") .name == normalize_address("77 Elm St").name


def test_a_fraction_or_house_letter_is_not_another_house() -> None:
    assert normalize_address("123 1/2 Main St").house == "123"
    assert normalize_address("123-B Main St").house == "123"
    assert normalize_address("123-B Main St").unit == "B"


def test_other_house_or_street_or_direction_is_another_address() -> None:
    a = normalize_address("123 N Main St")
    assert address_similarity(a, normalize_address("125 N Main St")) == 0.0
    assert address_similarity(a, normalize_address("123 Oak Ave")) < 0.6
    assert address_similarity(a, normalize_address("123 S Main St")) < 0.6
    assert address_similarity(a, normalize_address("123 Main St")) == 1.0  # direction missing


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
    assert normalize_address(a.render()) == a


def test_names_split_suffix_and_middle_initial() -> None:
    n = person_name("John Q.", "", "Smith Jr.")
    assert (n.first, n.middle, n.last, n.suffix) == ("JOHN", "Q", "SMITH", "JR")
    assert person_name("Ann", "", "de la Cruz").last == "DELACRUZ"
    assert person_name("John", "", "Smith", "Sr.").suffix == "SR"


def test_nicknames_and_initials() -> None:
    assert first_similarity("BOB", "ROBERT") == 1.0
    assert first_similarity("LIZ", "ELIZABETH") == 1.0
    assert first_similarity("BOB", "ROB") == 1.0
    assert first_similarity("R", "ROBERT") == 0.9
    assert first_similarity("CHRISTOPHER", "CHRISTINA") < 0.85
    assert first_similarity("JOHN", "MARY") < 0.5


def test_zip_and_county() -> None:
    assert zip_similarity("94110", "94110-1234"[:5]) == 1.0
    assert zip_similarity("94110", "94116") == 0.5
    assert zip_similarity("94110", "90210") == 0.0
    assert zip_similarity("", "94110") is None
    assert normalize_county("los  angeles county") == normalize_county("Los Angeles")


# -- scores --------------------------------------------------------------------------------


def test_score_exact_and_noise() -> None:
    v = voter()
    assert score(sig(), v) == 100.0
    assert score(sig("ROBERT", "JOHNSON", street="123 n. main st."), v) == 100.0
    assert score(sig("bob", "johnson"), v) == 100.0
    assert score(sig(middle="J"), v) >= CONFIG.accept_threshold
    assert score(sig("Robert", "Jonhson"), v) >= CONFIG.accept_threshold
    assert score(sig(zip_code="94116"), v) >= CONFIG.accept_threshold
    assert score(sig("Johnson", "Robert"), v) >= CONFIG.accept_threshold


def test_household_member_and_namesake_elsewhere_score_below_review() -> None:
    v = voter()
    for s in (sig("Mary"), sig("Susan"), sig("Joan", "Johnson")):
        assert score(s, v) < CONFIG.review_threshold
    assert score(sig(street="42 Birch Rd"), v) < CONFIG.review_threshold


def test_birth_date_confirms_or_denies() -> None:
    v = voter(birth=date(1970, 5, 6))
    assert score(sig(birth=date(1970, 5, 6)), v) == 100.0
    assert score(sig(birth=date(1970, 6, 5)), v) >= CONFIG.accept_threshold  # day/month swapped
    assert score(sig(birth=date(1988, 1, 2)), v) < CONFIG.review_threshold
    assert score(sig(), v) == 100.0  # missing on one side: neutral


def test_suffix_separates_father_and_son() -> None:
    sr, jr = voter("SR", first="John", last="Smith", suffix="Sr"), voter("JR", "John", "Smith",
                                                                         suffix="Jr")
    s = sig("John", "Smith Jr")
    assert score(s, jr) == 100.0
    assert score(s, sr) < CONFIG.review_threshold + 10


def test_field_scores_are_reported() -> None:
    c = compare(prepare_signature(sig(middle="J", birth=date(1970, 1, 1))),
                prepare_voter(voter(birth=date(1970, 1, 1))))
    assert set(c.field_scores) == {"first", "middle", "last", "address", "zip", "birth_date"}
    assert all(0 <= x <= 100 for x in c.field_scores.values())
    assert c.candidate().voter_id == "V1"


# -- eligibility and decisions ------------------------------------------------------------


@pytest.mark.parametrize(("v", "s", "reason"), [
    (voter(), sig(), Reason.MATCHED),
    (voter(status="CANCELLED"), sig(), Reason.VOTER_CANCELLED),
    (voter(status="inactive"), sig(), Reason.VOTER_INACTIVE),
    (voter(registered=date(2024, 5, 1)), sig(), Reason.SIGNED_BEFORE_REGISTRATION),
    (voter(), sig(deadline=date(2024, 2, 1)), Reason.SIGNED_AFTER_DEADLINE),
    (voter(), sig(deadline=date(2024, 3, 1)), Reason.MATCHED),
    (voter(), sig(signed=None, deadline=date(2024, 2, 1)), Reason.MATCHED),
])
def test_eligibility(v: VoterRecord, s: SignatureInput, reason: Reason) -> None:
    assert eligibility(v, s) is reason


def _decide(s: SignatureInput, *voters: VoterRecord, crowded: bool = False):  # type: ignore[no-untyped-def]
    p = prepare_signature(s)
    return decide(p, [compare(p, prepare_voter(v)) for v in voters], CONFIG, crowded)


def test_decide_match_carries_the_eligibility_reason() -> None:
    r = _decide(sig(), voter(status="CANCELLED"))
    assert (r.decision, r.reason, r.voter_id) == (Decision.MATCH, Reason.VOTER_CANCELLED, "V1")


def test_decide_wrong_county_and_address_mismatch() -> None:
    r = _decide(sig(county="Marin"), voter())
    assert (r.decision, r.reason, r.voter_id) == (Decision.NO_MATCH, Reason.WRONG_COUNTY, "V1")
    r = _decide(sig(street="42 Birch Rd"), voter())
    assert (r.decision, r.reason, r.voter_id) == (Decision.NO_MATCH, Reason.ADDRESS_MISMATCH,
                                                   "V1")


def test_decide_common_name_elsewhere_is_not_registered() -> None:
    two = (voter("A", street="1 Oak St"), voter("B", street="2 Elm St"))
    r = _decide(sig(), *two)
    assert (r.decision, r.reason, r.voter_id) == (Decision.NO_MATCH, Reason.NOT_REGISTERED, "")
    r = _decide(sig(), voter("A", street="1 Oak St"), crowded=True)
    assert r.reason is Reason.NOT_REGISTERED


def test_decide_review_band_and_nothing() -> None:
    r = _decide(sig(middle="Xavier"), voter())  # contradicting middle name
    assert (r.decision, r.reason, r.voter_id) == (Decision.REVIEW, Reason.PENDING_REVIEW, "V1")
    assert CONFIG.review_threshold <= r.score < CONFIG.accept_threshold
    r = _decide(sig())
    assert (r.decision, r.reason, r.voter_id, r.candidates) == (
        Decision.NO_MATCH, Reason.NOT_REGISTERED, "", ())


def test_decide_limits_candidates_best_first() -> None:
    voters = [voter(f"V{i}", first=f"Name{i}", street=f"{i} Oak St") for i in range(8)]
    p = prepare_signature(sig())
    r = decide(p, [compare(p, prepare_voter(v)) for v in [voter(), *voters]],
               MatchConfig(max_candidates=3), False)
    assert len(r.candidates) == 3
    assert r.candidates[0].voter_id == "V1"
    assert [c.score for c in r.candidates] == sorted((c.score for c in r.candidates),
                                                     reverse=True)


def test_identical_twins_in_the_roll_go_to_review() -> None:
    r = _decide(sig("John", "Smith"), voter("SR", "John", "Smith", middle="", suffix="Sr"),
                voter("JR", "John", "Smith", middle="", suffix="Jr"))
    assert (r.decision, r.reason) == (Decision.REVIEW, Reason.PENDING_REVIEW)
