"""TallyService (gRPC) and the SignatureVerified consumer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import grpc
from prometheus_client import Gauge

from sigverify.events.v1 import events_pb2
from sigverify.tally.v1 import tally_pb2, tally_pb2_grpc
from sigverify_common import kafka, provenance
from sigverify_common.convert import parse_uuid
from sigverify_common.errors import InvalidArgument, NotFound
from sigverify_common.fields import MAX_ID_CHARS, check_text
from sigverify_common.kafka import DeadLetter, Delivered
from sigverify_common.sampling import Method
from sigverify_tally import convert, invariants, repository
from sigverify_tally.domain import Counts
from sigverify_tally.projection import Outcome
from sigverify_tally.statutory import Assessment

log = logging.getLogger(__name__)

SIGNATURES = Gauge("sigverify_tally_signatures",
                   "Signatures with a final status, per petition, status and reason",
                   ["petition", "status", "reason"])
RECEIVED = Gauge("sigverify_tally_received", "Signatures stored by intake, per petition", ["petition"])
# The statutory process (statutory.py), per petition.
REQUIRED = Gauge("sigverify_tally_required", "Valid signatures the petition requires", ["petition"])
RAW = Gauge("sigverify_tally_raw", "Statewide raw count: signatures filed by the counties", ["petition"])
PROJECTED = Gauge("sigverify_tally_projected",
                  "Statewide projected valid signatures from the random sample (provisional until "
                  "the sample decision); random-sample petitions with a verified sampled signature",
                  ["petition"])
NOT_SAMPLED = Gauge("sigverify_tally_not_sampled",
                    "Signatures held back from matching (outside the random sample)", ["petition"])
OUTCOME = Gauge("sigverify_tally_outcome",
                "1 for the petition's current statutory outcome, 0 for the others",
                ["petition", "outcome"])
COUNTIES_CLOSED = Gauge("sigverify_tally_counties_closed", "Counties whose filing has closed",
                        ["petition"])
COUNTIES = Gauge("sigverify_tally_counties", "Counties with signatures or named by the petition",
                 ["petition"])
INVARIANT_VIOLATIONS = Gauge("sigverify_invariant_violations",
                             "Violations of a delivery invariant per petition and check "
                             "(see sigverify check); 0 when it holds", ["petition", "check"])
#: ``sigverify_tally_outcome``'s values of ``outcome``: PENDING until a decision.
OUTCOMES = ("PENDING", *(o.value for o in Outcome))

def _petition_id(value: str) -> str:
    """A request's petition id: InvalidArgument naming the field when empty, too long or
    holding a NUL (PostgreSQL refuses a NUL in text: it was an INTERNAL error), before any
    query."""
    pid = check_text(value, "petition_id", MAX_ID_CHARS)
    if not pid:
        raise InvalidArgument("petition_id is required")
    return pid


#: One series: a gauge and its label values.
Series = tuple[Gauge, tuple[str, ...]]


class MetricsRefresher:
    """Sets the per-petition gauges from Postgres every ``interval`` seconds.

    A loop rather than a collector run at scrape time: the pool lives on the event loop and
    prometheus_client scrapes from its own thread.
    """

    def __init__(self, pool: asyncpg.Pool, interval: float = 15.0) -> None:
        self._pool = pool
        self._interval = interval
        self._seen: set[tuple[str, str, str]] = set()
        self._seen_received: set[str] = set()
        self._seen_statutory: set[Series] = set()

    @staticmethod
    def statutory_values(petition_id: str, a: Assessment, counted: Counts) -> dict[Series, float]:
        """The statutory gauges' values for one petition (pure).

        ``sigverify_tally_projected`` is left out for a full-count petition and until a
        sampled signature is verified (a projection of nothing is not 0 % of the requirement).
        """
        labels = (petition_id,)
        current = "PENDING" if a.outcome is None else a.outcome.value
        values: dict[Series, float] = {
            (REQUIRED, labels): a.required,
            (RAW, labels): a.raw_total,
            (NOT_SAMPLED, labels): counted.not_sampled,
            (COUNTIES_CLOSED, labels): sum(1 for c in a.counties if c.closed),
            (COUNTIES, labels): len(a.counties),
        }
        for o in OUTCOMES:
            values[OUTCOME, (petition_id, o)] = 1 if o == current else 0
        if a.method is Method.RANDOM_SAMPLE and any(c.projection is not None for c in a.counties):
            values[PROJECTED, labels] = a.projected_total
        return values

    async def refresh(self) -> None:
        statuses = await repository.status_counts(self._pool)
        received = await repository.received_counts(self._pool)
        now = {(r["petition_id"], r["status"], r["reason"]): int(r["n"]) for r in statuses}
        for labels, n in now.items():
            SIGNATURES.labels(*labels).set(n)
        for stale in self._seen - now.keys():
            SIGNATURES.remove(*stale)
        self._seen = set(now)
        got = {r["petition_id"]: int(r["n"]) for r in received}
        for petition, n in got.items():
            RECEIVED.labels(petition).set(n)
        for stale_petition in self._seen_received - got.keys():
            RECEIVED.remove(stale_petition)
        self._seen_received = set(got)
        statutory: dict[Series, float] = {}
        for m in await repository.statutory_metrics(self._pool):
            statutory.update(self.statutory_values(m.petition_id, m.assessment, m.counted))
        for (gauge, values), value in statutory.items():
            gauge.labels(*values).set(value)
        for stale_gauge, stale_labels in self._seen_statutory - statutory.keys():
            stale_gauge.remove(*stale_labels)
        self._seen_statutory = set(statutory)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.refresh()
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
                log.warning("refreshing the tally gauges failed (%s)", exc.__class__.__name__)
            try:
                await asyncio.wait_for(stop.wait(), self._interval)
            except TimeoutError:
                pass


class Decider:
    """Records the statutory decisions as they fall due (``repository.decide_due``).

    Looks at the petitions whose results changed (``touched``, filled by the consumer) every
    ``interval`` seconds, and at every undecided petition every ``sweep`` seconds (a county
    closing at intake changes nothing here but may make a decision due).
    """

    #: A pass over a petition costs about 0.1 s of database time per 100k signatures, so it
    #: is not run on every applied batch. The AB 2219 stop does not wait for it: intake checks
    #: the valid count itself before it releases more.
    def __init__(self, pool: asyncpg.Pool, interval: float = 3.0, sweep: float = 10.0) -> None:
        self._pool = pool
        self._interval = interval
        self._sweep = sweep
        self.touched: set[str] = set()

    async def once(self, everything: bool) -> int:
        ids, self.touched = self.touched, set()
        try:
            if everything:
                ids |= set(await repository.undecided(self._pool))
            made = 0
            for pid in sorted(ids):
                for d in await repository.decide_due(self._pool, pid):
                    log.info("petition %s: %s decision %s", pid, d.stage.value, d.outcome.value)
                    made += 1
            return made
        except BaseException:
            self.touched |= ids
            raise

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        last_sweep = -self._sweep
        while not stop.is_set():
            sweep = loop.time() - last_sweep >= self._sweep
            try:
                await self.once(sweep)
                if sweep:
                    last_sweep = loop.time()
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
                log.warning("statutory decisions pass failed (%s); retrying", exc.__class__.__name__)
            try:
                await asyncio.wait_for(stop.wait(), self._interval)
            except TimeoutError:
                pass


class InvariantChecker:
    """Checks the petitions' delivery invariants (``invariants.py``) every ``interval``
    seconds and exports ``sigverify_invariant_violations{petition,check}``.

    The checks recount a petition's rows, so a pass checks only the petitions whose count
    cells were written since their last check, or that failed it; every ``full_every``-th
    pass checks them all (a change made behind the triggers' back shows up there)."""

    def __init__(self, pool: asyncpg.Pool, interval: float = 60.0, full_every: int = 60) -> None:
        self._pool = pool
        self._interval = interval
        self._full_every = max(1, full_every)
        self._passes = 0
        self._checked: dict[str, object] = {}
        self._last: dict[tuple[str, str], int] = {}

    async def once(self) -> int:
        """One pass; returns the total number of violations (of the petitions checked now
        and those standing from earlier passes)."""
        full = self._passes % self._full_every == 0
        self._passes += 1
        marks = await invariants.changed_since(self._pool)
        failing = {pid for (pid, _), n in self._last.items() if n}
        now: dict[tuple[str, str], int] = {}
        for pid in await invariants.petitions(self._pool):
            mark = marks.get(pid)
            if not full and pid not in failing and pid in self._checked \
                    and self._checked[pid] == mark:
                now.update({k: v for k, v in self._last.items() if k[0] == pid})
                continue
            for c in await invariants.check(self._pool, pid):
                now[pid, c.name] = c.violations
                if not c.ok:
                    log.error("invariant %s violated %d time(s) on petition %s (e.g. %s)",
                              c.name, c.violations, pid, ", ".join(c.examples[:3]))
            self._checked[pid] = mark
        for labels, n in now.items():
            INVARIANT_VIOLATIONS.labels(*labels).set(n)
        for stale in self._last.keys() - now.keys():
            INVARIANT_VIOLATIONS.remove(*stale)
        self._last = now
        return sum(now.values())

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.once()
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
                log.warning("checking the invariants failed (%s)", exc.__class__.__name__)
            try:
                await asyncio.wait_for(stop.wait(), self._interval)
            except TimeoutError:
                pass


class TallyHandler:
    def __init__(self, pool: asyncpg.Pool, decider: Decider | None = None) -> None:
        self._pool = pool
        self._decider = decider

    async def __call__(self, batch: Sequence[Delivered[events_pb2.SignatureVerified]],
                       dead: Sequence[DeadLetter]) -> list[DeadLetter]:
        """Applies the batch; a SignatureVerified whose signature intake never stored is
        refused (a dead letter with the reason): no count includes what was not received."""
        async with self._pool.acquire() as conn, conn.transaction():
            why = await provenance.refusals(conn, [d.message for d in batch])
            refused = [d.reject(w) for d, w in zip(batch, why, strict=True) if w is not None]
            accepted = [d for d, w in zip(batch, why, strict=True) if w is None]
            await kafka.write_dead_letters(conn, "tally", [*dead, *refused])
            await repository.apply_results(conn, [convert.result_from_event(d.message)
                                                  for d in accepted])
        if self._decider is not None:
            self._decider.touched.update(d.message.petition_id for d in accepted)
        return refused


class TallyService(tally_pb2_grpc.TallyServiceServicer):
    def __init__(self, pool: asyncpg.Pool, stop: asyncio.Event) -> None:
        self._pool = pool
        self._stop = stop

    async def GetTally(
        self, request: tally_pb2.GetTallyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> tally_pb2.Tally:
        return convert.tally_to_pb(await repository.snapshot(
            self._pool, _petition_id(request.petition_id)))

    async def WatchTally(
        self, request: tally_pb2.WatchTallyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[tally_pb2.Tally]:
        pid = _petition_id(request.petition_id)
        interval = max(0.2, (request.min_interval_ms or 1000) / 1000)
        last: bytes | None = None
        while not self._stop.is_set():
            tally = convert.tally_to_pb(await repository.snapshot(self._pool, pid))
            fingerprint = tally_pb2.Tally(
                total=tally.total, by_county=tally.by_county, rows_rejected=tally.rows_rejected,
                statutory=tally.statutory,
            ).SerializeToString(deterministic=True)
            if fingerprint != last:
                last = fingerprint
                yield tally
            try:
                await asyncio.wait_for(self._stop.wait(), interval)
            except TimeoutError:
                pass

    async def GetResult(
        self, request: tally_pb2.GetResultRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> tally_pb2.SignatureResult:
        signature_id = check_text(request.signature_id, "signature_id", MAX_ID_CHARS)
        return convert.result_to_pb(await repository.result(self._pool, parse_uuid(signature_id)))

    async def ListResults(
        self, request: tally_pb2.ListResultsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[tally_pb2.SignatureResult]:
        async for row in repository.results(self._pool, _petition_id(request.petition_id)):
            yield convert.result_to_pb(row)

    async def CheckInvariants(
        self, request: tally_pb2.CheckInvariantsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> tally_pb2.InvariantReport:
        pid = _petition_id(request.petition_id)
        if not await invariants.exists(self._pool, pid):
            raise NotFound(f"no petition {pid!r}")
        checks = await invariants.check(self._pool, pid)
        for c in checks:
            INVARIANT_VIOLATIONS.labels(pid, c.name).set(c.violations)
        return convert.invariants_to_pb(pid, checks)
