"""The audit log: an append-only, hash-chained record of every state change and refusal.

``audit.entries`` (schema ``audit``, migrated by every service at start) refuses UPDATE,
DELETE and TRUNCATE in the database. Each entry's ``hash`` is
``sha256(prev_hash || canonical JSON of (id, at, actor, action, subject, detail))`` and its
``prev_hash`` is the hash of the entry before it (``GENESIS`` for the first), so editing,
removing or reordering an entry breaks the chain from there on; ``verify`` finds the first
break. (Removing the newest entries leaves a valid shorter chain: keep the head hash that
``verify`` reports somewhere else to detect that.)

Appends are serialised by a transaction-level advisory lock, so concurrent services cannot
fork the chain (``prev_hash`` is also unique); the lock is held until the caller's
transaction commits. Call ``record`` inside the transaction that makes the change, as its
last statement, so the entry exists exactly when the change does::

    async with pool.acquire() as conn, conn.transaction():
        ...                                   # the change
        await audit.record(conn, actor, "review.resolved", signature_id, {"status": "VALID"})

``actor`` is the caller's token id (``sigverify_common.auth.actor()``) or
``"system:<service>"``. ``detail`` holds identifiers, codes and counts: never names,
addresses or birth dates.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from sigverify_common.db import Conn

SCHEMA = "audit"
#: The package whose ``migrations/`` create ``audit.entries``.
MIGRATIONS = "sigverify_common.schemas.audit"
GENESIS = "0" * 64
_LOCK = zlib.crc32(b"sigverify-audit-chain")


@dataclass(frozen=True, slots=True)
class Entry:
    id: int
    at: datetime
    actor: str
    action: str
    subject: str
    detail: Mapping[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class Report:
    ok: bool
    entries: int
    first_broken_id: int = 0
    problem: str = ""
    head_hash: str = GENESIS


def _plain(value: Any) -> Any:
    """JSON values that survive jsonb unchanged: floats become strings, tuples lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def canonical(entry_id: int, at: datetime, actor: str, action: str, subject: str,
              detail: Mapping[str, Any]) -> str:
    """The entry's fields as canonical JSON (sorted keys, no spaces, UTC microseconds)."""
    return json.dumps(
        {"id": entry_id, "at": at.astimezone(UTC).isoformat(timespec="microseconds"),
         "actor": actor, "action": action, "subject": subject, "detail": _plain(detail)},
        sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    )


def entry_hash(prev_hash: str, entry_id: int, at: datetime, actor: str, action: str,
               subject: str, detail: Mapping[str, Any]) -> str:
    body = canonical(entry_id, at, actor, action, subject, detail)
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


def walk(entries: Iterable[Entry], prev: str = GENESIS, checked: int = 0) -> Report:
    """Check a chain given in id order, each link and each hash; ``prev`` and ``checked``
    continue a walk from an earlier page."""
    n = checked
    for e in entries:
        if e.prev_hash != prev:
            return Report(False, n, e.id, "prev_hash is not the previous entry's hash (an entry "
                          "before it was removed or altered)", prev)
        if entry_hash(e.prev_hash, e.id, e.at, e.actor, e.action, e.subject, e.detail) != e.hash:
            return Report(False, n, e.id, "hash does not match the entry's content (altered)", prev)
        prev = e.hash
        n += 1
    return Report(True, n, head_hash=prev)


async def record(conn: Conn, actor: str, action: str, subject: str = "",
                 detail: Mapping[str, Any] | None = None) -> int:
    """Append an entry inside the caller's open transaction; returns its id."""
    if not conn.is_in_transaction():
        raise RuntimeError("audit.record must run inside the transaction that makes the change")
    plain = _plain(detail or {})
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
    prev = await conn.fetchval("SELECT hash FROM audit.entries ORDER BY id DESC LIMIT 1") or GENESIS
    entry_id = int(await conn.fetchval("SELECT nextval(pg_get_serial_sequence('audit.entries', 'id'))"))
    at = datetime.now(UTC)
    digest = entry_hash(prev, entry_id, at, actor, action, subject, plain)
    await conn.execute(
        "INSERT INTO audit.entries (id, at, actor, action, subject, detail, prev_hash, hash) "
        "VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8)",
        entry_id, at, actor, action, subject, json.dumps(plain), prev, digest,
    )
    return entry_id


async def record_now(pool: asyncpg.Pool, actor: str, action: str, subject: str = "",
                     detail: Mapping[str, Any] | None = None) -> int:
    """Append an entry in a transaction of its own (for events that change no other state)."""
    async with pool.acquire() as conn, conn.transaction():
        return await record(conn, actor, action, subject, detail)


def _entry(r: asyncpg.Record) -> Entry:
    detail = r["detail"]
    return Entry(r["id"], r["at"], r["actor"], r["action"], r["subject"],
                 json.loads(detail) if isinstance(detail, str) else detail, r["prev_hash"], r["hash"])


async def verify(pool: asyncpg.Pool, page: int = 2000) -> Report:
    """Walk the whole chain in one snapshot (appends commit in chain order, so a snapshot
    holds a prefix of the chain)."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        report = Report(True, 0)
        batch: list[Entry] = []
        async for r in conn.cursor("SELECT * FROM audit.entries ORDER BY id", prefetch=page):
            batch.append(_entry(r))
            if len(batch) >= page:
                report = walk(batch, report.head_hash, report.entries)
                if not report.ok:
                    return report
                batch = []
        return walk(batch, report.head_hash, report.entries)
