"""Scoring a run against a truth file: link precision/recall, the results export, the table."""

from __future__ import annotations

from pathlib import Path

import pytest

from sigverify_cli.scoring import (
    Linkage,
    compare,
    format_accuracy,
    format_confusion,
    load_batch_map,
    read_results_csv,
)

TRUTH = (
    "batch_file,line,expected_status,expected_reason,voter_id,noise\n"
    "a.csv,1,VALID,MATCHED,V1,\n"              # linked right
    "a.csv,2,VALID,MATCHED,V2,\n"              # linked to the wrong voter (counted anyway)
    "a.csv,3,INVALID,NOT_REGISTERED,,\n"       # a false accept: a link that should not be
    "a.csv,4,INVALID,DUPLICATE,V1,\n"          # duplicate linked right
    "b.csv,1,VALID,MATCHED,V4,\n"              # review: no link
    "b.csv,2,INVALID,INCOMPLETE,V5,\n"         # incomplete: not a link to find
    "b.csv,3,INVALID,WRONG_COUNTY,V6,\n"       # invalid, but linked right
    "b.csv,4,VALID,MATCHED,V7,\n"              # rejected, no link
)


def _truth(tmp_path: Path) -> Path:
    p = tmp_path / "truth.csv"
    p.write_text(TRUTH, encoding="utf-8")
    return p


RESULTS = {
    ("a.csv", 1): ("VALID", "MATCHED", "V1"),
    ("a.csv", 2): ("VALID", "MATCHED", "V9"),
    ("a.csv", 3): ("VALID", "MATCHED", "V8"),
    ("a.csv", 4): ("INVALID", "DUPLICATE", "V1"),
    ("b.csv", 1): ("REVIEW", "PENDING_REVIEW", "V4"),
    ("b.csv", 2): ("INVALID", "INCOMPLETE", ""),
    ("b.csv", 3): ("INVALID", "WRONG_COUNTY", "V6"),
    ("b.csv", 4): ("INVALID", "NOT_REGISTERED", ""),
}


def test_links_are_counted_as_documented(tmp_path: Path) -> None:
    acc = compare(_truth(tmp_path), RESULTS)
    # true links: a1 a2 a4 b1 b3 b4 (b2 is INCOMPLETE, a3 has no voter); predicted: a1 a2 a3
    # a4 b3 (b1 is a review); correct: a1 a4 b3
    assert acc.links == Linkage(true_links=6, predicted=5, correct=3)
    assert acc.links.precision == pytest.approx(0.6)
    assert acc.links.recall == pytest.approx(0.5)
    assert acc.links.f1 == pytest.approx(2 * 0.6 * 0.5 / 1.1)
    # a3 (counted, no one on the roll signed) and a2 (counted for V9, V2 signed)
    assert (acc.valid, acc.false_accept, acc.false_reject, acc.to_review) == (4, 2, 1, 1)
    assert (acc.wrong_voter, acc.stand_in) == (1, 0)
    assert acc.rates()["valid_rejected_rate"] == 0.25
    text = format_accuracy(acc)
    assert "links: precision 0.6000   recall 0.5000" in text
    assert "valid signatures rejected 1 of 4 (25.000%)" in text


