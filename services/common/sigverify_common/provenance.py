"""Whether an event's signature is one intake stored: consumers refuse the others.

Intake's ``intake.signatures`` is the record of what was received. An event about a
signature intake never stored (or stored under another petition or batch) is not applied:
the consumer sets it aside as a dead letter with the reason, so no count ever includes a
signature that was not received. Reasons name the signature id (a UUID the topic's checks
have validated), never the event's other contents.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from asyncpg import Record

from sigverify_common.db import Conn


class AboutSignature(Protocol):
    @property
    def signature_id(self) -> str: ...
    @property
    def petition_id(self) -> str: ...
    @property
    def batch_id(self) -> str: ...


async def refusals(conn: Conn, events: Sequence[AboutSignature]) -> list[str | None]:
    """For each event, why it must be refused (None when its signature is intake's)."""
    return (await received(conn, events))[0]


async def received(conn: Conn, events: Sequence[AboutSignature], columns: Sequence[str] = ()
                   ) -> tuple[list[str | None], dict[str, Record]]:
    """``refusals``, and the stored rows of the signatures not refused, by signature id,
    with ``columns`` of ``intake.signatures`` besides (read in the same query: a consumer
    that needs the printed signature does not read the rows twice)."""
    if not events:
        return [], {}
    # Ids are compared as canonical text (the topics' checks make sure of the events' form;
    # a UUID read from the database prints in it): no uuid.UUID made per event.
    extra = "".join(f", {c}" for c in columns)
    stored = {
        str(r["signature_id"]): r
        for r in await conn.fetch(
            f"SELECT signature_id, petition_id, batch_id{extra} FROM intake.signatures "  # noqa: S608
            "WHERE signature_id = ANY($1::uuid[])", [e.signature_id for e in events])
    }
    missing = {e.petition_id for e in events if e.signature_id not in stored}
    petitions = {
        r["petition_id"] for r in await conn.fetch(
            "SELECT petition_id FROM intake.petitions WHERE petition_id = ANY($1::text[])",
            list(missing))
    } if missing else set()
    out: list[str | None] = []
    rows: dict[str, Record] = {}
    for e in events:
        sid = e.signature_id
        at_intake = stored.get(sid)
        if at_intake is None:
            out.append(f"signature {sid} was never received by intake"
                       + ("" if e.petition_id in petitions else " (its petition is unknown)"))
        elif (at_intake["petition_id"] != e.petition_id
              or str(at_intake["batch_id"]) != e.batch_id):
            out.append(f"signature {sid} was received by intake for another "
                       "petition or batch")
        else:
            out.append(None)
            rows[sid] = at_intake
    return out, rows
