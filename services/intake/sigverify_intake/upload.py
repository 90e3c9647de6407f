"""Receiving a batch as it streams in: each chunk of rows is validated and COPYed into
``intake.signatures`` (their events into the outbox, their rejections into
``intake.rejections``) inside the batch's one transaction, which commits only when the
client's end message has arrived. Intake keeps no rows: per batch only the counts, a bit per
line number seen, the running SHA-256 of the content and the first rejections for the
receipt, so its memory stays flat whatever the file's size. A stream that stops early (the
client cancelled, the connection broke, intake is stopping) rolls back: nothing half-stored.
A batch whose end comes with no rows (a file with only its header) is refused and rolls back.

Keys and content are scoped to (petition, county). A key already used there: the stream is
only hashed; the same content returns the first receipt, other content is refused
(ALREADY_EXISTS: a corrected file needs a new key). Content already stored there (found at
the end) rolls the transaction back and returns the first receipt. A county whose filing has
closed takes no new batch, though a resubmission still gets its first receipt.

No generated types here: ``service`` turns messages into ``Rows`` and ``End``.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass

import asyncpg
from asyncpg.transaction import Transaction

from sigverify_common import audit, ids, kafka
from sigverify_common.db import Conn
from sigverify_common.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from sigverify_intake import domain, repository
from sigverify_intake.domain import RowError, Signature
from sigverify_intake.repository import Receipt, StoredSignature

log = logging.getLogger(__name__)

#: Validated rows (or rejections) held before they are COPYed.
FLUSH_ROWS = 2_000

#: One chunk of raw rows: (record number, values in column order, why unreadable or "").
Rows = Iterable[tuple[int, Sequence[str], str]]


@dataclass(frozen=True, slots=True)
class End:
    """The client's end of the batch: how many rows it sent."""

    rows: int


Part = Rows | End

#: (batch id, petition, county, stored signatures) -> their SignatureReceived outbox rows.
EventEncoder = Callable[[uuid.UUID, str, str, Sequence[StoredSignature]],
                        list[tuple[str, bytes, bytes]]]


@dataclass(frozen=True, slots=True)
class Header:
    petition_id: str
    county: str
    client_key: str
    filename: str
    columns: tuple[str, ...]


async def _hash_only(parts: AsyncIterator[Part], digest: domain.ContentDigest,
                     filename: str) -> None:
    """Consume the stream without storing it, to learn its content's hash."""
    rows, end = 0, None
    async for part in parts:
        if end is not None:
            raise InvalidArgument("a message came after the batch's end")
        if isinstance(part, End):
            end = part
            continue
        for _record, values, unreadable in part:
            rows += 1
            if rows > domain.MAX_ROWS:
                raise InvalidArgument(f"the batch has more than {domain.MAX_ROWS:,} rows: "
                                      "split the file into several batches")
            digest.add(values, unreadable)
    _check_end(end, rows, filename)


def _check_end(end: End | None, rows: int, filename: str) -> None:
    if end is None:
        raise InvalidArgument("the batch's stream ended without its end message (an "
                              "interrupted upload?): nothing stored; send it again")
    if end.rows != rows:
        raise InvalidArgument(f"the batch's end message counts {end.rows:,} rows but "
                              f"{rows:,} arrived: nothing stored; send it again")
    if rows == 0:
        # A header and no rows is a mistake (the wrong file, an export that failed), not a
        # batch: storing it would give a receipt and a batch that count nothing.
        named = f"batch {filename!r}" if filename else "batch"
        raise InvalidArgument(f"the {named} has no rows (only a header): nothing stored; "
                              "check that it is the file meant to be sent")


class _Batch:
    """The storing side of one batch, inside its transaction."""

    def __init__(self, conn: Conn, batch_id: uuid.UUID, header: Header,
                 release: bool, encode_events: EventEncoder) -> None:
        self.conn = conn
        self.batch_id = batch_id
        self.h = header
        self.release = release
        self.encode = encode_events
        self.signatures: list[Signature] = []
        self.errors: list[RowError] = []
        self.first_errors: list[RowError] = []
        self.errors_stored = 0

    def add(self, checked: Signature | RowError) -> bool:
        """Keep one checked row; True when the buffers should be flushed."""
        if isinstance(checked, RowError):
            self.errors.append(checked)
            if len(self.first_errors) < repository.RECEIPT_REJECTIONS:
                self.first_errors.append(checked)
        else:
            self.signatures.append(checked)
        return len(self.signatures) >= FLUSH_ROWS or len(self.errors) >= FLUSH_ROWS

    async def flush(self) -> None:
        if self.signatures:
            seqs = await repository.next_seqs(self.conn, len(self.signatures))
            stored = [(ids.new_id(), seq, s) for seq, s in zip(seqs, self.signatures, strict=True)]
            await repository.copy_signatures(self.conn, self.batch_id, self.h.petition_id,
                                             self.h.county, self.release, stored)
            if self.release:
                await kafka.enqueue(self.conn, repository.SCHEMA, self.encode(
                    self.batch_id, self.h.petition_id, self.h.county, stored))
            self.signatures = []
        if self.errors:
            await repository.copy_rejections(self.conn, self.batch_id, self.errors_stored,
                                             self.errors)
            self.errors_stored += len(self.errors)
            self.errors = []


