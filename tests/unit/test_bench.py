"""The bench's parts that decide what it measures (never its times): the roll streamed into
the index as the service's validated rows, the baseline's blocks and threshold, the scoring
with links, the targets' marks."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from sigverify_cli import bench, stack
from sigverify_cli.evaldata import EvalData
from sigverify_cli.scoring import Accuracy, Linkage
from sigverify_cli.synth import SynthSpec, generate
from sigverify_common.vocab import Decision, Reason
from sigverify_matching.baseline import BaselineMatcher, block_key
from sigverify_matching.columnar import IndexBuilder
from sigverify_matching.domain import MatchResult, SignatureInput
from sigverify_matching.evaluate import BatchRow
from sigverify_matching.roll import read_roll


def test_streamed_roll_builds_the_index_of_the_validated_rows(tmp_path: Path) -> None:
    out = generate(tmp_path, SynthSpec(voters=3_000, signatures=300, seed=5))
    # A few rows a roll may hold: lower-case status, a county spelt otherwise, padding.
    with out.roll_csv.open(encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    header = lines[0].split(",")
    for i, line in enumerate(lines[1:6], start=1):
        values = next(csv.reader([line]))
        values[header.index("status")] = values[header.index("status")].lower()
        values[header.index("county")] = " " + values[header.index("county")].upper() + " "
        values[header.index("first_name")] = values[header.index("first_name")] + "  "
        lines[i] = ",".join(f'"{v}"' for v in values)
    out.roll_csv.write_text("\n".join(lines) + "\n", encoding="utf-8")

    chunks = list(bench.roll_chunks(out.roll_csv, chunk=700))
    assert len(chunks) == 5 and sum(map(len, chunks)) == 3_000
    streamed = bench.build_index(out.roll_csv)
    reference = IndexBuilder(1)
    reference.add(list(read_roll(out.roll_csv, [])))  # type: ignore[arg-type]
    expected = reference.finish()
    assert streamed.size == expected.size == 3_000
    assert streamed.id_blob == expected.id_blob
    for name, col in expected.cols.items():
        assert np.array_equal(streamed.cols[name], col), name
    for name, vocab in expected.vocabs.items():
        assert np.array_equal(streamed.vocabs[name].values, vocab.values), name


def _sig(first: str, last: str, street: str, zip_: str) -> SignatureInput:
    return SignatureInput(first, "", last, street, "", "", zip_, "Kern", None)


ROWS = [
    ("V1", "MARIA", "GARCIA", "12 OAK ST", "93301"),
    ("V2", "MARIO", "GOMEZ", "400 ELM AVE", "93301"),
    ("V3", "MARIA", "GARCIA", "12 OAK ST", "93302"),   # her namesake, another zip
    ("V4", "JOHN", "SMITH", "9 PINE RD", "93301"),
]


def test_baseline_compares_a_signature_with_its_block_only() -> None:
    m = BaselineMatcher.from_rows(ROWS)
    assert block_key("93301-1234", "garcia") == "93301|G"
    assert block_key("", "Garcia") == "" and block_key("93301", " ") == ""
    assert m.match(_sig("Maria", "Garcia", "12 Oak St.", "93301"))[0] == "V1"
    assert m.match(_sig("Maria", "Garcia", "12 Oak St", "93302"))[0] == "V3"
    # Same person, but the zip puts her in no block of the roll.
    assert m.match(_sig("Maria", "Garcia", "12 Oak St", "93309")) == ("", 0.0)
    # A block with only people far from the signature: below the threshold.
    assert m.match(_sig("Xavier", "Smith", "77 Quartz Blvd", "93301")) == ("", 0.0)
    voter, score = m.match(_sig("Mario", "Gomes", "400 Elm Av", "93301"))
    assert voter == "V2" and 0.6 <= score <= 1.0


def test_baseline_keeps_only_the_blocks_asked_for() -> None:
    m = BaselineMatcher.from_rows(ROWS, keep={block_key("93302", "Garcia")})
    assert len(m) == 1
    assert m.match(_sig("Maria", "Garcia", "12 Oak St", "93301")) == ("", 0.0)
    assert m.match(_sig("Maria", "Garcia", "12 Oak St", "93302"))[0] == "V3"


def _result(decision: Decision, reason: Reason, voter: str) -> MatchResult:
    return MatchResult(decision, reason, voter, 99.0 if voter else 0.0, ())


def test_scores_decisions_with_links_and_duplicates(tmp_path: Path) -> None:
    truth = tmp_path / "truth.csv"
    truth.write_text(
        "batch_file,line,expected_status,expected_reason,voter_id,noise\n"
        "b.csv,1,VALID,MATCHED,V1,\n"
        "b.csv,2,INVALID,DUPLICATE,V1,\n"
        "b.csv,3,VALID,MATCHED,V2,\n"
        "b.csv,4,INVALID,NOT_REGISTERED,,\n"
        "b.csv,5,INVALID,INCOMPLETE,V9,\n", encoding="utf-8")
    data = EvalData("t", tmp_path / "roll.csv", (), truth, tmp_path / "batches.csv",
                    date(2017, 7, 25), False, 3, 5)

    def row(line: int, signed: int, complete: bool = True) -> BatchRow:
        sig = SignatureInput("A", "", "B", "1 MAIN ST", "", "", "93301", "Kern",
                             date(2017, 5, signed))
        return BatchRow("b.csv", line, sig, complete)

    rows = [row(1, 1), row(2, 9), row(3, 2), row(4, 3), row(5, 4, complete=False)]
    results = [_result(Decision.MATCH, Reason.MATCHED, "V1"),
               _result(Decision.MATCH, Reason.MATCHED, "V1"),
               _result(Decision.MATCH, Reason.MATCHED, "V7"),   # the wrong voter
               _result(Decision.NO_MATCH, Reason.NOT_REGISTERED, "")]
    acc = bench.score_results(data, rows, results)
    assert acc.signatures == 5 and acc.agree == 5   # line 2 resolved as V1's duplicate
    assert acc.links == Linkage(true_links=3, predicted=3, correct=2)
    with pytest.raises(ValueError):
        bench.score_results(data, rows, results[:3])


def test_accuracy_table_marks_figures_beyond_their_targets() -> None:
    def acc(fa: int, fr: int, review: int, links: Linkage) -> Accuracy:
        return Accuracy(signatures=1_000, agree=0, false_accept=fa, false_reject=fr,
                        to_review=review, by_expected_reason={}, confusion={}, valid=800,
                        links=links)

    good = acc(1, 4, 30, Linkage(800, 800, 800))
    bad = acc(2, 5, 31, Linkage(800, 800, 790))
    lines = bench.accuracy_table([("FEBRL 1", None, good), ("FEBRL 2", None, bad),
                                  ("synth", None, bad)])
    febrl1, febrl2, synth = lines[2:5]
    assert "!" not in febrl1
    assert febrl2.count("!") == 4   # false accept, false reject, review, F1
    assert synth.count("!") == 3    # F1 has a target on FEBRL only


def test_cpu_by_process_counts_a_server_with_its_children_and_the_client(tmp_path: Path) -> None:
    # A "server" (this process) with a child that burns CPU and one that has exited.
    subprocess.run([sys.executable, "-c", "sum(range(3_000_000))"], check=True)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        (tmp_path / "postmaster.pid").write_text(f"{os.getpid()}\n{tmp_path}\n")
        state = stack.StackState(home=str(tmp_path), database_url="", kafka_bootstrap_servers="",
                                 pg_data=str(tmp_path))
        state.services["matching"] = stack.ServiceProc(pid=busy.pid, grpc_port=0,
                                                       metrics_port=0, log="")
        first = bench.cpu_by_process(state)
        time.sleep(0.5)
        second = bench.cpu_by_process(state)
    finally:
        busy.kill()
        busy.wait()
    assert set(first) == {"matching", "bench client", "postgresql"}
    assert second["matching"] > first["matching"]  # the busy child, counted as a service
    # The server's figure holds its own time, the exited child's and the live busy one's.
    assert second["postgresql"] >= second["matching"] + bench._cpu_seconds("self")
    assert bench._cpu_seconds(2**22 + 12345) == 0.0  # no such process


def test_a_second_bench_on_the_same_home_is_refused_and_touches_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two benches sharing a home would regenerate each other's data set and stop each
    other's stack (seen: a 22M run's roll replaced by a 1M one mid-run)."""
    import argparse
    import fcntl

    from sigverify_cli import bench

    monkeypatch.setenv("SIGVERIFY_HOME", str(tmp_path))
    home = tmp_path / "bench"
    (home / "data").mkdir(parents=True)
    (home / "data" / "roll.csv").write_text("the running bench's roll\n")
    args = argparse.Namespace(voters=100, signatures=10, seed=1, batch_size=10)
    with (home / "bench.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the bench already running
        assert bench.run_bench(args) == 1
    assert (home / "data" / "roll.csv").read_text() == "the running bench's roll\n"
    assert not (home / "work").exists()
    # Once it has finished, the lock is free again.
    with bench._alone(home) as alone:
        assert alone