def test_a_duplicate_counted_in_place_of_an_unrecognised_first_signature(
        tmp_path: Path) -> None:
    """V10 signed twice: the first (the one the truth counts) was not recognised, the second
    was counted in its place; V10 is counted once, so it is no false accept (the first is a
    false reject). V11's duplicate counted beside its first is a false accept."""
    truth = tmp_path / "truth.csv"
    truth.write_text(
        "batch_file,line,expected_status,expected_reason,voter_id\n"
        "c.csv,1,VALID,MATCHED,V10\n"
        "c.csv,2,INVALID,DUPLICATE,V10\n"
        "c.csv,3,VALID,MATCHED,V11\n"
        "c.csv,4,INVALID,DUPLICATE,V11\n"
        "c.csv,5,INVALID,DUPLICATE,V12\n", encoding="utf-8")
    results = {("c.csv", 1): ("INVALID", "NOT_REGISTERED", ""),
               ("c.csv", 2): ("VALID", "MATCHED", "V10"),
               ("c.csv", 3): ("VALID", "MATCHED", "V11"),
               ("c.csv", 4): ("VALID", "MATCHED", "V11"),
               ("c.csv", 5): ("VALID", "MATCHED", "V13")}
    acc = compare(truth, results)
    assert (acc.stand_in, acc.false_accept, acc.false_reject, acc.wrong_voter) == (1, 2, 1, 0)
    assert "counted in place of their voter's unrecognised first signature (not false " \
        "accepts) 1" in format_accuracy(acc)
    # Without voter ids nothing shows whose signature was counted: every one is a false accept.
    plain = compare(truth, {k: v[:2] for k, v in results.items()})
    assert (plain.stand_in, plain.false_accept) == (0, 3)


def test_without_voter_ids_there_is_no_linkage(tmp_path: Path) -> None:
    acc = compare(_truth(tmp_path), {k: (v[0], v[1]) for k, v in RESULTS.items()})
    assert acc.links is None
    assert "links:" not in format_accuracy(acc)


def test_confusion_table_has_the_agreements_on_its_diagonal(tmp_path: Path) -> None:
    acc = compare(_truth(tmp_path), RESULTS)
    table = acc.confusion_table()
    assert table == {
        ("DUPLICATE", "DUPLICATE"): 1, ("INCOMPLETE", "INCOMPLETE"): 1,
        ("MATCHED", "MATCHED"): 2, ("MATCHED", "NOT_REGISTERED"): 1, ("MATCHED", "REVIEW"): 1,
        ("NOT_REGISTERED", "MATCHED"): 1, ("WRONG_COUNTY", "WRONG_COUNTY"): 1,
    }
    assert sum(table.values()) == acc.signatures
    text = format_confusion(acc).splitlines()
    assert text[0].split()[-1] == "WRONG_COUNTY"
    matched = next(line for line in text if line.startswith("MATCHED "))
    assert matched.split()[1:] == ["0", "0", "2", "1", "1", "0"]


def test_a_results_export_is_read_through_the_batch_map(tmp_path: Path) -> None:
    export = tmp_path / "results.csv"
    export.write_text(
        "signature_id,batch_id,county,line,status,reason,voter_id,score\n"
        "s1,B-1,Kern,1,VALID,MATCHED,V1,97.00\n"
        "s2,B-1,Kern,3,INVALID,NOT_REGISTERED,,10.00\n"
        "s3,B-2,Kern,1,NOT_SAMPLED,,,0.00\n"
        "s4,B-3,Kern,1,VALID,MATCHED,V1,97.00\n", encoding="utf-8")
    bmap = tmp_path / "batches.csv"
    bmap.write_text("batch_id,batch_file\nB-1,/x/a.csv\nB-2,b.csv\n", encoding="utf-8")
    got = read_results_csv(export, load_batch_map(bmap))
    assert got == {("a.csv", 1): ("VALID", "MATCHED", "V1"),
                   ("a.csv", 3): ("INVALID", "NOT_REGISTERED", ""),
                   ("b.csv", 1): ("NOT_SAMPLED", "", ""),
                   ("B-3", 1): ("VALID", "MATCHED", "V1")}
    acc = compare(_truth(tmp_path), got)
    assert acc.confusion[("MATCHED", "NOT_SAMPLED")] == 1
    assert acc.confusion[("MATCHED", "MISSING")] == 2   # a2 and b4
    assert acc.links == Linkage(true_links=6, predicted=1, correct=1)


def test_a_bad_results_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "r.csv"
    bad.write_text("signature_id,batch_id,line,status\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"r\.csv: results header lacks reason, voter_id"):
        read_results_csv(bad)
    bad.write_text("batch_id,line,status,reason,voter_id\nB,x,VALID,,\n", encoding="utf-8")
    with pytest.raises(ValueError, match="record 2: line 'x'"):
        read_results_csv(bad)
