"""The report writer, the watch frame and the --json tally, from a Tally built without I/O."""

from __future__ import annotations

import csv
import io
import json
import random
import re
from datetime import UTC, date, datetime
from pathlib import Path

from rich.console import Console

from sigverify.tally.v1 import tally_pb2
from sigverify_cli.main import tally_dict
from sigverify_cli.report import CIRCULATOR_COLUMNS, write_report
from sigverify_cli.watch import render
from sigverify_common.vocab import Reason, Status
from sigverify_tally.convert import tally_to_pb
from sigverify_tally.domain import Counts, fold, total
from sigverify_tally.repository import PetitionInfo, TallySnapshot

EVIL = '<script>alert("x")</script> & Co'
MIX = ((Status.VALID, Reason.MATCHED, 0.74), (Status.INVALID, Reason.NOT_REGISTERED, 0.10),
       (Status.INVALID, Reason.ADDRESS_MISMATCH, 0.04), (Status.INVALID, Reason.DUPLICATE, 0.04),
       (Status.INVALID, Reason.WRONG_COUNTY, 0.03), (Status.INVALID, Reason.VOTER_CANCELLED, 0.02),
       (Status.REVIEW, Reason.PENDING_REVIEW, 0.03))


def sample_tally(seed: int = 3) -> tally_pb2.Tally:
    rng = random.Random(seed)
    received: list[tuple[tuple[str, str], int]] = []
    statuses: list[tuple[tuple[str, str], Status, Reason, int]] = []
    for ci, county in enumerate(("Kern", "Orange", EVIL)):
        for i in range(8):
            circ = f"C-{ci}{i:02d}"
            n = rng.randint(60, 200)
            received.append(((county, circ), n + 10))   # 10 still pending each
            for status, reason, share in MIX:
                statuses.append(((county, circ), status, reason, int(n * share)))
        # One circulator per county with a pile of invented people.
        received.append(((county, "C-BAD"), 150))
        statuses.append(((county, "C-BAD"), Status.VALID, Reason.MATCHED, 70))
        statuses.append(((county, "C-BAD"), Status.INVALID, Reason.NOT_REGISTERED, 80))
    pairs = fold(received, statuses)
    by_county: dict[str, Counts] = {}
    by_circ: dict[str, Counts] = {}
    for (county, circ), c in pairs.items():
        for key, d in ((county, by_county), (circ, by_circ)):
            d[key] = total([d.get(key, Counts()), c])
    snap = TallySnapshot(
        petition=PetitionInfo("calexit", EVIL, 5_000, date(2017, 7, 25)),
        total=total(by_county.values()), by_county=by_county, by_batch={"b-1": total(by_county.values())},
        by_circulator=by_circ, rows_rejected=4, by_county_circulator=pairs)
    return tally_to_pb(snap, now=datetime(2017, 7, 1, tzinfo=UTC))


def test_flags_reach_the_tally_message() -> None:
    t = sample_tally()
    flagged = {(x.county, x.circulator_id) for x in t.flagged_circulators}
    assert flagged == {("Kern", "C-BAD"), ("Orange", "C-BAD"), (EVIL, "C-BAD")}
    assert len(t.circulators) == 27
    assert all(x.flagged for x in t.circulators[:3])
    assert t.flag_policy.min_decided == 20 and "NOT_REGISTERED" in t.flag_policy.suspect_reasons
    d = tally_dict(t)
    json.dumps(d)
    assert len(d["flagged_circulators"]) == 3
    assert d["flagged_circulators"][0]["suspect_by_reason"] == {"NOT_REGISTERED": 80}
    assert d["days_to_deadline"] == 24


def test_report_writes_three_files_with_the_right_columns(tmp_path: Path) -> None:
    t = sample_tally()
    files = write_report(t, tmp_path / "out")
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"counties.csv", "circulators.csv",
                                                              "report.html"}
    with files.counties_csv.open(newline="", encoding="utf-8") as fh:
        counties = list(csv.DictReader(fh))
    header = list(counties[0])
    assert header[:5] == ["county", "received", "verified", "valid", "invalid"]
    assert header[-4:] == ["review", "duplicates", "pending", "valid_percent"]
    for r in Reason:
        if r not in (Reason.MATCHED, Reason.PENDING_REVIEW):
            assert f"invalid_{r.value.lower()}" in header
    assert {r["county"] for r in counties} == {"Kern", "Orange", EVIL}
    for row in counties:
        reasons = sum(int(v) for k, v in row.items() if k.startswith("invalid_"))
        assert reasons == int(row["invalid"])
        assert int(row["verified"]) + int(row["pending"]) == int(row["received"])
        assert int(row["duplicates"]) == int(row["invalid_duplicate"])
    kern = next(r for r in counties if r["county"] == "Kern")
    assert 0 < float(kern["valid_percent"]) < 100

    with files.circulators_csv.open(newline="", encoding="utf-8") as fh:
        circs = list(csv.DictReader(fh))
    assert tuple(circs[0]) == CIRCULATOR_COLUMNS
    assert len(circs) == 27
    bad = [r for r in circs if r["flagged"] == "true"]
    assert {r["circulator_id"] for r in bad} == {"C-BAD"}
    assert bad[0]["suspect_reasons"] == "NOT_REGISTERED:80"
    assert float(bad[0]["rate"]) > 2 * float(bad[0]["others_rate"])


def test_report_html_is_self_contained_and_escaped(tmp_path: Path) -> None:
    page = write_report(sample_tally(), tmp_path).html.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; Co" in page
    assert page.count("<svg") == 4        # statewide, counties, reasons, circulators
    assert "C-BAD" in page and "Fisher" in page and "24 days to the deadline" in page


def test_report_of_an_empty_petition(tmp_path: Path) -> None:
    snap = TallySnapshot(petition=PetitionInfo("p", "", 100, date(2017, 7, 25)), total=Counts(),
                         by_county={}, by_batch={}, by_circulator={}, rows_rejected=0)
    files = write_report(tally_to_pb(snap, now=datetime(2017, 8, 1, tzinfo=UTC)), tmp_path)
    page = files.html.read_text(encoding="utf-8")
    assert "No circulator is flagged" in page and "deadline passed 7 days ago" in page
    assert files.counties_csv.read_text(encoding="utf-8").count("\n") == 1


def test_watch_frame_shows_counties_and_flags() -> None:
    out = io.StringIO()
    Console(file=out, width=160, color_system=None).print(render(sample_tally()))
    text = out.getvalue()
    assert "valid / required" in text and "verified / received" in text
    assert "Kern" in text and "Orange" in text
    assert "flagged circulators" in text and "C-BAD" in text
