"""The CLI's side of the statutory process, from messages built without I/O: the --json tally,
the table, the report, the live view, the sample re-draw check, wait and the results export."""

from __future__ import annotations

import argparse
import csv
import io
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from sigverify.common.v1 import common_pb2
from sigverify.intake.v1 import intake_pb2
from sigverify.tally.v1 import tally_pb2
from sigverify_cli import client, main
from sigverify_cli.client import CliError
from sigverify_cli.report import SAMPLE_COLUMNS, write_report
from sigverify_cli.statutory import check_draw, dec, statewide_facts
from sigverify_cli.watch import render
from sigverify_common.sampling import draw_key, draw_order

EXPLANATION = ("The projection (99.91 % of the requirement) called for a full count, which "
               "reached the requirement with 7,461 signatures still unverified.")


def county(name: str, raw: int, sample: int, valid: int, dups: int, rate: str, v: int, a: str,
           b: str, c: int, projected: int, *, counted: bool = False) -> tally_pb2.CountyProjection:
    return tally_pb2.CountyProjection(
        county=name, raw=raw, closed=True, sample_size=sample, sample_verified=sample,
        valid_in_sample=valid, duplicates_in_sample=dups, rate_percent=rate, v=v, a=a, b=b, c=c,
        projected=projected, complete=True, counted=counted, seed=f"{name.lower()}-seed")


def counts(received: int, valid: int, invalid: int, not_sampled: int = 0) -> tally_pb2.Counts:
    return tally_pb2.Counts(received=received, verified=valid + invalid, valid=valid,
                            invalid=invalid, not_sampled=not_sampled,
                            duplicates=1, invalid_by_reason=[tally_pb2.ReasonCount(
                                reason=common_pb2.REASON_DUPLICATE, count=1)] if invalid else [])


def statutory_tally() -> tally_pb2.Tally:
    """A random-sample petition whose projection (the worked examples of 2 CCR 20540 and a
    2012 local initiative, plus a county small enough to count) fell in the band, and whose
    full count then qualified it at the requirement."""
    kern = county("Kern", 24_034, 722, 516, 2, "71.47", 17_178, "33.2881", "1074.80951161", 2_150,
                  15_028)
    cruz = county("Santa Cruz", 10_007, 500, 262, 1, "52.40", 5_244, "20.0140", "380.54619600",
                  381, 4_863)
    alpine = county("Alpine", 120, 120, 90, 0, "75.00", 90, "1", "0", 0, 90, counted=True)
    by_county = [tally_pb2.GroupCounts(key="Kern", counts=counts(24_034, 15_000, 4_000, 5_034)),
                 tally_pb2.GroupCounts(key="Santa Cruz", counts=counts(10_007, 4_910, 2_670, 2_427)),
                 tally_pb2.GroupCounts(key="Alpine", counts=counts(120, 90, 30))]
    total = counts(34_161, 20_000, 6_700, 7_461)
    return tally_pb2.Tally(
        petition_id="prop-x", title="Proposition X", required_signatures=20_000,
        deadline="2026-06-30", days_to_deadline=40, total=total, progress_percent=100.0,
        by_county=by_county, as_of="2026-05-21T12:00:00+00:00",
        method=common_pb2.VERIFICATION_METHOD_RANDOM_SAMPLE,
        statutory=tally_pb2.Statutory(
            stage="decided", raw_total=34_161, raw_complete=True, counties=[kern, cruz, alpine],
            projected_total=19_981, fail_below="19000.00", qualify_above="22000.00",
            projected_percent="99.91", sample_outcome=tally_pb2.OUTCOME_FULL_COUNT,
            sample_decided_at="2026-05-01T10:00:00+00:00", full_count=True, counted_valid=20_000,
            counted_verified=26_700, counted_remaining=7_461, outcome=tally_pb2.OUTCOME_QUALIFIES,
            decided_at="2026-05-20T16:30:00+00:00", decided_by="full count",
            stopped_at_requirement=True, explanation=EXPLANATION))


def full_count_tally() -> tally_pb2.Tally:
    return tally_pb2.Tally(petition_id="p", title="P", required_signatures=100,
                           total=counts(10, 5, 5), by_county=[tally_pb2.GroupCounts(
                               key="Kern", counts=counts(10, 5, 5))])


