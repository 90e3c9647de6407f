"""Defect 9 of the reliability issue: personal data stays out of logs, metrics, Kafka payloads
and what the outbox, its quarantine and the dead letters keep.

A canary is fed through a real run: a voter copied from the roll (name, street, birth date),
a person with made-up, unmistakable name, street and birth date (not registered), and a row
of that person intake must reject (a bad date). Then every place personal data must not reach
is read in full and searched for each canary value, as written and in upper case (matching
normalises to upper case): the services' and the broker's logs, every service's /metrics,
every record of every topic from its first offset, and every outbox, quarantine and dead
letter row of every schema.
"""

from __future__ import annotations

import asyncio
import csv
import urllib.request
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from sigverify_cli import stack
from sigverify_cli.synth import SynthOutput
from tests.integration import helpers as h

pytestmark = pytest.mark.integration

STRANGER = {"first_name": "Quillonette", "middle_name": "Zebulona", "last_name": "Xanthoporous",
            "street": "4817 Wrennigham Canyonette Rd", "unit": "Apt 9Q",
            "birth_date": "1911-11-13"}
COLUMNS = ("line", "first_name", "middle_name", "last_name", "street", "unit", "city", "zip",
           "signed_on", "birth_date", "circulator_id")


def _roll_voter(data: SynthOutput, county: str) -> dict[str, str]:
    """A registered voter of ``county`` with a distinctive street line and a birth date."""
    with Path(data.roll_csv).open(newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            if (r["county"] == county and r["status"] == "ACTIVE" and r["birth_date"]
                    and len(r["street"]) >= 12 and len(r["last_name"]) >= 6):
                return r
    raise AssertionError(f"no usable voter of {county} in the roll")


def _needles(*people: dict[str, str]) -> set[str]:
    found: set[str] = set()
    for p in people:
        for key in ("first_name", "last_name", "street", "birth_date"):
            value = p[key].strip()
            if len(value) >= 5:
                found |= {value, value.upper()}
        if p.get("middle_name", "").strip() and len(p["middle_name"]) >= 5:
            found |= {p["middle_name"], p["middle_name"].upper()}
        found.add(p["birth_date"].replace("-", ""))
    return found


def _metrics(state: stack.StackState) -> str:
    text = []
    for name, proc in state.services.items():
        url = f"http://127.0.0.1:{proc.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            text.append(f"# {name}\n" + resp.read().decode("utf-8", "replace"))
    return "\n".join(text)


async def _every_record(bootstrap: str) -> list[tuple[str, bytes]]:
    """Every record of every topic the broker holds, from its first offset."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        topics = sorted(await consumer.topics())
        parts = [TopicPartition(t, p) for t in topics
                 for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        records: list[tuple[str, bytes]] = []
        remaining = {tp for tp in parts if ends[tp] > 0}
        while remaining:
            batch = await consumer.getmany(timeout_ms=2000, max_records=5000)
            if not batch:
                still = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}
                if still == remaining:
                    raise AssertionError(f"could not read {sorted(map(str, still))} to its end")
                remaining = still
                continue
            for tp, msgs in batch.items():
                records.extend((tp.topic, (m.key or b"") + b"|" + (m.value or b"")) for m in msgs)
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return records
    finally:
        await consumer.stop()


async def _kept_rows(url: str) -> list[tuple[str, str]]:
    """Every outbox, outbox quarantine and dead-letter row of every schema, as text."""
    conn = await asyncpg.connect(url)
    try:
        tables = await conn.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_name IN ('outbox', 'outbox_quarantine', 'dead_letters')")
        assert len(tables) >= 9, [tuple(t) for t in tables]  # three per service schema
        rows: list[tuple[str, str]] = []
        for t in tables:
            name = f'"{t["table_schema"]}"."{t["table_name"]}"'
            for r in await conn.fetch(f"SELECT t::text AS row, to_jsonb(t)::text AS j "
                                      f"FROM {name} t"):
                rows.append((name, r["row"] + r["j"]))
        return rows
    finally:
        await conn.close()


async def test_a_canary_voter_reaches_no_log_metric_topic_or_kept_payload(
        live_stack: stack.StackState, loaded_roll: int, synth_data: SynthOutput,
        tmp_path: Path) -> None:
    county = synth_data.batches[0][1]
    voter = _roll_voter(synth_data, county)
    needles = _needles(voter, STRANGER)
    batch = tmp_path / "canary.csv"
    with batch.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        w.writerow([1, voter["first_name"], voter["middle_name"], voter["last_name"],
                    voter["street"], voter["unit"], voter["city"], voter["zip"], "2017-05-02",
                    voter["birth_date"], "circ-canary"])
        w.writerow([2, *(STRANGER[c] for c in ("first_name", "middle_name", "last_name",
                                               "street", "unit")),
                    voter["city"], voter["zip"], "2017-05-03", STRANGER["birth_date"],
                    "circ-canary"])
        # Rejected at intake: its reason must name the field, not echo the person.
        w.writerow([3, *(STRANGER[c] for c in ("first_name", "middle_name", "last_name",
                                               "street", "unit")),
                    voter["city"], voter["zip"], "05/03/2017", STRANGER["birth_date"],
                    "circ-canary"])
    pid = h.new_petition_id()
    await h.create_petition(live_stack, pid)
    receipt = await h.submit(live_stack, batch, pid, county)
    assert receipt.signatures_accepted == 2 and len(receipt.rejected) == 1, receipt
    await h.wait_verified(live_stack, pid, 2)
    got = await h.results(live_stack, pid)
    # The canary really went through matching: the copied voter is found, the stranger is not.
    assert got[1][0] == "VALID" and got[2][1] == "NOT_REGISTERED", got
    await asyncio.sleep(1)  # let the services' log lines of this run reach their files

    leaks: list[str] = []
    logs = [p for p in Path(live_stack.home, "logs").iterdir() if p.is_file()]
    assert logs, "the stack wrote no logs"
    for path in logs:
        text = path.read_text(encoding="utf-8", errors="replace")
        leaks += [f"log {path.name}: {n!r}" for n in needles if n in text]
    metrics = _metrics(live_stack)
    assert "sigverify" in metrics
    leaks += [f"metrics: {n!r}" for n in needles if n in metrics]
    records = await _every_record(live_stack.kafka_bootstrap_servers)
    assert any("signature-received" in t for t, _ in records), "no SignatureReceived read"
    for topic, payload in records:
        leaks += [f"topic {topic}: {n!r}" for n in needles if n.encode() in payload]
    for table, row in await _kept_rows(live_stack.database_url):
        leaks += [f"table {table}: {n!r}" for n in needles if n in row]
    assert not leaks, "personal data found:\n" + "\n".join(sorted(set(leaks)))