async def receive(conn: Conn, header: Header, parts: AsyncIterator[Part],
                  encode_events: EventEncoder, actor: str) -> Receipt:
    """Receive one batch on ``conn`` (see the module's docstring)."""
    validator = domain.BatchValidator(header.columns)
    digest = domain.ContentDigest(header.petition_id, header.county, validator.columns)
    h = header
    existing = await repository.find_by_key(conn, h.petition_id, h.county, h.client_key)
    if existing is not None:
        return await _known(conn, h, parts, digest, existing)
    tr = conn.transaction()
    await tr.start()
    try:
        release, closed = await repository.check_filing(conn, h.petition_id, h.county)
        if closed:
            await tr.rollback()
            return await _closed(conn, h, parts, digest, closed)
        batch = _Batch(conn, uuid.UUID(ids.new_id()), h, release, encode_events)
        await repository.open_batch(conn, batch.batch_id, h.petition_id, h.county,
                                    h.client_key, h.filename)
    except asyncpg.UniqueViolationError:
        # The key was taken by a batch stored concurrently, which has now committed.
        await tr.rollback()
        existing = await repository.find_by_key(conn, h.petition_id, h.county, h.client_key)
        if existing is None:
            raise
        return await _known(conn, h, parts, digest, existing)
    except BaseException:
        await _rollback(tr)
        raise
    try:
        end: End | None = None
        async for part in parts:
            if end is not None:
                raise InvalidArgument("a message came after the batch's end")
            if isinstance(part, End):
                end = part
                continue
            for record, values, unreadable in part:
                digest.add(values, unreadable)
                if batch.add(validator.check(record, values, unreadable)):
                    await batch.flush()
        _check_end(end, validator.rows, h.filename)
        await batch.flush()
        content = digest.hexdigest()
        same = await repository.find_by_content(conn, h.petition_id, h.county, content)
        if same is not None:
            await tr.rollback()
            return await repository.receipt_of(conn, same, resubmission=True)
        row = await repository.close_batch(
            conn, batch.batch_id, content, validator.rows, validator.accepted,
            validator.incomplete, validator.rejected, batch.first_errors)
        await audit.record(conn, actor, "batch.received", str(batch.batch_id), {
            "petition_id": h.petition_id, "county": h.county,
            "rows_received": validator.rows, "signatures_accepted": validator.accepted,
            "incomplete": validator.incomplete, "rows_rejected": validator.rejected,
            "held_for_sampling": not release})
        await tr.commit()
    except asyncpg.UniqueViolationError:
        # The same content (or key) committed by a concurrent submission meanwhile.
        await _rollback(tr)
        existing = (await repository.find_by_key(conn, h.petition_id, h.county, h.client_key)
                    or await repository.find_by_content(conn, h.petition_id, h.county,
                                                        digest.hexdigest()))
        if existing is None:
            raise
        if existing["content_sha256"] != digest.hexdigest():
            raise _key_taken(h, existing) from None
        return await repository.receipt_of(conn, existing, resubmission=True)
    except BaseException:
        await _rollback(tr)
        raise
    return await repository.receipt_of(conn, row, resubmission=False)


async def _rollback(tr: Transaction) -> None:
    """Roll back if still possible; a connection broken mid-COPY (the task was cancelled) is
    discarded by the pool, and the server rolls back what it had."""
    with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        await tr.rollback()


def _key_taken(h: Header, existing: asyncpg.Record) -> AlreadyExists:
    return AlreadyExists(
        f"client batch key {h.client_key!r} was already used in {h.county} for petition "
        f"{h.petition_id!r} by batch {existing['batch_id']} (received "
        f"{existing['received_at'].isoformat(timespec='seconds')}, "
        f"{existing['rows_received']:,} rows) with different content; nothing stored. That "
        "batch stays as it is: send the corrected file under a new key")


async def _known(conn: Conn, h: Header, parts: AsyncIterator[Part],
                 digest: domain.ContentDigest, existing: asyncpg.Record) -> Receipt:
    await _hash_only(parts, digest, h.filename)
    if existing["content_sha256"] != digest.hexdigest():
        raise _key_taken(h, existing)
    return await repository.receipt_of(conn, existing, resubmission=True)


async def _closed(conn: Conn, h: Header, parts: AsyncIterator[Part],
                  digest: domain.ContentDigest, why: str) -> Receipt:
    await _hash_only(parts, digest, h.filename)
    same = await repository.find_by_content(conn, h.petition_id, h.county, digest.hexdigest())
    if same is None:
        raise FailedPrecondition(why)
    return await repository.receipt_of(conn, same, resubmission=True)