@pytest.fixture
def out(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    buf = io.StringIO()
    monkeypatch.setattr(main, "console", Console(file=buf, width=220, color_system=None))
    monkeypatch.setattr(main, "err", Console(file=buf, width=220, color_system=None))
    yield buf


def fields(message: Any) -> set[str]:
    return {f.name for f in message.DESCRIPTOR.fields}


# -- --json ----------------------------------------------------------------------------------------

def test_json_carries_method_and_every_statutory_field() -> None:
    d = json.loads(json.dumps(main.tally_dict(statutory_tally())))
    assert d["method"] == "RANDOM_SAMPLE"
    st = d["statutory"]
    assert set(st) == fields(tally_pb2.Statutory)
    assert (st["outcome"], st["sample_outcome"]) == ("QUALIFIES", "FULL_COUNT")
    assert st["decided_by"] == "full count" and st["stopped_at_requirement"] is True
    assert st["projected_total"] == 19_981 and st["projected_percent"] == "99.91"
    assert st["fail_below"] == "19000.00"          # decimal text kept as the server sent it
    assert st["explanation"] == EXPLANATION
    kern = st["counties"][0]
    assert set(kern) == fields(tally_pb2.CountyProjection)
    assert kern == {"county": "Kern", "raw": 24_034, "closed": True, "sample_size": 722,
                    "sample_verified": 722, "valid_in_sample": 516, "duplicates_in_sample": 2,
                    "rate_percent": "71.47", "v": 17_178, "a": "33.2881", "b": "1074.80951161",
                    "c": 2_150, "projected": 15_028, "complete": True, "counted": False,
                    "seed": "kern-seed"}
    assert st["counties"][2]["counted"] is True
    assert d["total"]["not_sampled"] == 7_461 and d["by_county"]["Alpine"]["not_sampled"] == 0


def test_json_keeps_its_keys_and_says_when_there_is_no_statutory_process() -> None:
    d = main.tally_dict(full_count_tally())
    assert {"petition_id", "title", "required", "deadline", "days_to_deadline", "progress_percent",
            "rows_rejected", "as_of", "total", "by_county", "by_batch", "by_circulator",
            "flagged_circulators", "circulators", "flag_policy"} < set(d)
    assert set(d["total"]) == {"received", "verified", "valid", "invalid", "review", "pending",
                               "duplicates", "invalid_by_reason", "not_sampled"}
    assert d["method"] == "FULL_COUNT" and d["statutory"] is None


# -- the table -------------------------------------------------------------------------------------

def test_table_shows_the_statutory_process(out: io.StringIO) -> None:
    main.print_tally(statutory_tally())
    text = out.getvalue()
    assert "not sampled 7,461" in text
    section = text[text.index("Statutory process"):]
    for figure in ("24,034", "71.47", "17,178", "33.2881", "1,074.80951161", "2,150", "15,028",
                   "4,863", "counted", "complete"):
        assert figure in section, figure
    assert "34,161 of 20,000 required (every county has closed its filing)" in section
    assert ("19,981 valid projected = 99.91 % of the requirement; fails below 19,000.00, "
            "qualifies above 22,000.00") in section
    assert "sample outcome: FULL_COUNT (decided 2026-05-01T10:00:00+00:00)" in section
    assert "full count: 20,000 valid counted of 26,700 verified; 7,461 remaining" in section
    assert ("outcome: QUALIFIES, decided by the full count at 2026-05-20T16:30:00+00:00; "
            "stopped at the requirement (AB 2219)") in section
    assert "still unverified" in section


@pytest.mark.parametrize(("days", "said"), [
    (40, "40 days to the deadline (2026-06-30)"), (0, "the deadline is today (2026-06-30)"),
    (-3_416, "deadline passed 3,416 days ago (2026-06-30)")])
def test_table_says_how_far_the_deadline_is(out: io.StringIO, days: int, said: str) -> None:
    t = statutory_tally()
    t.days_to_deadline = days
    main.print_tally(t)
    assert said in " ".join(out.getvalue().split())


def test_table_of_a_full_count_tally_has_no_statutory_section(out: io.StringIO) -> None:
    main.print_tally(full_count_tally())
    text = out.getvalue()
    assert "Statutory process" not in text and "not sampled" not in text


def test_facts_while_the_sample_is_provisional() -> None:
    t = statutory_tally()
    s = t.statutory
    s.counties[1].closed = False
    s.counties[1].complete = False
    s.raw_complete = False
    s.provisional = True
    s.stage = "random sample"
    s.sample_outcome = tally_pb2.OUTCOME_PENDING
    s.outcome = tally_pb2.OUTCOME_PENDING
    s.full_count = False
    s.decided_by = s.decided_at = ""
    s.stopped_at_requirement = False
    facts = dict(statewide_facts(t))
    assert facts["raw count"].endswith("(1 of 3 counties still open)")
    assert facts["projection"].endswith("(provisional: the sample is not complete)")
    assert facts["outcome"] == "PENDING" and "full count" not in facts


def test_decimal_text_keeps_its_digits() -> None:
    assert dec("19000.00") == "19,000.00" and dec("1074.80951161") == "1,074.80951161"
    assert dec("") == "-" and dec("n/a") == "n/a"


# -- report and watch ------------------------------------------------------------------------------

def test_report_adds_the_sample_columns_and_section(tmp_path: Path) -> None:
    files = write_report(statutory_tally(), tmp_path)
    with files.counties_csv.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    header = list(rows[0])
    assert header[:5] == ["county", "received", "verified", "valid", "invalid"]
    i = header.index("valid_percent")
    assert header[i - 3:i] == ["review", "duplicates", "pending"]
    assert tuple(header[i + 1:]) == SAMPLE_COLUMNS
    kern = next(r for r in rows if r["county"] == "Kern")
    assert (kern["raw"], kern["sample_size"], kern["valid_in_sample"], kern["duplicates_in_sample"],
            kern["rate_percent"], kern["v"], kern["a"], kern["b"], kern["c"], kern["projected"]) == (
        "24034", "722", "516", "2", "71.47", "17178", "33.2881", "1074.80951161", "2150", "15028")
    assert kern["not_sampled"] == "5034" and kern["seed"] == "kern-seed"
    page = files.html.read_text(encoding="utf-8")
    section = page[page.index("<h2>Statutory process</h2>"):]
    assert "19,981" in section and "99.91 %" in section and "QUALIFIES" in section
    assert "19,000.00" in section and "22,000.00" in section
    assert "stopped at the requirement (AB 2219)" in section and "15,028" in section
    assert page.count("<svg") == 5            # the four charts and the projection
    assert "not sampled" in page


def test_report_of_a_full_count_petition_is_unchanged(tmp_path: Path) -> None:
    files = write_report(full_count_tally(), tmp_path)
    header = files.counties_csv.read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header[-1] == "valid_percent"
    page = files.html.read_text(encoding="utf-8")
    assert "Statutory process" not in page and page.count("<svg") == 4


def test_watch_shows_projection_and_outcome() -> None:
    buf = io.StringIO()
    Console(file=buf, width=240, color_system=None).print(render(statutory_tally()))
    text = buf.getvalue()
    assert "projected 19,981 (99.91 % of required" in text
    assert "outcome QUALIFIES by the full count, stopped at the requirement (AB 2219)" in text
    assert "not sampled 7,461" in text
    buf = io.StringIO()
    Console(file=buf, width=240, color_system=None).print(render(full_count_tally()))
    assert "outcome" not in buf.getvalue()


# -- the draw check --------------------------------------------------------------------------------

SEED = "dice-6-2-5-1-3-3"
IDS = [str(uuid.UUID(int=i * 7919 + 1)) for i in range(60)]


def listing(seed: str = SEED, size: int = 12) -> list[intake_pb2.SampleEntry]:
    """What an honest intake lists: every signature in draw order, the first ``size`` sampled."""
    return [intake_pb2.SampleEntry(signature_id=sid, batch_id="b-1", line=IDS.index(sid) + 1,
                                   rank=i + 1, sampled=i < size, draw_key=key)
            for i, (sid, key) in enumerate(draw_order(seed, IDS))]


def test_redraw_of_an_honest_listing_is_identical() -> None:
    check = check_draw(SEED, 12, listing(), raw_count=60, expected_size=12)
    assert check.identical, check.problems
    assert check.summary() == f"re-drawn from seed {SEED}: identical (12 of 60)"
    assert list(check.redrawn) == [e.signature_id for e in listing()[:12]]
    assert check_draw(SEED, 12, list(reversed(listing()))).identical   # stream order is free


def test_redraw_catches_a_swapped_signature() -> None:
    entries = listing()
    entries[11].sampled, entries[30].sampled = False, True      # one drawn swapped for another
    check = check_draw(SEED, 12, entries, raw_count=60)
    assert not check.identical
    text = check.summary()
    assert "DIFFERENT" in text
    assert f"1 marked sampled that the seed does not draw: {entries[30].signature_id}" in text
    assert f"1 drawn by the seed but not marked sampled: {entries[11].signature_id}" in text


def test_redraw_catches_keys_ranks_sizes_and_seeds() -> None:
    entries = listing()
    entries[3].draw_key = draw_key("another seed", entries[3].signature_id)
    assert "1 draw key(s) differ" in check_draw(SEED, 12, entries).summary()
    entries = listing()
    entries[0].rank, entries[1].rank = 2, 1
    problems = " ".join(check_draw(SEED, 12, entries).problems)
    assert "another order" in problems and "2 rank(s) differ" in problems
    assert "13 signatures marked sampled" in " ".join(check_draw(SEED, 12, listing(size=13)).problems)
    assert "not the rules' 15" in " ".join(check_draw(SEED, 12, listing(), expected_size=15).problems)
    assert "59 signatures listed, the filing's raw count is 60" in " ".join(
        check_draw(SEED, 12, listing()[:-1], raw_count=60).problems)
    assert not check_draw("a different seed", 12, listing()).identical


def test_sample_csv(tmp_path: Path) -> None:
    path = tmp_path / "kern.csv"
    assert main.write_sample_csv(path, listing()[:3]) == 3
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == main.SAMPLE_COLUMNS
    assert rows[0]["rank"] == "1" and rows[0]["sampled"] == "true"
    assert rows[0]["draw_key"] == draw_key(SEED, rows[0]["signature_id"])


# -- options, wait, export -------------------------------------------------------------------------

def test_petition_options_parse_and_check() -> None:
    args = main.parser().parse_args([
        "petition", "create", "--id", "p", "--required", "10", "--deadline", "2026-06-30",
        "--method", "random-sample", "--sample-minimum", "300", "--sample-percent", "2.5",
        "--fail-below", "90", "--filing-closes", "2026-05-01"])
    assert args.method == "random-sample" and args.filing_closes == "2026-05-01"
    rules = main.sampling_of(args)
    assert (rules.minimum_sample, rules.sample_percent, rules.fail_below_percent,
            rules.qualify_above_percent) == (300, "2.5", "90", "")
    assert main.parser().parse_args(["petition", "create", "--id", "p", "--required", "1",
                                     "--deadline", "2026-06-30"]).method == "full-count"
    for bad in (["--sample-percent", "three"], ["--fail-below", "120"]):
        with pytest.raises(CliError):
            main.sampling_of(main.parser().parse_args(
                ["petition", "set-method", "--petition", "p", "--method", "random-sample",
                 "--reason", "r", *bad]))
    with pytest.raises(SystemExit):     # --sample-minimum is range-checked as it is parsed
        main.parser().parse_args(["petition", "set-method", "--petition", "p", "--method",
                                  "random-sample", "--reason", "r", "--sample-minimum", "0"])
    with pytest.raises(CliError):
        main.check_instant("May 1st", "--filing-closes")
    assert main.check_instant("2026-05-01T17:00:00-07:00", "--filing-closes")
    with pytest.raises(SystemExit):     # set-method needs a method and a reason
        main.parser().parse_args(["petition", "set-method", "--petition", "p", "--reason", "r"])


def test_export_writes_not_sampled_rows_by_name() -> None:
    row = main.export_row(tally_pb2.SignatureResult(
        signature_id="s-1", batch_id="b-1", county="Kern", line=4,
        status=common_pb2.SIGNATURE_STATUS_NOT_SAMPLED))
    assert row == ("s-1", "b-1", "Kern", 4, "NOT_SAMPLED", "", "", "0.00")
    row = main.export_row(tally_pb2.SignatureResult(
        signature_id="s-2", status=common_pb2.SIGNATURE_STATUS_VALID,
        reason=common_pb2.REASON_MATCHED, voter_id="V1", score=97.126))
    assert row[4:] == ("VALID", "MATCHED", "V1", "97.13")


class FakeEndpoints:
    tally = "tally:0"

    @asynccontextmanager
    async def channel(self, addr: str) -> AsyncIterator[None]:
        yield None


async def test_wait_for_a_decision(monkeypatch: pytest.MonkeyPatch, out: io.StringIO) -> None:
    decided = statutory_tally()
    pending = statutory_tally()
    pending.statutory.outcome = tally_pb2.OUTCOME_FULL_COUNT
    answers = iter([pending, pending, decided])

    async def get_tally(channel: object, petition: str) -> tally_pb2.Tally:
        return next(answers)

    monkeypatch.setattr(client, "get_tally", get_tally)
    t = await main.wait_decision(FakeEndpoints(), "prop-x", timeout=60, poll=0)  # type: ignore[arg-type]
    assert t is decided
    assert main.decision_text(t) == ("petition prop-x: QUALIFIES (decided by the full count at "
                                     "2026-05-20T16:30:00+00:00); stopped at the requirement "
                                     "(AB 2219)")

    async def never(channel: object, petition: str) -> tally_pb2.Tally:
        return pending

    monkeypatch.setattr(client, "get_tally", never)
    with pytest.raises(CliError, match="without a decision: outcome FULL_COUNT at stage 'decided'"):
        await main.wait_decision(FakeEndpoints(), "prop-x", timeout=0, poll=0)  # type: ignore[arg-type]

    async def plain(channel: object, petition: str) -> tally_pb2.Tally:
        return full_count_tally()

    monkeypatch.setattr(client, "get_tally", plain)
    with pytest.raises(CliError, match="no statutory process"):
        await main.wait_decision(FakeEndpoints(), "p", timeout=0, poll=0)  # type: ignore[arg-type]


async def test_wait_mentions_signatures_not_sampled(monkeypatch: pytest.MonkeyPatch,
                                                    out: io.StringIO) -> None:
    async def done(ep: object, petition: str, timeout: float) -> tally_pb2.Tally:
        return statutory_tally()

    monkeypatch.setattr(main, "wait_done", done)
    args = argparse.Namespace(petition="prop-x", timeout=1, decision=False)
    assert await main.wait_cmd(FakeEndpoints(), args) == 0  # type: ignore[arg-type]
    assert ("all 26,700 signatures of prop-x sent to verification verified: 20,000 valid, "
            "6,700 invalid, 0 in review; 7,461 of 34,161 received not sampled") in out.getvalue()
    args.decision = True
    monkeypatch.setattr(main, "wait_decision",
                        lambda *a, **k: done(None, "", 0))
    assert await main.wait_cmd(FakeEndpoints(), args) == 0  # type: ignore[arg-type]
    assert "petition prop-x: QUALIFIES" in out.getvalue() and EXPLANATION in out.getvalue()


def test_a_broken_sample_listing_leaves_no_partial_file(tmp_path: Path) -> None:
    """The listing stream breaks (the service stops, the petition is refused): the earlier
    file stays as it was and no ``.part`` file is left beside it."""
    out = tmp_path / "sample.csv"
    out.write_text("an earlier listing\n", encoding="utf-8")

    def entries() -> Iterator[intake_pb2.SampleEntry]:
        yield intake_pb2.SampleEntry(rank=1, signature_id="s1", batch_id="b1", line=1)
        raise RuntimeError("the stream broke")

    with pytest.raises(RuntimeError):
        main.write_sample_csv(out, entries())
    assert out.read_text(encoding="utf-8") == "an earlier listing\n"
    assert list(tmp_path.iterdir()) == [out]


async def test_a_refused_results_export_leaves_no_partial_file(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """ListResults refuses (an unknown petition: NOT_FOUND) or breaks after some rows: no
    ``.part`` file is left behind, and an earlier export is not replaced."""
    class Refused(Exception):
        pass

    class Stub:
        def __init__(self, channel: object) -> None:
            pass

        async def _rows(self) -> AsyncIterator[tally_pb2.SignatureResult]:
            yield tally_pb2.SignatureResult(signature_id="s1", line=1)
            raise Refused

        def ListResults(self, request: object, timeout: float) -> AsyncIterator[Any]:
            return self._rows()

    monkeypatch.setattr(main.tally_pb2_grpc, "TallyServiceStub", Stub)
    out = tmp_path / "results.csv"
    out.write_text("an earlier export\n", encoding="utf-8")
    with pytest.raises(Refused):
        await main.export_results(FakeEndpoints(), "nosuch", out)  # type: ignore[arg-type]
    assert out.read_text(encoding="utf-8") == "an earlier export\n"
    assert list(tmp_path.iterdir()) == [out]
