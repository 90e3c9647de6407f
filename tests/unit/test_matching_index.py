"""The candidate index: blocking finds the voter, and the whole path decides as the rules say."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sigverify_common.vocab import Decision, Reason
from sigverify_matching.domain import MatchConfig, SignatureInput, VoterRecord
from sigverify_matching.index import PASS_CAP, CandidateIndex


def voter(voter_id: str, first: str, last: str, street: str, *, middle: str = "",
          suffix: str = "", unit: str = "", zip_code: str = "94110", county: str = "Alameda",
          status: str = "ACTIVE", birth: date | None = None,
          registered: date | None = date(2010, 1, 1)) -> VoterRecord:
    return VoterRecord(voter_id=voter_id, first_name=first, middle_name=middle, last_name=last,
                       suffix=suffix, birth_date=birth, street=street, unit=unit, city="Oakland",
                       zip=zip_code, county=county, status=status, registered_on=registered)


def sig(first: str, last: str, street: str, *, middle: str = "", unit: str = "",
        city: str = "Oakland", zip_code: str = "94110", county: str = "Alameda",
        signed: date | None = date(2024, 3, 1), birth: date | None = None,
        deadline: date | None = None) -> SignatureInput:
    return SignatureInput(first_name=first, middle_name=middle, last_name=last, street=street,
                          unit=unit, city=city, zip=zip_code, county=county, signed_on=signed,
                          birth_date=birth, deadline=deadline)


ROLL = [
    voter("R1", "Robert", "Johnson", "123 N Main St", middle="James", birth=date(1960, 4, 2)),
    voter("R2", "Mary", "Johnson", "123 N Main St", middle="Ann"),
    voter("S1", "John", "Smith", "45 Oak Ave", suffix="Sr"),
    voter("S2", "John", "Smith", "45 Oak Ave", suffix="Jr"),
    voter("G1", "Elizabeth", "Garcia", "9 Sunset Blvd", unit="Apt 4", zip_code="94111"),
    voter("N1", "Patricia", "Nguyen", "77 Elm Street", zip_code="94901", county="Marin"),
    voter("C1", "Carlos", "Rivera", "500 Pine St"),
    voter("I1", "Dana", "Okafor", "8 Cedar Ct", status="INACTIVE"),
    voter("X1", "Victor", "Almeida", "3 Birch Rd", status="CANCELLED"),
    voter("L1", "Teresa", "Lindqvist", "60 Walnut St", registered=date(2024, 6, 1)),
    voter("W1", "William", "Brown", "1 Oak St"),
    voter("W2", "William", "Brown", "2 Elm St"),
]


@pytest.fixture(scope="module")
def index() -> CandidateIndex:
    return CandidateIndex.build(ROLL)


def decided(index: CandidateIndex, s: SignatureInput) -> tuple[Decision, Reason, str]:
    r = index.match(s)
    return r.decision, r.reason, r.voter_id


MATCH_R1 = (Decision.MATCH, Reason.MATCHED, "R1")


@pytest.mark.parametrize("s", [
    sig("Robert", "Johnson", "123 N Main St"),  # exact
    sig("ROBERT.", "johnson,", "123 n. main st."),  # case and punctuation
    sig("Robert", "Jonhson", "123 N Main St"),  # typo in the last name
    sig("Robert", "Johnsen", "123 N Main St"),
    sig("Bob", "Johnson", "123 N Main St"),  # nickname
    sig("Robert", "Johnson", "123 N Main St", middle="J"),  # middle initial for the name
    sig("Robert", "Johnson", "123 N Main St", middle="James"),
    sig("Robert J", "Johnson", "123 N Main St"),
    sig("Robert", "Johnson", "123 North Main Street"),  # "N"/"North", "St"/"Street"
    sig("Johnson", "Robert", "123 N Main St"),  # first and last swapped
    sig("Robert", "Johnson", "123 N Main St", zip_code="94119"),  # one wrong zip digit
    sig("Robert", "Johnson", "123 N Main St", city=""),  # city missing
    sig("Robert", "Johnson", "123 N Main St", unit="Apt 9"),  # a unit the roll lacks
    sig("Robert", "Johnson", "123 N Main St", birth=date(1960, 4, 2)),
])
def test_matches_the_voter_through_noise(index: CandidateIndex, s: SignatureInput) -> None:
    r = index.match(s)
    assert (r.decision, r.reason, r.voter_id) == MATCH_R1
    assert r.candidates[0].voter_id == "R1"
    assert r.score >= MatchConfig().accept_threshold


@pytest.mark.parametrize(("street", "unit"), [
    ("9 Sunset Blvd", "Apt 4"), ("9 Sunset Blvd", "#4"), ("9 Sunset Blvd #4", ""),
    ("9 Sunset Boulevard", "Unit 4"), ("9 Sunset Blvd", ""), ("9 Sunset Blvd", "Apt 7"),
])
def test_unit_however_written_or_missing(index: CandidateIndex, street: str, unit: str) -> None:
    s = sig("Liz", "Garcia", street, unit=unit, zip_code="94111")
    assert decided(index, s) == (Decision.MATCH, Reason.MATCHED, "G1")


def test_birth_date_contradiction_prevents_a_match(index: CandidateIndex) -> None:
    r = index.match(sig("Robert", "Johnson", "123 N Main St", birth=date(1990, 11, 30)))
    assert r.decision is not Decision.MATCH
    assert r.reason is Reason.NOT_REGISTERED


def test_father_and_son_at_one_address(index: CandidateIndex) -> None:
    assert decided(index, sig("John", "Smith Jr", "45 Oak Ave")) == (
        Decision.MATCH, Reason.MATCHED, "S2")
    assert decided(index, sig("John", "Smith Sr.", "45 Oak Avenue")) == (
        Decision.MATCH, Reason.MATCHED, "S1")
    r = index.match(sig("John", "Smith", "45 Oak Ave"))  # which one? a person decides
    assert (r.decision, r.reason) == (Decision.REVIEW, Reason.PENDING_REVIEW)
    assert {c.voter_id for c in r.candidates[:2]} == {"S1", "S2"}


def test_household_member_with_another_first_name(index: CandidateIndex) -> None:
    assert decided(index, sig("Susan", "Johnson", "123 N Main St")) == (
        Decision.NO_MATCH, Reason.NOT_REGISTERED, "")
    assert decided(index, sig("Mary", "Johnson", "123 N Main St")) == (
        Decision.MATCH, Reason.MATCHED, "R2")


def test_registered_in_another_county(index: CandidateIndex) -> None:
    assert decided(index, sig("Patricia", "Nguyen", "77 Elm St", zip_code="94901")) == (
        Decision.NO_MATCH, Reason.WRONG_COUNTY, "N1")
    assert decided(index, sig("Pat", "Nguyen", "12 Other Way", zip_code="94110")) == (
        Decision.NO_MATCH, Reason.WRONG_COUNTY, "N1")
    assert decided(index, sig("Patricia", "Nguyen", "77 Elm St", zip_code="94901",
                              county="Marin")) == (Decision.MATCH, Reason.MATCHED, "N1")


def test_registered_at_another_address_in_the_county(index: CandidateIndex) -> None:
    assert decided(index, sig("Carlos", "Rivera", "42 Birch Rd")) == (
        Decision.NO_MATCH, Reason.ADDRESS_MISMATCH, "C1")
    assert decided(index, sig("Carlos", "Rivera", "502 Pine St")) == (  # another house
        Decision.NO_MATCH, Reason.ADDRESS_MISMATCH, "C1")


def test_common_name_at_another_address_is_not_registered(index: CandidateIndex) -> None:
    assert decided(index, sig("William", "Brown", "3 Pine St")) == (
        Decision.NO_MATCH, Reason.NOT_REGISTERED, "")
    assert decided(index, sig("Bill", "Brown", "2 Elm Street")) == (
        Decision.MATCH, Reason.MATCHED, "W2")


@pytest.mark.parametrize(("s", "reason", "voter_id"), [
    (sig("Dana", "Okafor", "8 Cedar Court"), Reason.VOTER_INACTIVE, "I1"),
    (sig("Victor", "Almeida", "3 Birch Road"), Reason.VOTER_CANCELLED, "X1"),
    (sig("Teresa", "Lindqvist", "60 Walnut St"), Reason.SIGNED_BEFORE_REGISTRATION, "L1"),
    (sig("Robert", "Johnson", "123 N Main St", deadline=date(2024, 2, 1)),
     Reason.SIGNED_AFTER_DEADLINE, "R1"),
])
def test_eligibility_of_a_matched_voter(index: CandidateIndex, s: SignatureInput,
                                        reason: Reason, voter_id: str) -> None:
    assert decided(index, s) == (Decision.MATCH, reason, voter_id)


def test_nobody_and_match_many(index: CandidateIndex) -> None:
    sigs = [sig("Zebulon", "Quarrington", "999 Nowhere Ln"), sig("Bob", "Johnson", "123 Main")]
    results = index.match_many(sigs)
    assert [(r.decision, r.reason, r.voter_id) for r in results] == [
        (Decision.NO_MATCH, Reason.NOT_REGISTERED, ""), MATCH_R1]
    assert len(index) == len(ROLL)
    assert index.match_many([]) == []


def test_candidates_capped_by_config(index: CandidateIndex) -> None:
    r = index.match(sig("Mary", "Johnson", "123 N Main St"), MatchConfig(max_candidates=1))
    assert len(r.candidates) == 1


def test_surname_typo_found_through_first_name_block() -> None:
    """Wrong first letter of the surname and a wrong house: only (zip, first) finds her."""
    idx = CandidateIndex.build([voter("K1", "Gwendolyn", "Kowalski", "10 Lake St")])
    r = idx.match(sig("Gwendolyn", "Cowalski", "10 Lake Street"))
    assert r.candidates and r.candidates[0].voter_id == "K1"


def test_crowded_name_block_still_finds_the_voter_at_the_address() -> None:
    n = PASS_CAP + 30
    roll = [voter(f"J{i}", "John", "Smith", f"{i + 1} Elm St", zip_code=f"9{i % 7}000",
                  county=("Alameda", "Marin")[i % 2]) for i in range(n)]
    idx = CandidateIndex.build(roll)
    target = roll[n - 1]
    s = sig("John", "Smith", target.street, zip_code=target.zip, county=target.county)
    assert decided(idx, s) == (Decision.MATCH, Reason.MATCHED, target.voter_id)
    assert decided(idx, sig("John", "Smith", "5000 Nowhere Rd")) == (
        Decision.NO_MATCH, Reason.NOT_REGISTERED, "")


_LETTERS = st.text(alphabet="ABCDEFGHIJKLMNOPRSTUVWYZ", min_size=2, max_size=10)


@given(first=_LETTERS, last=_LETTERS, middle=st.sampled_from(["", "A", "Lee"]),
       house=st.integers(1, 9999), street=st.sampled_from(["Main St", "Oak Avenue", "N 1st St"]),
       zip_code=st.from_regex(r"9[0-9]{4}", fullmatch=True),
       birth=st.none() | st.dates(date(1920, 1, 1), date(2006, 1, 1)))
@settings(max_examples=150, deadline=None)
def test_a_voter_matches_their_own_record(first: str, last: str, middle: str, house: int,
                                          street: str, zip_code: str,
                                          birth: date | None) -> None:
    v = voter("ME", first, last, f"{house} {street}", middle=middle, zip_code=zip_code,
              birth=birth)
    idx = CandidateIndex.build([v, *ROLL])
    r = idx.match(sig(v.first_name, v.last_name, v.street, middle=middle, zip_code=zip_code,
                      birth=birth))
    assert (r.decision, r.reason, r.voter_id) == (Decision.MATCH, Reason.MATCHED, "ME")
    assert r.score == 100.0


def test_a_reviewable_voter_at_the_address_beats_a_namesake_elsewhere() -> None:
    idx = CandidateIndex.build([voter("F1", "Michael", "Ford", "1465 Jones Orchard"),
                                voter("F2", "Michael", "Forx", "20 Other St")])
    r = idx.match(sig("Michael", "Forx", "1465 Jones Orchard"))
    assert (r.decision, r.reason, r.voter_id) == (Decision.REVIEW, Reason.PENDING_REVIEW, "F1")
