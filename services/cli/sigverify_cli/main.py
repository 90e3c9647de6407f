"""``sigverify``: the command line for clerks, campaign staff, ops engineers and admins.

    sigverify stack up|down|status
    sigverify roll load roll.csv [--max-rejected N|P%] [--timeout S]
    sigverify roll list [--json] | activate VERSION | rollback
    sigverify petition create --id ID --title T --required N --deadline YYYY-MM-DD
                              [--method full-count|random-sample] [--sample-minimum N]
                              [--sample-percent P] [--fail-below P] [--qualify-above P]
                              [--filing-closes ISO]
    sigverify petition set-method --petition ID --method M [--sample-* ...] --reason TEXT
    sigverify petition show --petition ID
    sigverify submit batch.csv --petition ID --county NAME [--key KEY]   (exit 4: rows rejected)
    sigverify county close --petition ID --county NAME [--seed TEXT]
    sigverify county list --petition ID
    sigverify sample show --petition ID --county NAME [--all] [--out FILE.csv]
    sigverify batch show BATCH_ID
    sigverify wait --petition ID [--timeout S] [--decision]
    sigverify tally --petition ID [--json]
    sigverify watch --petition ID [--once]
    sigverify report --petition ID --out DIR
    sigverify results export --petition ID --out results.csv
    sigverify explain SIGNATURE_ID      [--json]
    sigverify review list --petition ID [--county NAME] [--json] | show SIGNATURE_ID [--json]
    sigverify model show [--model ID] [--json] | train [--max-signatures N]   (train: admins)
    sigverify token create --role clerk|reviewer|ops|admin [--county NAME] [--label TEXT]
                           [--expires 90d|12h|YYYY-MM-DD|ISO-TIMESTAMP|never]
    sigverify token list [--all] | revoke TOKEN_ID | bootstrap [--expires WHEN]
    sigverify audit verify
    sigverify check --petition ID       (delivery invariants; exit 1 when one fails)
    (every command: --token TOKEN, else $SIGVERIFY_TOKEN, else the local stack's admin token;
    exit 5 when a service it calls cannot be reached or answers UNAVAILABLE)
    sigverify demo                      (what `make run` runs)
    sigverify eval-data make KIND --out DIR | score --truth T --results R --batches MAP
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import grpc
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sigverify.access.v1 import access_pb2, access_pb2_grpc
from sigverify.common.v1 import common_pb2
from sigverify.intake.v1 import intake_pb2, intake_pb2_grpc
from sigverify.matching.v1 import matching_pb2, matching_pb2_grpc
from sigverify.review.v1 import review_pb2, review_pb2_grpc
from sigverify.tally.v1 import tally_pb2, tally_pb2_grpc
from sigverify_cli import client, evidence, stack
from sigverify_cli.client import CliError, Endpoints
from sigverify_cli.statutory import (
    COUNTY_COLUMNS,
    FINAL_OUTCOMES,
    OUTCOME_STYLE,
    check_draw,
    county_row,
    is_statutory,
    method_of,
    outcome_name,
    statewide_facts,
    statutory_dict,
)
from sigverify_common.access import Role, parse_expiry
from sigverify_common.convert import (
    decision_from_pb,
    method_to_pb,
    policy_from_pb,
    policy_to_pb,
    reason_from_pb,
    reason_to_pb,
    rules_from_pb,
    status_from_pb,
)
from sigverify_common.csvtext import CsvRecords
from sigverify_common.errors import InvalidArgument, SigVerifyError
from sigverify_common.sampling import Method, SamplingRules, sample_size
from sigverify_common.textfile import detect_encoding
from sigverify_common.tokens import instant
from sigverify_common.vocab import REVIEW_REJECTIONS, DuplicatePolicy, Reason, canonical_county

console = Console(stderr=False, width=None if sys.stdout.isatty() else 110)
err = Console(stderr=True)

EXPORT_COLUMNS = ("signature_id", "batch_id", "county", "line", "status", "reason", "voter_id",
                  "score")


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err, transient=False,
                    disable=not err.is_terminal and os.environ.get("SIGVERIFY_PROGRESS") != "1")


# -- stack -------------------------------------------------------------------------------------

def cmd_stack(args: argparse.Namespace) -> int:
    home = client.home()
    if args.action == "up":
        state = stack.up(home, os.environ, lambda m: err.print(f"[dim]{m}[/dim]"))
        _print_stack(state)
        return 0
    if args.action == "down":
        if not stack.down(home, lambda m: err.print(f"[dim]{m}[/dim]")):
            err.print("no stack is running from", home)
        return 0
    recorded = stack.StackState.load(home)
    if args.action == "restart":
        if not args.service:
            raise CliError("stack restart needs the service to restart (as stack status "
                           "lists it: intake, matching, dedupe, tally)")
        if recorded is None:
            raise CliError(f"no stack is running from {home} (sigverify stack up)")
        proc = stack.restart(recorded, args.service, lambda m: err.print(f"[dim]{m}[/dim]"))
        console.print(f"{args.service} restarted: pid {proc.pid}, serving")
        return 0
    if recorded is None:
        console.print(f"no stack recorded under {home}")
        return 1
    _print_stack(recorded)
    return 0 if (all(stack.pid_alive(p.pid) for p in recorded.services.values())
                 and stack.broker_problem(recorded) is None) else 1


def _print_stack(state: stack.StackState) -> None:
    t = Table(title=f"SigVerify stack ({state.home})")
    for col in ("service", "pid", "gRPC", "metrics", "state"):
        t.add_column(col)
    for name, p in state.services.items():
        alive = stack.pid_alive(p.pid)
        status = ("SERVING" if stack.healthy(state.addr(name)) else "NOT_SERVING") if alive else "down"
        grpc_bound, metrics_bound = state.bound(name) if alive else ("-", "-")
        t.add_row(name, str(p.pid), grpc_bound, metrics_bound, status)
    console.print(t)
    pg = (f"embedded, listening on {stack.bound(state.pg_port, '127.0.0.1')}" if state.pg_data
          else f"external ({state.database_url.rsplit('@', 1)[-1]})")
    console.print(f"database: {pg}")
    broker_port = int(state.kafka_bootstrap_servers.rsplit(":", 1)[-1]) if state.broker_pid else 0
    problem = stack.broker_problem(state)
    if problem:
        console.print("broker:   " + ("tansu (embedded), DOWN" if state.broker_pid else
                                      f"external ({state.kafka_bootstrap_servers}), DOWN"))
        console.print(escape(problem), soft_wrap=True)
        return
    console.print("broker:   " + (f"tansu (embedded), listening on {stack.bound(broker_port, '127.0.0.1')}"
                                  if state.broker_pid else f"external ({state.kafka_bootstrap_servers})"))


# -- roll ----------------------------------------------------------------------------------------

#: Bytes per LoadRoll message (the server reads the file as one stream, whatever the split).
ROLL_CHUNK_BYTES = 1 << 20
#: Versions ``roll list`` shows without --all.
ROLL_LIST_ROWS = 10
#: The longest pause between two tallies while waiting for a petition's verification.
WAIT_POLL_MAX = 2.0
#: Time allowed for a roll's upload and COPY, beyond the wait for the matchers' indexes.
ROLL_UPLOAD_SECONDS = 3600.0
ROLL_STATES = {
    matching_pb2.ROLL_STATE_LOADING: "loading", matching_pb2.ROLL_STATE_BUILDING: "building",
    matching_pb2.ROLL_STATE_ACTIVE: "active", matching_pb2.ROLL_STATE_READY: "ready",
    matching_pb2.ROLL_STATE_RETIRED: "retired", matching_pb2.ROLL_STATE_DISCARDED: "discarded",
}


#: A roll's header line ends within this many bytes, else the file is not a roll CSV.
MAX_HEADER_BYTES = 1 << 20


def roll_encoding(path: Path) -> str:
    """The encoding of a roll file, which is checked before its upload starts (so that a file
    that cannot be a roll makes no roll version): a regular file, CSV text in an encoding
    the loader reads (see ``sigverify_common.textfile``), its first line ending within
    ``MAX_HEADER_BYTES``. Else CliError, one line naming the file and what is wrong."""
    check_input_file(path)
    try:
        encoding = detect_encoding(path)
    except InvalidArgument as exc:
        raise CliError(str(exc)) from None
    with path.open("rb") as fh:
        head = fh.read(MAX_HEADER_BYTES)
    if len(head) == MAX_HEADER_BYTES and b"\n" not in head and b"\r" not in head:
        raise CliError(f"{path}: no line ends within its first {MAX_HEADER_BYTES:,} bytes, so "
                       "it has no header row: not a roll CSV file")
    check_roll_header(path, encoding)
    return encoding


def check_roll_header(path: Path, encoding: str) -> None:
    """The roll's header row, checked by the server's own rule (``sigverify_matching.roll.
    check_header``: no column missing, repeated, unnamed or unknown) and read as the server
    reads it (``CsvRecords``, the file decoded as ``open_roll`` decodes it, in ``encoding``,
    already detected). Else CliError, the server's one line: a bad header would otherwise
    make a roll version only to have it discarded. The server checks it again (clients of
    their own)."""
    # Imported here: the matching package doubles the CLI's start-up time, and only a roll
    # load needs it.
    from sigverify_matching.roll import check_header

    if encoding.startswith("utf-8"):  # as open_roll opens it
        fh = path.open(newline="", encoding="utf-8-sig", errors="surrogateescape")
    else:
        fh = path.open(newline="", encoding=encoding)
    with fh:
        records = CsvRecords(fh, str(path))
        try:
            check_header(records.header(), str(path), records.lines)
        except InvalidArgument as exc:
            raise CliError(str(exc)) from None


def _file_chunks(path: Path, encoding: str | None = None) -> Iterator[bytes]:
    """The file as UTF-8 bytes in chunks: a spreadsheet's cp1252 or latin-1 export is
    re-encoded (its encoding detected first, unless given); UTF-8 goes as it is."""
    encoding = encoding or detect_encoding(path)
    if encoding.startswith("utf-8"):
        with path.open("rb") as fh:
            while chunk := fh.read(ROLL_CHUNK_BYTES):
                yield chunk
        return
    with path.open(encoding=encoding, newline="") as text:
        while chunk_text := text.read(ROLL_CHUNK_BYTES):
            yield chunk_text.encode("utf-8")


async def upload_roll(channel: grpc.aio.Channel, path: Path, max_rejected: str = "",
                      timeout: float = 0.0,
                      on_progress: Callable[[matching_pb2.RollProgress, int], None] | None = None,
                      ) -> matching_pb2.RollProgress:
    """Stream ``path`` to matching's LoadRoll; ``on_progress(progress, bytes sent)`` sees each
    progress message; returns the last (ACTIVE). Refusals raise the RPC's error.

    The file follows the server's first answer, and stops when the server says the load is
    discarded, so that no write is under way when the call ends with its status. The file is
    checked first (``roll_encoding``): one that cannot be a roll is refused (CliError) before
    the call, and makes no roll version. Should it become unreadable during the upload, a
    second header is sent, which the server refuses (INVALID_ARGUMENT, the version discarded),
    and CliError says why."""
    encoding = roll_encoding(path)
    sent = 0
    go, stop, ended = asyncio.Event(), False, asyncio.Event()
    failure: str | None = None
    stub = matching_pb2_grpc.MatchingServiceStub(channel)
    # A caller who may not load rolls is told so by a plain call first: a stream refused
    # before its first message has gone out can end, on the client's side, in an INTERNAL
    # "failed to send" instead of the server's PERMISSION_DENIED. (ListRolls has the same
    # access rule as LoadRoll.)
    await stub.ListRolls(matching_pb2.ListRollsRequest(), timeout=60)

    async def requests() -> AsyncIterator[matching_pb2.LoadRollRequest]:
        # An exception raised here is swallowed by gRPC, which cancels the call (the client
        # sees only CancelledError), and the server may take a cancelled stream for the end
        # of the file and load its first part as if it were all of it. So a file that fails
        # to read ends the load in band: a second header, which the server refuses before
        # anything after it (why is kept in ``failure``); the stream stays open meanwhile.
        nonlocal sent, failure
        yield matching_pb2.LoadRollRequest(header=matching_pb2.RollHeader(
            source=path.name, max_rejected=max_rejected, activation_timeout_seconds=timeout))
        await go.wait()
        chunks = _file_chunks(path, encoding)
        while not stop:
            try:
                chunk = await asyncio.to_thread(next, chunks, None)
            except InvalidArgument as exc:
                failure = str(exc)
            except (OSError, ValueError) as exc:  # UnicodeDecodeError: the file changed
                failure = (f"{path}: the file could not be read to its end during the upload "
                           f"({getattr(exc, 'strerror', None) or 'its text changed'}); "
                           "the load was abandoned and nothing was loaded")
            if failure is not None:
                yield matching_pb2.LoadRollRequest(header=matching_pb2.RollHeader(
                    source=path.name))
                await ended.wait()
                return
            if chunk is None:
                # The file is complete: without this the server loads nothing.
                yield matching_pb2.LoadRollRequest(end=matching_pb2.RollEnd(bytes=sent))
                return
            yield matching_pb2.LoadRollRequest(data=chunk)
            sent += len(chunk)

    call = stub.LoadRoll(requests(), timeout=ROLL_UPLOAD_SECONDS + (timeout or 900.0))
    last: matching_pb2.RollProgress | None = None
    try:
        async for p in call:
            go.set()
            if p.state == matching_pb2.ROLL_STATE_DISCARDED:
                stop = True
            last = p
            if on_progress is not None:
                on_progress(p, sent)
    except grpc.aio.AioRpcError:
        if failure is None:
            raise
        raise CliError(failure) from None
    finally:
        stop = True
        go.set()
        ended.set()
    if last is None or last.state != matching_pb2.ROLL_STATE_ACTIVE:
        raise CliError("the roll load ended without activating a version")
    return last


def _n(n: int, noun: str) -> str:
    """``n`` with ``noun``, plural unless n == 1 ("1 signature", "2,000 signatures")."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _rows(n: int) -> str:
    return _n(n, "row")


def _rejections(p: matching_pb2.RollProgress) -> None:
    for r in p.rejections:
        console.print(f"  line {r.line}: {r.field}: {r.reason}")
    if p.rejected > len(p.rejections):
        console.print(f"  ... and {p.rejected - len(p.rejections):,} more")


class _RollPhases:
    """Shows a roll load's or activation's progress: a bar on a terminal, a line per phase
    on stderr everywhere (so a log shows what happened)."""

    def __init__(self, prog: Progress, total_bytes: int | None) -> None:
        self._prog = prog
        self._task = prog.add_task("uploading", total=total_bytes)
        self._state = 0
        self._built: tuple[int, int] | None = None
        #: The version the server said it loads or activates, and its last state (0: none).
        self.version = 0
        self.state = 0

    def __call__(self, p: matching_pb2.RollProgress, sent: int) -> None:
        if p.version:
            self.version, self.state = p.version, p.state
        if p.state == matching_pb2.ROLL_STATE_LOADING and p.version:
            self._prog.update(self._task, completed=sent, description=(
                f"version {p.version}: {p.rows:,} rows, {p.rejected:,} rejected"))
        elif p.state == matching_pb2.ROLL_STATE_BUILDING:
            if self._state != p.state and p.rows:
                self._prog.update(self._task, completed=sent)
                err.print(f"roll version {p.version}: {p.rows:,} voters loaded, "
                          f"{_rows(p.rejected)} rejected; the matchers build its index "
                          "(deciding meanwhile with the active version, if any)")
            if self._built != (p.replicas_built, p.replicas_live):
                self._built = (p.replicas_built, p.replicas_live)
                err.print(f"  index of version {p.version}: {p.replicas_built} of "
                          f"{p.replicas_live} live matcher replica(s) ready")
        self._state = p.state


async def roll_load(ep: Endpoints, path: Path, max_rejected: str = "", timeout: float = 0.0
                    ) -> int:
    check_input_file(path)  # the rest of the file's checks: upload_roll, before any call
    started = time.perf_counter()
    async with ep.channel(ep.matching) as ch:
        with _progress() as prog:
            phases = _RollPhases(prog, path.stat().st_size)
            try:
                done = await upload_roll(ch, path, max_rejected, timeout, phases)
            except grpc.aio.AioRpcError as exc:
                # A stream broken under the upload: UNAVAILABLE, or gRPC's own INTERNAL
                # for a transport cut mid-stream (seen in 1 run in 4 of the test's stand-in;
                # the service's INTERNAL answers carry a reference instead).
                cut = exc.code() == grpc.StatusCode.UNAVAILABLE or (
                    exc.code() == grpc.StatusCode.INTERNAL
                    and (exc.details() or "").startswith("Internal error from Core"))
                if not cut or not phases.version:
                    raise  # not reached at all: the plain "unreachable" line (exit 5)
                raise client.ServiceUnreachable(_roll_cut_off(ep.matching, phases)) from None
    secs = time.perf_counter() - started
    console.print(f"roll version {done.version} active: {done.rows:,} voters, "
                  f"{_rows(done.rejected)} rejected; {secs:.1f}s ({done.rows / max(secs, 1e-9):,.0f} rows/s)"
                  + (f"; version {done.previous_version} kept for 'sigverify roll rollback'"
                     if done.previous_version else ""))
    _rejections(done)
    return 0


def activated_line(version: int, rows: int, previous: int) -> str:
    """What 'sigverify roll activate|rollback' prints: the version made active and the one
    kept for a rollback, or that there is none (it read "version - kept for ..." then)."""
    kept = (f"version {previous} kept for 'sigverify roll rollback'" if previous
            else "no earlier version to roll back to")
    return f"roll version {version} active ({rows:,} voters); {kept}"


def _roll_cut_off(addr: str, phases: _RollPhases) -> str:
    """Why a roll load ended with matching gone once it had named the version, and what
    to run next."""
    state = next((name for k, name in ROLL_STATES.items() if k == phases.state), "loading")
    return (f"matching at {addr} went away during the load of roll version {phases.version} "
            f"(last seen {state}); run 'sigverify roll list': if version {phases.version} is "
            f"ready, 'sigverify roll activate {phases.version}' makes it active, otherwise load "
            "the file again")


def _roll_dict(v: matching_pb2.RollVersion) -> dict[str, Any]:
    return {"version": v.version, "state": ROLL_STATES.get(v.state, "?"), "voters": v.rows,
            "rejected": v.rejected, "source": v.source, "loaded_by": v.loaded_by,
            "started_at": v.started_at, "loaded_at": v.loaded_at,
            "activated_at": v.activated_at, "deactivated_at": v.deactivated_at, "note": v.note}


def _when(iso: str) -> str:
    return iso[:16].replace("T", " ") if iso else ""


async def roll_cmd(ep: Endpoints, args: argparse.Namespace) -> int:
    if args.action == "load":
        return await roll_load(ep, Path(args.file), args.max_rejected, args.timeout)
    async with ep.channel(ep.matching) as ch:
        stub = matching_pb2_grpc.MatchingServiceStub(ch)
        if args.action in ("activate", "rollback"):
            request = matching_pb2.ActivateRollRequest(
                version=args.version if args.action == "activate" else 0,
                previous=args.action == "rollback", activation_timeout_seconds=args.timeout)
            last: matching_pb2.RollProgress | None = None
            with _progress() as prog:
                phases = _RollPhases(prog, None)
                async for p in stub.ActivateRoll(request, timeout=(args.timeout or 900.0) + 60):
                    phases(p, 0)
                    last = p
            if last is None or last.state != matching_pb2.ROLL_STATE_ACTIVE:
                raise CliError("the activation ended without activating a version")
            console.print(activated_line(last.version, last.rows, last.previous_version))
            return 0
        listed = await stub.ListRolls(matching_pb2.ListRollsRequest(), timeout=30)
    if args.json:
        console.print_json(json.dumps({
            "versions": [_roll_dict(v) for v in listed.versions],
            "replicas": [{"replica_id": r.replica_id, "serving_version": r.serving_version,
                          "built_versions": list(r.built_versions),
                          "heartbeat_at": r.heartbeat_at, "live": r.live}
                         for r in listed.replicas]}))
        return 0
    shown = list(listed.versions) if args.all else list(listed.versions)[:ROLL_LIST_ROWS]
    t = Table(title="voter roll versions (times UTC)")
    for col in ("version", "state", "voters", "rejected", "source", "loaded by", "loaded",
                "activated"):
        t.add_column(col, no_wrap=col != "source",
                     justify="right" if col in ("version", "voters", "rejected") else "left")
    for v in shown:
        discarded = v.state == matching_pb2.ROLL_STATE_DISCARDED
        t.add_row(str(v.version), ROLL_STATES.get(v.state, "?"), "-" if discarded else f"{v.rows:,}",
                  f"{v.rejected:,}", escape(v.source), v.loaded_by, _when(v.loaded_at),
                  _when(v.activated_at))
    console.print(t)
    for v in shown:
        if v.note:
            console.print(f"version {v.version} {ROLL_STATES.get(v.state, '?')}: "
                          + escape(v.note if len(v.note) <= 300 else v.note[:297] + "..."))
    if len(shown) < len(listed.versions):
        console.print(f"({len(listed.versions) - len(shown)} older version(s): --all)")
    r = Table(title="matcher replicas")
    for col in ("replica", "serving", "indexes held", "heartbeat", "live"):
        r.add_column(col, no_wrap=True)
    for rep in listed.replicas:
        r.add_row(rep.replica_id, str(rep.serving_version or "-"),
                  ", ".join(str(v) for v in rep.built_versions) or "-",
                  rep.heartbeat_at[:19].replace("T", " "),
                  "yes" if rep.live else "no")
    console.print(r)
    return 0


# -- petitions, batches ------------------------------------------------------------------------

def sampling_of(args: argparse.Namespace) -> common_pb2.SamplingRules:
    """The ``--sample-*`` options as a SamplingRules message (empty fields: the server fills in
    California's 500 / 3 / 95 / 110), checked here as the server will check them."""
    for flag, text in (("--sample-percent", args.sample_percent), ("--fail-below", args.fail_below),
                       ("--qualify-above", args.qualify_above)):
        try:
            ok = not text.strip() or Decimal(text.strip()).is_finite()
        except InvalidOperation:
            ok = False
        if not ok:
            raise CliError(f"{flag} {text!r} is not a decimal number")
    pb = common_pb2.SamplingRules(
        minimum_sample=args.sample_minimum or 0, sample_percent=args.sample_percent.strip(),
        fail_below_percent=args.fail_below.strip(), qualify_above_percent=args.qualify_above.strip())
    try:
        rules_from_pb(pb)
    except InvalidArgument as exc:
        raise CliError(str(exc)) from None
    return pb


def check_instant(text: str, flag: str) -> str:
    """An ISO timestamp or date (the server reads a date as its end, UTC), or ""."""
    text = text.strip()
    if text:
        try:
            if len(text) == 10:
                date.fromisoformat(text)
            else:
                datetime.fromisoformat(text)
        except ValueError:
            raise CliError(f"{flag} {text!r} is not an ISO date or timestamp") from None
    return text


def rules_text(rules: SamplingRules) -> str:
    return (f"each county verifies a random sample of {rules.minimum:,} or {rules.percent} % of "
            f"its raw count, whichever is greater (every signature when {rules.minimum:,} or "
            f"fewer); the statewide projection fails below {rules.fail_below} % of the "
            f"requirement, qualifies above {rules.qualify_above} %, full count in between")


def method_text(p: intake_pb2.Petition) -> str:
    """How the petition is verified, in a sentence."""
    method = method_of(p.method)
    try:
        rules: SamplingRules | None = rules_from_pb(p.sampling)
    except InvalidArgument:
        rules = None
    if method is Method.RANDOM_SAMPLE:
        return f"{method.value}: " + (rules_text(rules) if rules else "rules unreadable")
    return f"{method.value}: every signature is verified as it arrives"


def petition_line(p: intake_pb2.Petition) -> str:
    return (f"petition {p.petition_id}: {p.title!r}, {p.required_signatures:,} valid "
            f"signatures required by {p.deadline}; duplicates "
            f"{policy_from_pb(p.duplicate_policy).value}; online signatures "
            f"{'count' if p.accept_online else 'do not count'}")


async def petition_create(ep: Endpoints, args: argparse.Namespace) -> int:
    method = Method(args.method)
    rules = sampling_of(args)
    if method is Method.FULL_COUNT and rules != common_pb2.SamplingRules():
        err.print("[dim]note: the sampling options apply if the petition becomes random-sample[/dim]")
    async with ep.channel(ep.intake) as ch:
        p = await intake_pb2_grpc.IntakeServiceStub(ch).CreatePetition(
            intake_pb2.CreatePetitionRequest(
                petition_id=args.id, title=args.title, required_signatures=args.required,
                deadline=args.deadline,
                duplicate_policy=policy_to_pb(DuplicatePolicy(args.duplicate_policy)),
                accept_online=args.accept_online, method=method_to_pb(method), sampling=rules,
                filing_closes_at=check_instant(args.filing_closes, "--filing-closes"),
                counties=[c for c in args.counties.split(",") if c.strip()]), timeout=30)
    console.print(escape(petition_line(p)))
    console.print(escape(f"verification: {method_text(p)}"
                         + (f"; every open county's filing closes at {p.filing_closes_at}"
                            if p.filing_closes_at else "")))
    if p.counties:
        console.print(escape(f"counties expected to file ({len(p.counties)}): "
                             + ", ".join(p.counties)))
    return 0


async def petition_set_method(ep: Endpoints, args: argparse.Namespace) -> int:
    if not args.reason.strip():
        raise CliError("--reason is required: it goes into the audit log")
    async with ep.channel(ep.intake) as ch:
        p = await client.set_method(ch, intake_pb2.SetVerificationMethodRequest(
            petition_id=args.petition, method=method_to_pb(Method(args.method)),
            sampling=sampling_of(args), reason=args.reason.strip()))
    console.print(escape(f"petition {p.petition_id}: verification {method_text(p)} "
                         "(the change and its reason are in the audit log)"))
    return 0


def counties_table(filings: Sequence[intake_pb2.CountyFiling], title: str = "counties") -> Table:
    t = Table(title=title)
    for col in ("county", "raw", "closed", "closed at", "closed by", "sample size", "seed",
                "released"):
        t.add_column(col, justify="right" if col in ("raw", "sample size", "released") else "left")
    for f in filings:
        t.add_row(escape(f.county), f"{f.raw_count:,}", "yes" if f.closed else "no",
                  f.closed_at[:19] or "-", escape(f.closed_by) or "-",
                  f"{f.sample_size:,}" if f.seed else "-", escape(f.seed) or "-", f"{f.released:,}")
    return t


def print_counties(filings: Sequence[intake_pb2.CountyFiling], petition: str) -> None:
    if not filings:
        console.print(f"no county has filed signatures for {escape(petition)} yet")
        return
    closed = sum(1 for f in filings if f.closed)
    console.print(counties_table(filings, f"counties of {escape(petition)}: {closed} of "
                                          f"{len(filings)} closed, raw count "
                                          f"{sum(f.raw_count for f in filings):,}"))


async def petition_show(ep: Endpoints, args: argparse.Namespace) -> int:
    async with ep.channel(ep.intake) as ch:
        p = await client.get_petition(ch, args.petition)
        filings = await client.list_counties(ch, args.petition)
    console.print(escape(petition_line(p)))
    console.print(escape(f"created {p.created_at}"))
    console.print(escape(f"verification: {method_text(p)}"))
    console.print(escape("filing closes: " + (p.filing_closes_at or
                                             "only by command (sigverify county close)")))
    console.print(escape("counties expected to file: " + (", ".join(p.counties) or
                                                         "whichever send batches")))
    if method_of(p.method) is Method.RANDOM_SAMPLE or p.full_count_started_at:
        console.print(escape("full count started: " + (p.full_count_started_at or "no")))
    print_counties(filings, p.petition_id)
    return 0


async def petition_cmd(ep: Endpoints, args: argparse.Namespace) -> int:
    if args.action == "create":
        return await petition_create(ep, args)
    if args.action == "set-method":
        return await petition_set_method(ep, args)
    return await petition_show(ep, args)


# -- counties and samples ----------------------------------------------------------------------

async def county_cmd(ep: Endpoints, args: argparse.Namespace) -> int:
    async with ep.channel(ep.intake) as ch:
        if args.action == "list":
            print_counties(await client.list_counties(ch, args.petition), args.petition)
            return 0
        f = await client.close_county(ch, args.petition, args.county, args.seed.strip())
    if f.seed:
        drawn = (f"random sample of {f.sample_size:,} drawn with seed {f.seed}; "
                 f"{f.released:,} sent to matching")
    else:
        drawn = "full count: every signature is verified"
    console.print(escape(f"county {f.county} of {f.petition_id} closed at {f.closed_at}: raw count "
                         f"{f.raw_count:,}; {drawn}"))
    if f.seed:
        console.print(escape(f"check the draw: sigverify sample show --petition {f.petition_id} "
                             f"--county \"{f.county}\""), style="dim")
    return 0


SAMPLE_COLUMNS = ("rank", "signature_id", "batch_id", "line", "sampled", "draw_key")


def write_sample_csv(path: Path, entries: Iterable[intake_pb2.SampleEntry]) -> int:
    tmp = path.with_name(path.name + ".part")
    n = 0
    try:
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(SAMPLE_COLUMNS)
            for e in entries:
                w.writerow((e.rank, e.signature_id, e.batch_id, e.line, str(e.sampled).lower(),
                            e.draw_key))
                n += 1
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return n


async def sample_show(ep: Endpoints, args: argparse.Namespace) -> int:
    county = canonical_county(args.county)
    async with ep.channel(ep.intake) as ch:
        p = await client.get_petition(ch, args.petition)
        filings = await client.list_counties(ch, args.petition)
        f = next((f for f in filings if canonical_county(f.county) == county), None)
        if f is None:
            known = ", ".join(x.county for x in filings) or "none"
            raise CliError(f"petition {args.petition} has no filing for {county!r} (counties: {known})")
        if not f.closed:
            raise CliError(f"{f.county}'s filing is still open: no sample is drawn until "
                           f"sigverify county close --petition {args.petition} --county \"{f.county}\"")
        if not f.seed:
            raise CliError(f"{f.county} was closed without a random sample (full count): every "
                           "signature is verified")
        entries = await client.list_sample(ch, args.petition, f.county)
    try:
        expected: int | None = sample_size(f.raw_count, rules_from_pb(p.sampling))
    except InvalidArgument:
        expected = None
    check = check_draw(f.seed, f.sample_size, entries, raw_count=f.raw_count,
                       expected_size=expected)
    shown = sorted((e for e in entries if args.all or e.sampled), key=lambda e: e.rank)
    if args.out:
        n = write_sample_csv(Path(args.out), shown)
        console.print(f"{n:,} {'signatures' if args.all else 'sampled signatures'} of "
                      f"{escape(f.county)} written to {escape(args.out)}")
    else:
        t = Table(title=escape(f"{f.county}: random sample of {f.sample_size:,} from "
                               f"{f.raw_count:,} (seed {f.seed})"))
        for col in ("rank", "batch id", "line", "signature id", *(("sampled",) if args.all else ())):
            t.add_column(col, justify="right" if col in ("rank", "line") else "left")
        for e in shown:
            t.add_row(f"{e.rank:,}", e.batch_id, str(e.line), e.signature_id,
                      *(("yes" if e.sampled else "no",) if args.all else ()))
        console.print(t)
    if check.identical:
        console.print(escape(check.summary()))
        return 0
    err.print(f"[red]error:[/red] {escape(check.summary())}")
    return 1


def check_input_file(path: Path) -> None:
    """A file to read: it exists and is a regular file, not a directory, a device (such as
    /dev/zero, which would never end) or a pipe (else a one-line error)."""
    if not path.exists():
        raise CliError(f"{path}: no such file")
    if path.is_dir():
        raise CliError(f"{path}: is a directory, not a CSV file")
    if not path.is_file():
        raise CliError(f"{path}: is not a regular file (a device, a pipe or a socket), not a "
                       "CSV file")


#: Rejected rows printed with a receipt; the rest: ``sigverify batch show ID --rejections``.
SHOWN_REJECTIONS = 20


def rejection_line(e: intake_pb2.RowError) -> str:
    where = f"line {e.line} (record {e.record})" if e.line else f"record {e.record}"
    return f"  rejected {where}: {e.field}: {e.reason}"


def print_receipt(r: intake_pb2.BatchReceipt, path: str = "", shown: int = SHOWN_REJECTIONS,
                  listed_after: bool = False) -> None:
    """A receipt and its first ``shown`` rejections; ``listed_after``: every rejection is
    listed next (so no "and N more" line)."""
    note = " (resubmission: first receipt returned, nothing counted again)" if r.resubmission else ""
    total = max(r.rows_rejected, len(r.rejected))
    console.print(escape(f"batch {r.batch_id} {path} county={r.county}: {_rows(r.rows_received)}, "
                         f"{_n(r.signatures_accepted, 'signature')} accepted ({r.incomplete:,} "
                         f"incomplete), {total:,} rejected{note}"), soft_wrap=True)
    for e in r.rejected[:shown]:
        console.print(escape(rejection_line(e)), highlight=False, soft_wrap=True)
    if total > shown and not listed_after:
        console.print(escape(f"  ... and {total - shown:,} more rejected rows: sigverify batch "
                             f"show {r.batch_id} --rejections"), soft_wrap=True)


#: The exit status of ``submit`` when every file was received but some of their rows were
#: rejected (each listed with its receipt): a script tells a clean batch (0) from one to fix.
#: Other statuses: 1 a call refused or failed, 2 a file or option that cannot be sent,
#: 5 intake unreachable (``client.EXIT_UNREACHABLE``), 70 an unexpected failure.
EXIT_ROWS_REJECTED = 4


async def submit(ep: Endpoints, args: argparse.Namespace) -> int:
    paths = [Path(name) for name in args.files]
    if args.key and len(paths) > 1:
        # A key names one batch: given to the first file only, the others would go unkeyed
        # without a word (it was so), and the same key on each would be refused as reused.
        raise CliError(f"--key names one batch: submit each of the {len(paths)} files with "
                       "its own --key, or send them together without --key")
    for path in paths:
        check_input_file(path)
    rejected = 0
    async with ep.channel(ep.intake) as ch:
        for path in paths:
            with _progress() as prog:
                task = prog.add_task(f"submitting {path.name}", total=None)

                def advance(n: int, task: Any = task, prog: Progress = prog) -> None:
                    prog.update(task, completed=n)

                receipt = await client.submit_batch(
                    ch, path, args.petition, args.county, args.key, progress=advance)
            print_receipt(receipt, str(path))
            # Rows the CLI could not read are sent as unreadable, so intake's count has them.
            rejected += max(receipt.rows_rejected, len(receipt.rejected))
    return EXIT_ROWS_REJECTED if rejected else 0


async def batch_show(ep: Endpoints, args: argparse.Namespace) -> int:
    async with ep.channel(ep.intake) as ch:
        r = await client.get_batch(ch, args.batch_id)
        if not args.rejections:
            print_receipt(r)
            return 0
        print_receipt(r, shown=0, listed_after=True)
        async for e in client.all_rejections(ch, args.batch_id):
            console.print(escape(rejection_line(e)), highlight=False, soft_wrap=True)
    return 0


# -- tally, wait, export -----------------------------------------------------------------------

def reason_counts_of(rcs: Iterable[tally_pb2.ReasonCount]) -> dict[str, int]:
    return {reason_from_pb(rc.reason).value: rc.count for rc in rcs}


def reason_counts(c: tally_pb2.Counts) -> dict[str, int]:
    return reason_counts_of(c.invalid_by_reason)


def counts_dict(c: tally_pb2.Counts) -> dict[str, Any]:
    return {"received": c.received, "verified": c.verified, "valid": c.valid,
            "invalid": c.invalid, "review": c.review, "pending": c.pending,
            "duplicates": c.duplicates, "invalid_by_reason": reason_counts(c),
            "not_sampled": c.not_sampled}


def tally_dict(t: tally_pb2.Tally) -> dict[str, Any]:
    return {
        "petition_id": t.petition_id, "title": t.title, "required": t.required_signatures,
        "deadline": t.deadline, "days_to_deadline": t.days_to_deadline,
        "progress_percent": t.progress_percent, "rows_rejected": t.rows_rejected,
        "as_of": t.as_of, "total": counts_dict(t.total),
        "by_county": {g.key: counts_dict(g.counts) for g in t.by_county},
        "by_batch": {g.key: counts_dict(g.counts) for g in t.by_batch},
        "by_circulator": {g.key: counts_dict(g.counts) for g in t.by_circulator},
        "flagged_circulators": [check_dict(x) for x in t.flagged_circulators],
        "circulators": [check_dict(x) for x in t.circulators],
        "flag_policy": {"test": t.flag_policy.test,
                        "suspect_reasons": list(t.flag_policy.suspect_reasons),
                        "min_decided": t.flag_policy.min_decided,
                        "min_ratio": t.flag_policy.min_ratio, "fdr": t.flag_policy.fdr},
        "method": method_of(t.method).name,
        # Every Statutory field (decimal figures as the server's text, outcomes by name);
        # null when the tally carries no statutory process.
        "statutory": statutory_dict(t.statutory) if t.HasField("statutory") else None,
    }


def check_dict(x: tally_pb2.CirculatorCheck) -> dict[str, Any]:
    return {"county": x.county, "circulator_id": x.circulator_id, "counts": counts_dict(x.counts),
            "decided": x.decided, "suspect": x.suspect,
            "suspect_by_reason": reason_counts_of(x.suspect_by_reason), "rate": x.rate,
            "others_rate": x.others_rate, "county_rate": x.county_rate, "p_value": x.p_value,
            "q_value": x.q_value, "tested": x.tested, "flagged": x.flagged}


def print_tally(t: tally_pb2.Tally) -> None:
    from sigverify_cli.report import deadline_text

    c = t.total
    console.print(f"[bold]{t.title}[/bold] ({t.petition_id}): {c.valid:,} valid of "
                  f"{t.required_signatures:,} required ({t.progress_percent:.2f} %); "
                  f"{deadline_text(t)}")
    not_sampled = f"not sampled {c.not_sampled:,}; " if c.not_sampled else ""
    console.print(f"received {c.received:,}; verified {c.verified:,}: valid {c.valid:,}, "
                  f"invalid {c.invalid:,}, review {c.review:,}; pending {c.pending:,}; "
                  f"{not_sampled}unreadable rows rejected at intake {t.rows_rejected:,}")
    reasons = Table(title="invalid by reason")
    reasons.add_column("reason")
    reasons.add_column("count", justify="right")
    for rc in c.invalid_by_reason:
        reasons.add_row(reason_from_pb(rc.reason).value, f"{rc.count:,}")
    console.print(reasons)
    counties = Table(title="by county")
    sampled = any(g.counts.not_sampled for g in t.by_county)
    for col in ("county", "received", "valid", "invalid", "review", "duplicates", "pending",
                *(("not sampled",) if sampled else ()), "valid %"):
        counties.add_column(col, justify="left" if col == "county" else "right")
    for g in t.by_county:
        k = g.counts
        pct = 100.0 * k.valid / k.verified if k.verified else 0.0
        counties.add_row(g.key, f"{k.received:,}", f"{k.valid:,}", f"{k.invalid:,}",
                         f"{k.review:,}", f"{k.duplicates:,}", f"{k.pending:,}",
                         *((f"{k.not_sampled:,}",) if sampled else ()), f"{pct:.1f}")
    console.print(counties)
    print_flags(t)
    if is_statutory(t):
        print_statutory(t)


def _columns_table(title: str, columns: Iterable[int], rows: Sequence[Sequence[str]]) -> Table:
    """A table of some of ``COUNTY_COLUMNS`` (by index) over ``rows``."""
    picked = list(columns)
    table = Table(title=title)
    for i in picked:
        col = COUNTY_COLUMNS[i]
        table.add_column(col, justify="left" if col in ("county", "closed", "state") else "right")
    for row in rows:
        table.add_row(*(escape(row[i]) for i in picked))
    return table


def print_statutory(t: tally_pb2.Tally) -> None:
    """The "Statutory process" section: per-county sample and projection, then the statewide
    raw count, projection against the bands, full count and outcome."""
    s = t.statutory
    console.print()
    console.print("[bold]Statutory process[/bold] (EC 9030-9031; projection by 2 CCR 20530-20532)")
    # A full-count petition has no samples or projections: its statewide lines say it all.
    if s.counties and method_of(t.method) is Method.RANDOM_SAMPLE:
        rows = [county_row(c) for c in s.counties]
        table = _columns_table("random sample and projection per county", range(len(COUNTY_COLUMNS)),
                               rows)
        natural = Measurement.get(console, console.options.update_width(10_000), table).maximum
        if natural <= console.width:
            console.print(table)
        else:       # too wide for the terminal: the sample, then the projection
            console.print(_columns_table("random sample per county", (0, 1, 2, 3, 4, 5, 6, 13), rows))
            console.print(_columns_table("projection per county (2 CCR 20530-20532)",
                                         (0, 7, 8, 9, 10, 11, 12), rows))
    for label, text in statewide_facts(t):
        if label == "outcome":
            name = outcome_name(s.outcome)
            style = OUTCOME_STYLE.get(name, "bold")
            console.print(f"{label}: [{style}]{escape(text)}[/{style}]")
        else:
            console.print(f"{label}: {escape(text)}")


def print_flags(t: tally_pb2.Tally) -> None:
    tested = sum(1 for x in t.circulators if x.tested)
    if not t.flagged_circulators:
        console.print(f"no circulator flagged ({tested} of {len(t.circulators)} circulator-county "
                      "pairs tested)")
        return
    flags = Table(title=f"flagged circulators ({len(t.flagged_circulators)} of {tested} tested): "
                        "suspect-invalid rate far above the rest of the county")
    for col in ("county", "circulator", "decided", "suspect", "rate", "rest of county", "p", "q (BH)"):
        flags.add_column(col, justify="left" if col in ("county", "circulator") else "right")
    for x in t.flagged_circulators:
        flags.add_row(x.county, x.circulator_id, f"{x.decided:,}", f"{x.suspect:,}",
                      f"{100 * x.rate:.1f} %", f"{100 * x.others_rate:.1f} %", f"{x.p_value:.2g}",
                      f"{x.q_value:.2g}")
    console.print(flags)
    console.print(f"[dim]{t.flag_policy.test}; suspect reasons "
                  f"{', '.join(t.flag_policy.suspect_reasons)}; at least {t.flag_policy.min_decided} "
                  f"decided, {t.flag_policy.min_ratio:g}x the rest, FDR {t.flag_policy.fdr:g}[/dim]")


async def tally_cmd(ep: Endpoints, args: argparse.Namespace) -> int:
    async with ep.channel(ep.tally) as ch:
        t = await client.get_tally(ch, args.petition)
    if args.json:
        console.print_json(json.dumps(tally_dict(t)))
    else:
        print_tally(t)
    return 0


async def watch_cmd(ep: Endpoints, args: argparse.Namespace) -> int:
    from sigverify_cli.watch import watch

    async with ep.channel(ep.tally) as ch:
        code = await watch(ch, console, args.petition, once=args.once,
                           interval_ms=args.interval_ms, timeout=args.for_seconds)
    if code:
        err.print("the tally service ended the stream")
    return code


def watch_main(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(watch_cmd(Endpoints.discover(getattr(args, "token", None)), args))
    except KeyboardInterrupt:
        return 0


async def report_cmd(ep: Endpoints, args: argparse.Namespace) -> int:
    from sigverify_cli.report import write_report

    async with ep.channel(ep.tally) as ch:
        t = await client.get_tally(ch, args.petition)
    files = write_report(t, Path(args.out))
    console.print(f"report for {t.petition_id} ({len(t.by_county)} counties, "
                  f"{len(t.flagged_circulators)} circulators flagged): {files.counties_csv}, "
                  f"{files.circulators_csv}, {files.html}")
    return 0


class NothingReceived(CliError):
    """``wait`` for a petition that has received no signature: it would wait in vain."""


#: The exit status of ``wait`` when the petition has received nothing (1 is a refused call,
#: 2 a timeout, 5 tally unreachable: waiting longer would not help either, but a script
#: should tell them apart).
EXIT_NOTHING_RECEIVED = 3


async def wait_done(ep: Endpoints, petition: str, timeout: float) -> tally_pb2.Tally:
    """Until every signature sent to verification has a final status (signatures outside a
    random sample are not pending: they are never verified unless a full count is ordered)."""
    end = time.monotonic() + timeout
    # Each tally is counted afresh from the petition's rows: asked every half second for a
    # state's filing, it would take a core of its own. The pause grows to WAIT_POLL_MAX.
    pause = 0.5
    async with ep.channel(ep.tally) as ch:
        with _progress() as prog:
            task = prog.add_task(f"verifying {petition}", total=None)
            while True:
                t = await client.get_tally(ch, petition)
                prog.update(task, completed=t.total.verified,
                            total=(t.total.received - t.total.not_sampled) or None)
                if t.total.received == 0:
                    # The received count is intake's, committed with each batch: nothing
                    # is on its way that a longer wait would see.
                    raise NothingReceived(
                        f"nothing to wait for: petition {petition} has received no signature "
                        f"({t.rows_rejected:,} rows rejected at intake); submit its batches "
                        "first")
                if t.total.pending == 0:
                    return t
                if time.monotonic() > end:
                    raise CliError(f"timed out after {timeout:.0f}s: {t.total.pending:,} of "
                                   f"{t.total.received:,} signatures still pending")
                await asyncio.sleep(pause)
                pause = min(pause * 1.25, WAIT_POLL_MAX)


def undecided_text(t: tally_pb2.Tally) -> str:
    """Where an undecided petition stands, for a timeout message."""
    if not is_statutory(t):
        return (f"the tally carries no statutory process for {t.petition_id} (method "
                f"{method_of(t.method).value})")
    s = t.statutory
    still_open = sum(1 for c in s.counties if not c.closed)
    return (f"outcome {outcome_name(s.outcome)} at stage {s.stage or '-'!r}; "
            f"{still_open:,} of {len(s.counties):,} counties still open, "
            f"{t.total.pending:,} signatures pending, {t.total.review:,} in review")


async def wait_decision(ep: Endpoints, petition: str, timeout: float, poll: float = 1.0
                        ) -> tally_pb2.Tally:
    """Until the petition's statutory outcome is FAILS or QUALIFIES."""
    end = time.monotonic() + timeout
    async with ep.channel(ep.tally) as ch:
        with _progress() as prog:
            task = prog.add_task(f"deciding {petition}", total=None)
            while True:
                t = await client.get_tally(ch, petition)
                prog.update(task, completed=t.total.verified,
                            total=(t.total.received - t.total.not_sampled) or None)
                if t.statutory.outcome in FINAL_OUTCOMES:
                    return t
                if time.monotonic() > end:
                    raise CliError(f"timed out after {timeout:.0f}s without a decision: "
                                   f"{undecided_text(t)}")
                await asyncio.sleep(poll)


def decision_text(t: tally_pb2.Tally) -> str:
    s = t.statutory
    text = f"petition {t.petition_id}: {outcome_name(s.outcome)}"
    if s.decided_by or s.decided_at:
        text += (f" (decided by the {s.decided_by or '?'}"
                 + (f" at {s.decided_at}" if s.decided_at else "") + ")")
    if s.stopped_at_requirement:
        text += "; stopped at the requirement (AB 2219)"
    return text


async def wait_cmd(ep: Endpoints, args: argparse.Namespace) -> int:
    if args.decision:
        t = await wait_decision(ep, args.petition, args.timeout)
        style = OUTCOME_STYLE.get(outcome_name(t.statutory.outcome), "bold")
        console.print(f"[{style}]{escape(decision_text(t))}[/{style}]")
        if t.statutory.explanation:
            console.print(escape(t.statutory.explanation))
        return 0
    try:
        t = await wait_done(ep, args.petition, args.timeout)
    except NothingReceived as exc:
        _error(str(exc))
        return EXIT_NOTHING_RECEIVED
    c = t.total
    if c.not_sampled:
        console.print(f"all {c.received - c.not_sampled:,} signatures of {args.petition} sent to "
                      f"verification verified: {c.valid:,} valid, {c.invalid:,} invalid, "
                      f"{c.review:,} in review; {c.not_sampled:,} of {c.received:,} received "
                      "not sampled")
        return 0
    console.print(f"all {c.received:,} signatures of {args.petition} verified: "
                  f"{c.valid:,} valid, {c.invalid:,} invalid, {c.review:,} "
                  "in review")
    return 0


def enum_text(convert: Callable[[int], Any], value: int) -> str:
    """A status or reason by its name ("" when unset, as for a signature never verified)."""
    return "" if value == 0 else str(convert(value).value)


def export_row(r: tally_pb2.SignatureResult) -> tuple[Any, ...]:
    """One results-export row; a status or reason left unset (a NOT_SAMPLED signature's reason
    may be) is written empty."""
    return (r.signature_id, r.batch_id, r.county, r.line, enum_text(status_from_pb, r.status),
            enum_text(reason_from_pb, r.reason), r.voter_id, f"{r.score:.2f}")


async def export_results(ep: Endpoints, petition: str, out: Path) -> int:
    n = 0
    async with ep.channel(ep.tally) as ch:
        stub = tally_pb2_grpc.TallyServiceStub(ch)
        tmp = out.with_name(out.name + ".part")
        try:
            with tmp.open("w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                w.writerow(EXPORT_COLUMNS)
                async for r in stub.ListResults(
                        tally_pb2.ListResultsRequest(petition_id=petition), timeout=600):
                    w.writerow(export_row(r))
                    n += 1
            tmp.replace(out)
        finally:
            # A refused or broken export leaves no partial file behind (nor an earlier one
            # replaced): only a complete export is written to ``out``.
            tmp.unlink(missing_ok=True)
    return n


async def export_cmd(ep: Endpoints, args: argparse.Namespace) -> int:
    n = await export_results(ep, args.petition, Path(args.out))
    console.print(f"{n:,} signature results written to {args.out}")
    return 0


def print_candidates(candidates: Sequence[common_pb2.Candidate]) -> None:
    """Each candidate's waterfall (best first) and the legend; a decision made before the
    Fellegi-Sunter model has per-field scores only, shown as a table."""
    if not candidates:
        console.print("no candidate came near")
        return
    if not evidence.has_evidence(candidates):
        console.print(evidence.scores_table(candidates))
        return
    for rank, c in enumerate(candidates, 1):
        for line in evidence.waterfall_lines(c, rank):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
    console.print(evidence.LEGEND, markup=False, highlight=False)


async def explain_cmd(ep: Endpoints, args: argparse.Namespace) -> int:
    async with ep.channel(ep.matching) as mch:
        x = await matching_pb2_grpc.MatchingServiceStub(mch).ExplainSignature(
            matching_pb2.ExplainSignatureRequest(signature_id=args.signature_id), timeout=30)
    final = None
    async with ep.channel(ep.tally) as tch:
        try:
            final = await tally_pb2_grpc.TallyServiceStub(tch).GetResult(
                tally_pb2.GetResultRequest(signature_id=args.signature_id), timeout=30)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
    if args.json:
        console.print_json(json.dumps({
            "signature_id": x.signature_id, "petition_id": x.petition_id,
            "status": status_from_pb(final.status).value if final else None,
            "final_reason": reason_from_pb(final.reason).value if final else None,
            "decision": decision_from_pb(x.decision).value, "reason": reason_from_pb(x.reason).value,
            "voter_id": x.voter_id, "score": round(x.score, 2), "roll_version": x.roll_version,
            "model_id": x.model_id, "prior_weight": round(x.prior_weight, 2),
            "decided_at": x.decided_at,
            "thresholds": {"accept": x.accept_threshold, "review": x.review_threshold},
            "why": evidence.why(x),
            "candidates": [evidence.candidate_dict(c) for c in x.candidates],
        }))
        return 0
    console.print(f"signature {x.signature_id} (petition {x.petition_id})")
    if final is not None:
        console.print(f"final status: [bold]{status_from_pb(final.status).value}[/bold] "
                      f"{reason_from_pb(final.reason).value}")
    else:
        console.print("final status: not verified yet")
    model = f"model {x.model_id}, " if x.model_id else ""
    console.print(f"matcher: {decision_from_pb(x.decision).value}, reason "
                  f"{reason_from_pb(x.reason).value}, voter {x.voter_id or '-'}, probability "
                  f"{x.score:.2f} % (accept at {x.accept_threshold:g}, review from "
                  f"{x.review_threshold:g}); {model}roll version {x.roll_version}, decided "
                  f"{x.decided_at}")
    console.print(f"why: {evidence.why(x)}", markup=False, highlight=False,
                  soft_wrap=True)
    print_candidates(x.candidates)
    return 0


# -- the match model ---------------------------------------------------------------------------

async def model_cmd(ep: Endpoints, args: argparse.Namespace) -> int:
    async with ep.channel(ep.matching) as ch:
        stub = matching_pb2_grpc.MatchingServiceStub(ch)
        if args.action == "train":
            if args.max_signatures < 0:
                raise CliError("--max-signatures must not be negative")
            with err.status("learning the match model (u from random pairs, m by EM) ..."):
                m = await stub.TrainModel(matching_pb2.TrainModelRequest(
                    max_signatures=args.max_signatures), timeout=args.timeout)
            console.print(f"model {m.model_id} learned for roll version {m.roll_version} from "
                          f"{_n(m.signatures, 'signature')} ({_n(m.em_iterations, 'EM iteration')}, "
                          f"{'converged' if m.em_converged else 'not converged'}); the "
                          "matchers decide with it from their next batch (within about 5 s)")
            return 0
        if args.model < 0:
            raise CliError("--model must not be negative")
        m = await stub.GetModel(matching_pb2.GetModelRequest(model_id=args.model), timeout=30)
    if args.json:
        console.print_json(json.dumps(evidence.model_dict(m)))
        return 0
    for line in evidence.model_heading(m, in_force=args.model == 0):
        console.print(line, markup=False, highlight=False)
    console.print(evidence.model_table(m))
    for note in evidence.MODEL_NOTES:
        console.print(note, markup=False, highlight=False)
    return 0


# -- tokens, audit -----------------------------------------------------------------------------

EXPIRES_HELP = ("when the token expires: a lifetime (90d, 12h, 2w, 30m), an ISO date (the end "
                "of that day, UTC) or timestamp, or 'never' (admin tokens only). Default: clerk "
                "and reviewer 90d, ops 180d, admin 30d; other roles than admin at most 366d")

def _expires_text(expires_at: str) -> str:
    """A token's expiry for people: the UTC time, or "never"."""
    return instant(datetime.fromisoformat(expires_at)) if expires_at else "never"


def _token_state(t: access_pb2.TokenInfo, now: datetime | None = None) -> str:
    """``token list``'s expiry column (UTC): when it expires, "never", "expired ..." or,
    for a revoked token, "revoked ..."."""
    if t.revoked_at:
        return f"revoked {t.revoked_at[:10]}"
    if not t.expires_at:
        return "never"
    at = datetime.fromisoformat(t.expires_at)
    text = at.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    return f"expired {text}" if at <= (now or datetime.now(UTC)) else text


def _token_row(t: access_pb2.TokenInfo) -> tuple[str, ...]:
    role = access_pb2.Role.Name(t.role).removeprefix("ROLE_").lower()
    return (t.token_id, role, t.county or "-", t.label, t.created_at[:10], t.created_by,
            _token_state(t))


def expiry_request(text: str | None) -> dict[str, Any]:
    """``--expires`` as CreateTokenRequest fields (none: the role's default)."""
    if text is None:
        return {}
    try:
        spec = parse_expiry(text)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if isinstance(spec, timedelta):
        seconds = int(spec.total_seconds())
        if seconds <= 0:
            raise CliError(f"--expires {text!r}: the lifetime must be greater than 0")
        return {"expires_in_seconds": seconds}
    if isinstance(spec, datetime):
        return {"expires_at": spec.isoformat()}
    return {"never_expires": True}


async def token_cmd(ep: Endpoints, args: argparse.Namespace) -> int:
    async with ep.channel(ep.intake) as ch:
        stub = access_pb2_grpc.AccessServiceStub(ch)
        if args.action == "create":
            r = await stub.CreateToken(access_pb2.CreateTokenRequest(
                role=access_pb2.Role.Value(f"ROLE_{args.role.upper()}"), county=args.county,
                label=args.label, **expiry_request(args.expires)), timeout=30)
            err.print(f"token {r.info.token_id} ({args.role}"
                      f"{', ' + r.info.county if r.info.county else ''}; expires "
                      f"{_expires_text(r.info.expires_at)}); it is shown this once:")
            print(r.token)
            return 0
        if args.action == "revoke":
            info = await stub.RevokeToken(access_pb2.RevokeTokenRequest(token_id=args.token_id),
                                          timeout=30)
            console.print(f"token {info.token_id} revoked at {info.revoked_at}")
            return 0
        listed = await stub.ListTokens(access_pb2.ListTokensRequest(include_revoked=args.all),
                                       timeout=30)
    t = Table(title="tokens")
    for col in ("id", "role", "county", "label", "created", "by", "expires (UTC)"):
        t.add_column(col, no_wrap=col in ("id", "created", "expires (UTC)"),
                     overflow="fold" if col == "by" else "ellipsis")
    for info in listed.tokens:
        t.add_row(*_token_row(info))
    console.print(t)
    return 0


async def token_bootstrap(args: argparse.Namespace) -> int:
    from sigverify_cli.credentials import bootstrap_admin

    url = os.environ.get("DATABASE_URL", "")
    if not url:
        raise CliError("token bootstrap writes to the database directly: set DATABASE_URL")
    try:
        expires = parse_expiry(args.expires) if args.expires is not None else None
    except ValueError as exc:
        raise CliError(str(exc)) from None
    secret, row = await bootstrap_admin(url, "", "system:bootstrap", "bootstrap admin", expires)
    assert row is not None
    err.print(f"admin token {row.token_id} created (expires "
              f"{instant(row.expires_at) if row.expires_at else 'never'}); it is shown this once:")
    print(secret)
    return 0


async def audit_cmd(ep: Endpoints, args: argparse.Namespace) -> int:
    async with ep.channel(ep.intake) as ch:
        r = await access_pb2_grpc.AccessServiceStub(ch).VerifyAuditLog(
            access_pb2.VerifyAuditLogRequest(), timeout=600)
    if r.ok:
        console.print(f"audit log OK: {r.entries:,} entries, chain intact; head {r.head_hash}")
        return 0
    console.print(f"[red]audit log BROKEN[/red] at entry {r.first_broken_id} (after {r.entries:,} "
                  f"good entries): {r.problem}")
    return 1


async def check_cmd(ep: Endpoints, args: argparse.Namespace) -> int:
    """Prints each delivery invariant of the petition; 1 when one is violated."""
    async with ep.channel(ep.tally) as ch:
        r = await tally_pb2_grpc.TallyServiceStub(ch).CheckInvariants(
            tally_pb2.CheckInvariantsRequest(petition_id=args.petition), timeout=600)
    console.print(f"delivery invariants of petition {escape(r.petition_id)} (as of {r.as_of})")
    for c in r.checks:
        result = "[green]ok[/green]    " if c.ok else "[red]FAILED[/red]"
        examples = f"; e.g. {escape(', '.join(c.examples[:3]))}" if c.examples else ""
        console.print(f"  {result} {c.name:<24} {c.violations:>7,}  {escape(c.description)}"
                      f"{examples}", soft_wrap=True)
    failed = [c.name for c in r.checks if not c.ok]
    if failed:
        console.print(f"[red]{len(failed)} invariant(s) violated:[/red] {', '.join(failed)}")
        return 1
    console.print(f"every invariant holds ({len(r.checks)} checks)")
    return 0


# -- review ----------------------------------------------------------------------------------

REVIEW_STATES = {1: "pending", 2: "claimed", 3: "resolved"}


def print_review_item(item: review_pb2.ReviewItem, full: bool = True, best: bool = False,
                      why: str = "") -> None:
    """A review item: its heading; ``why``: why the matcher decided as it did; ``full``: the
    printed signature and every candidate's waterfall; ``best``: one line on the best
    candidate."""
    p = item.printed
    state = REVIEW_STATES.get(item.state, "?")
    who = f" by {item.claimed_by}" if state == "claimed" else ""
    if state == "resolved":
        who = (f" by {item.resolved_by}: {reason_from_pb(item.reason).value}"
               + (f" as voter {item.voter_id}" if item.voter_id else ""))
    console.print(f"[bold]{item.signature_id}[/bold] {escape(item.county)} batch {item.batch_id} "
                  f"line {item.line} (circulator {escape(item.circulator_id or '-')}), "
                  f"probability {item.score:.2f} %, {state}{escape(who)}")
    if why:
        console.print(f"  why: {why}", markup=False, highlight=False, soft_wrap=True)
    if best and item.candidates:
        c = item.candidates[0]
        weights = (f", match weight {c.match_weight:+.2f} bits, total "
                   f"{evidence.total_of(c):+.2f} bits" if c.evidence else "")
        console.print(f"  best candidate: voter {c.voter_id} ({c.county or '-'}), probability "
                      f"{c.score:.2f} %{weights}", markup=False, highlight=False)
    if not full:
        return
    console.print(f"  printed: {p.first_name} {p.middle_name} {p.last_name}, {p.street} "
                  f"{p.unit}, {p.city} {p.zip}; signed {p.signed_on or '-'}", markup=False,
                  highlight=False)
    print_candidates(item.candidates)
    if item.note:
        console.print(f"  note: {item.note}", markup=False, highlight=False)


def review_dict(item: review_pb2.ReviewItem, why: str | None = None) -> dict[str, Any]:
    """A review item for ``--json`` (its candidates with their waterfalls; ``why``, when
    given: why the matcher decided as it did)."""
    p = item.printed
    return ({"why": why} if why is not None else {}) | {
        "signature_id": item.signature_id, "petition_id": item.petition_id,
        "batch_id": item.batch_id, "county": item.county, "line": item.line,
        "circulator_id": item.circulator_id, "state": REVIEW_STATES.get(item.state, "?"),
        "score": round(item.score, 2), "claimed_by": item.claimed_by,
        "claimed_at": item.claimed_at, "resolved_by": item.resolved_by,
        "resolved_at": item.resolved_at, "voter_id": item.voter_id,
        "reason": reason_from_pb(item.reason).value if item.reason else None, "note": item.note,
        "printed": {f: getattr(p, f) for f in ("first_name", "middle_name", "last_name",
                                                "street", "unit", "city", "zip", "county",
                                                "signed_on", "birth_date")},
        "candidates": [evidence.candidate_dict(c) for c in item.candidates],
    }


async def review_cmd(ep: Endpoints, args: argparse.Namespace) -> int:
    if args.action == "resolve" and args.reviewer is not None:
        raise CliError("review resolve takes no --reviewer: the reviewer is the holder of the "
                       "token the call carries (--token, else $SIGVERIFY_TOKEN)")
    async with ep.channel(ep.matching) as ch:
        stub = review_pb2_grpc.ReviewServiceStub(ch)
        if args.action == "list":
            r = await stub.ListPending(review_pb2.ListPendingRequest(
                petition_id=args.petition, county=args.county, limit=args.limit,
                include_claimed=args.include_claimed), timeout=30)
            if args.json:
                console.print_json(json.dumps({"total_pending": r.total_pending,
                                               "items": [review_dict(i) for i in r.items]}))
                return 0
            console.print(f"{r.total_pending:,} signature(s) awaiting review; showing "
                          f"{len(r.items)}")
            for item in r.items:
                print_review_item(item, full=False, best=True)
            return 0
        if args.action == "show":
            item = await stub.GetReview(
                review_pb2.GetReviewRequest(signature_id=args.signature_id), timeout=30)
            x = await matching_pb2_grpc.MatchingServiceStub(ch).ExplainSignature(
                matching_pb2.ExplainSignatureRequest(signature_id=item.signature_id),
                timeout=30)
            if args.json:
                console.print_json(json.dumps(review_dict(item, evidence.why(x))))
            else:
                print_review_item(item, why=evidence.why(x))
            return 0
        if args.action == "claim":
            print_review_item(await stub.ClaimReview(review_pb2.ClaimReviewRequest(
                signature_id=args.signature_id, reviewer=args.reviewer), timeout=30), full=False)
            return 0
        if bool(args.voter) == bool(args.invalid):
            raise CliError("resolve with exactly one of --voter VOTER_ID or --invalid REASON")
        req = review_pb2.ResolveReviewRequest(signature_id=args.signature_id, note=args.note)
        if args.voter:
            req.voter_id = args.voter
        else:
            req.invalid_reason = reason_to_pb(Reason(args.invalid))
        print_review_item(await stub.ResolveReview(req, timeout=30), full=False)
    return 0


# -- entry point -------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """Every command and subcommand takes ``--token`` (its subparsers are of this class too)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument("--token", default=argparse.SUPPRESS,
                          help="bearer token (default: $SIGVERIFY_TOKEN, else the local stack's "
                               "admin token)")


#: The largest id or count a request carries (the protos' int64) ...
MAX_INT64 = (1 << 63) - 1
#: ... and the largest an int32 field carries (review list's limit, watch's interval).
MAX_INT32 = (1 << 31) - 1


def _whole(what: str, least: int, most: int = MAX_INT64, *,
           identifier: bool = False) -> Callable[[str], int]:
    """An argparse type: a whole number from ``least`` to ``most`` (by default the protos'
    int64), else one plain line naming ``what`` (argparse prints it with the usage and exits
    with status 2). ``identifier``: ``what`` names a thing (a version, a model id), so a number
    too large for it is "no such" one rather than "too many"."""
    rule = "a positive number" if least > 0 else "a number, 0 or more"

    def parse(text: str) -> int:
        t = text.strip()
        try:
            n = int(t) if t.lstrip("+-").isdigit() and t.isascii() else None
        except ValueError:  # over the int conversion's digit limit
            n = None
        if n is None or n < least:
            raise argparse.ArgumentTypeError(f"{what} must be {rule}, not {_cut(text)}")
        if n > most:
            if identifier:
                raise argparse.ArgumentTypeError(f"{what} {_cut(text)} is too large: there is "
                                                 f"no such {what} (at most {most:,})")
            raise argparse.ArgumentTypeError(f"{what} {_cut(text)} is too large (at most "
                                             f"{most:,})")
        return n
    return parse


#: The longest time an option in seconds may give (a timeout, watch's --for): 31 days. A
#: deadline far beyond it overflows in gRPC, which then ends the call at once.
MAX_SECONDS = 31 * 86_400


def _seconds(what: str, *, zero: bool, most: float = MAX_SECONDS) -> Callable[[str], float]:
    """An argparse type: a finite number of seconds, more than 0 (0 too when ``zero``: for a
    timeout whose 0 means something) and at most ``most``; else one plain line naming
    ``what`` (argparse prints it with the usage and exits with status 2), as ``_whole``."""
    rule = "a number of seconds, 0 or more" if zero else "a positive number of seconds"

    def parse(text: str) -> float:
        t = text.strip()
        try:
            x = float(t) if t.isascii() else math.nan
        except ValueError:
            x = math.nan
        if not math.isfinite(x) and x > 0:
            x = most + 1  # inf, 1e999: too large, not "not a number"
        if math.isnan(x) or x < 0 or (x == 0 and not zero):
            raise argparse.ArgumentTypeError(f"{what} must be {rule}, not {_cut(text)}")
        if x > most:
            raise argparse.ArgumentTypeError(f"{what} {_cut(text)} is too large (at most "
                                             f"{most:,.0f} seconds, {most / 86_400:g} days)")
        return x
    return parse


def _cut(text: str, limit: int = 30) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sigverify", description="Petition signature verification")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("stack", help="start, stop or show the local stack")
    s.add_argument("action", choices=("up", "down", "status", "restart"))
    s.add_argument("service", nargs="?", default="",
                   help="restart: the service to stop and start again (intake, matching, "
                        "dedupe, tally; matching-2 for a second replica)")

    r = sub.add_parser("roll", help="voter roll administration")
    rs = r.add_subparsers(dest="action", required=True)
    rl = rs.add_parser("load", help="load a voter roll CSV as the new roll version (admins)")
    rl.add_argument("file")
    rl.add_argument("--max-rejected", default="1%", metavar="N|P%",
                    help="refuse the file when more rows than this are rejected: a count (100) "
                         "or a percentage of its rows (default 1%%)")
    rl.add_argument("--timeout", type=_seconds("--timeout", zero=True), default=900.0,
                    metavar="S",
                    help="how long to wait for every matcher replica to build the version's "
                         "index before failing without activating it (default 900; 0: the "
                         "service's ROLL_ACTIVATION_TIMEOUT_SECONDS)")
    rli = rs.add_parser("list", help="roll versions, their states, and which matcher serves which")
    rli.add_argument("--json", action="store_true")
    rli.add_argument("--all", action="store_true",
                     help=f"every version (default: the newest {ROLL_LIST_ROWS})")
    ra = rs.add_parser("activate", help="make a kept (ready) roll version active again")
    ra.add_argument("version", type=_whole("version", 1, identifier=True),
                    help="the version to activate, as 'sigverify roll list' shows it")
    rr = rs.add_parser("rollback", help="make the previous roll version active again")
    for q in (ra, rr):
        q.add_argument("--timeout", type=_seconds("--timeout", zero=True), default=900.0,
                       metavar="S", help="how long to wait for the matchers to build its index "
                                         "(default 900; 0: the service's "
                                         "ROLL_ACTIVATION_TIMEOUT_SECONDS)")

    pe = sub.add_parser("petition", help="petitions")
    ps = pe.add_subparsers(dest="action", required=True)
    pc = ps.add_parser("create", help="create a petition")
    pc.add_argument("--id", required=True)
    pc.add_argument("--title", default="")
    pc.add_argument("--required", type=_whole("--required", 1), required=True, metavar="N",
                    help="valid signatures required")
    pc.add_argument("--deadline", required=True, help="YYYY-MM-DD")
    pc.add_argument("--duplicate-policy", choices=[p.value for p in DuplicatePolicy],
                    default=DuplicatePolicy.KEEP_FIRST.value,
                    help="keep-first: the earliest signature of a voter counts; invalidate-all: none")
    pc.add_argument("--accept-online", action="store_true",
                    help="online signatures can count (California: they cannot)")
    _method_options(pc, default=Method.FULL_COUNT.value)
    pc.add_argument("--counties", default="", metavar="A,B,...",
                    help="the counties expected to file, comma-separated (California: all 58); "
                         "the raw count is complete only when each has closed, and other "
                         "counties' batches are refused (default: whichever send batches)")
    pc.add_argument("--filing-closes", default="", metavar="ISO",
                    help="every open county's filing closes then (a date: its end, UTC); default: "
                         "counties close only by 'sigverify county close'")
    psm = ps.add_parser("set-method", help="change a petition's verification method (admins; "
                        "until a county's filing closes)")
    psm.add_argument("--petition", required=True)
    _method_options(psm, default=None)
    psm.add_argument("--reason", required=True, help="why (kept in the audit log)")
    psh = ps.add_parser("show", help="a petition's settings and its counties' filings")
    psh.add_argument("--petition", required=True)

    co = sub.add_parser("county", help="county filings: close (draws the random sample), list")
    cos = co.add_subparsers(dest="action", required=True)
    coc = cos.add_parser("close", help="close a county's filing; a random-sample petition draws "
                         "the county's sample")
    coc.add_argument("--petition", required=True)
    coc.add_argument("--county", required=True)
    coc.add_argument("--seed", default="", help="the draw's seed (default: 128 random bits); a "
                     "public seed lets observers check the draw")
    col = cos.add_parser("list", help="every county's raw count, state and sample")
    col.add_argument("--petition", required=True)

    sa = sub.add_parser("sample", help="random samples")
    sas = sa.add_subparsers(dest="action", required=True)
    sash = sas.add_parser("show", help="a county's sample, checked by re-drawing it from its seed")
    sash.add_argument("--petition", required=True)
    sash.add_argument("--county", required=True)
    sash.add_argument("--all", action="store_true", help="list the signatures not sampled too")
    sash.add_argument("--out", default="", metavar="FILE.csv",
                      help="write the rows as CSV instead of printing them")

    sb = sub.add_parser(
        "submit", help="submit batch CSV file(s) of one county",
        epilog=f"exit status: 0 every row of every file accepted; {EXIT_ROWS_REJECTED} the "
               "file(s) received but some rows rejected (listed with each receipt); 1 a call "
               "refused or failed; 2 a file or option that cannot be sent; "
               f"{client.EXIT_UNREACHABLE} intake unreachable")
    sb.add_argument("files", nargs="+")
    sb.add_argument("--petition", required=True)
    sb.add_argument("--county", required=True)
    sb.add_argument("--key", default="", help="client batch key (default: the content decides); "
                    "one file only: a key names one batch")

    b = sub.add_parser("batch", help="batches")
    bs = b.add_subparsers(dest="action", required=True)
    bsh = bs.add_parser("show", help="show a batch receipt")
    bsh.add_argument("batch_id")
    bsh.add_argument("--rejections", action="store_true",
                     help="list every rejected row (a receipt shows the first ones)")

    w = sub.add_parser("wait", help="wait until every received signature is verified")
    w.add_argument("--petition", required=True)
    w.add_argument("--timeout", type=_seconds("--timeout", zero=True), default=600.0,
                   metavar="S", help="give up after S seconds (default 600; 0: look once)")
    w.add_argument("--decision", action="store_true",
                   help="wait until the petition FAILS or QUALIFIES instead")

    t = sub.add_parser("tally", help="show a petition's tally")
    t.add_argument("--petition", required=True)
    t.add_argument("--json", action="store_true")

    wa = sub.add_parser("watch", help="a live view of a petition's tally")
    wa.add_argument("--petition", required=True)
    wa.add_argument("--once", action="store_true", help="print one frame and exit")
    wa.add_argument("--interval-ms", type=_whole("--interval-ms", 1, MAX_INT32), default=1000,
                    metavar="MS", help="at most one update per MS milliseconds (default 1000; "
                                       "the service sends none faster than 200)")
    wa.add_argument("--for", dest="for_seconds", type=_seconds("--for", zero=False),
                    default=86_400.0, metavar="S",
                    help="stop watching after this many seconds")

    rp = sub.add_parser("report", help="county report: counties.csv, circulators.csv, report.html")
    rp.add_argument("--petition", required=True)
    rp.add_argument("--out", required=True, help="directory to write the files to")

    re_ = sub.add_parser("results", help="per-signature results")
    rss = re_.add_subparsers(dest="action", required=True)
    rex = rss.add_parser("export", help="export every signature's result as CSV")
    rex.add_argument("--petition", required=True)
    rex.add_argument("--out", required=True)

    rv = sub.add_parser("review", help="the human review queue")
    rvs = rv.add_subparsers(dest="action", required=True)
    rl_ = rvs.add_parser("list", help="signatures awaiting review")
    rl_.add_argument("--petition", required=True)
    rl_.add_argument("--county", default="")
    rl_.add_argument("--limit", type=_whole("--limit", 1, MAX_INT32), default=50, metavar="N",
                     help="list at most N (default 50)")
    rl_.add_argument("--include-claimed", action="store_true")
    rl_.add_argument("--json", action="store_true")
    for verb in ("show", "claim", "resolve"):
        vp = rvs.add_parser(verb, help=f"{verb} one signature's review")
        vp.add_argument("signature_id")
        if verb == "show":
            vp.add_argument("--json", action="store_true")
        if verb != "resolve":
            vp.add_argument("--reviewer", default=os.environ.get("USER", ""),
                            help="your name (a token's identity takes precedence)")
        if verb == "resolve":
            # Refused when given (it was taken and ignored): the token's holder resolves.
            vp.add_argument("--reviewer", default=None, help=argparse.SUPPRESS)
            vp.add_argument("--voter", default="", help="the signer is this voter")
            vp.add_argument("--invalid", default="",
                            choices=sorted(r.value for r in REVIEW_REJECTIONS),
                            help="the signature is invalid for this reason")
            vp.add_argument("--note", default="")

    ex = sub.add_parser("explain", help="why a signature was decided as it was: each "
                        "candidate's probability and its evidence, field by field")
    ex.add_argument("signature_id")
    ex.add_argument("--json", action="store_true")

    mo = sub.add_parser("model", help="the match model (Fellegi-Sunter): show it, or learn a "
                        "new one (admins)")
    mos = mo.add_subparsers(dest="action", required=True)
    mosh = mos.add_parser("show", help="the model in force: each field's levels with their m, u "
                          "and weight, the learned shares and priors")
    mosh.add_argument("--model", type=_whole("model id", 1, identifier=True), default=0, metavar="ID",
                      help="an earlier model by its id (default: the newest model of the active "
                           "roll version, the one deciding now)")
    mosh.add_argument("--json", action="store_true")
    motr = mos.add_parser("train", help="learn a new model for the active roll version from the "
                          "signatures received so far (admins); later decisions use it")
    motr.add_argument("--max-signatures", type=_whole("--max-signatures", 0), default=0,
                      metavar="N",
                      help="learn from at most the N most recent signatures (default: the "
                           "service's MATCH_TRAIN_MAX)")
    motr.add_argument("--timeout", type=_seconds("--timeout", zero=False), default=900.0,
                      metavar="S",
                      help="how long to wait for the model (default 900)")

    be = sub.add_parser("bench", help="measure throughput, memory and accuracy (make bench)")
    be.add_argument("--voters", type=_whole("--voters", 1), default=1_000_000)
    be.add_argument("--signatures", type=_whole("--signatures", 1), default=100_000)
    be.add_argument("--batch-size", type=_whole("--batch-size", 1), default=2_000)
    be.add_argument("--seed", type=_whole("--seed", 0), default=2017)
    be.add_argument("--skip-pipeline", action="store_true",
                    help="only the in-process figures: no stack, no roll load, no pipeline")
    be.add_argument("--skip-accuracy", action="store_true",
                    help="no hostile and FEBRL accuracy sets")
    be.add_argument("--skip-in-process", action="store_true",
                    help="no in-process matcher figures (the pipeline only)")
    be.add_argument("--one-petition", action="store_true",
                    help="the pipeline files one petition with one matcher replica (a "
                         "state-scale run), not three")

    tk = sub.add_parser("token", help="bearer tokens (admins)")
    tks = tk.add_subparsers(dest="action", required=True)
    tkc = tks.add_parser("create", help="create a token and print it (once: only its hash is kept)")
    tkc.add_argument("--role", required=True, choices=[r.value for r in Role])
    tkc.add_argument("--county", default="", help="the clerk's county (clerks only, required)")
    tkc.add_argument("--label", default="", help="whom the token is for")
    tkc.add_argument("--expires", default=None, metavar="WHEN", help=EXPIRES_HELP)
    tkl = tks.add_parser("list", help="list tokens in force (never their secrets)")
    tkl.add_argument("--all", action="store_true", help="include revoked and expired tokens")
    tkr = tks.add_parser("revoke", help="revoke a token")
    tkr.add_argument("token_id")
    tkb = tks.add_parser("bootstrap", help="create an admin token directly in the database "
                         "(DATABASE_URL): the first one of a new deployment")
    tkb.add_argument("--expires", default=None, metavar="WHEN", help=EXPIRES_HELP)

    au = sub.add_parser("audit", help="the audit log")
    aus = au.add_subparsers(dest="action", required=True)
    aus.add_parser("verify", help="check the audit log's hash chain (exit 1 when broken)")

    ck = sub.add_parser("check", help="check a petition's delivery invariants (exit 1 when one "
                        f"is violated, {client.EXIT_UNREACHABLE} when tally is unreachable)")
    ck.add_argument("--petition", required=True)

    d = sub.add_parser("demo", help="generate data, run it through the stack, compare with truth")
    d.add_argument("--voters", type=_whole("--voters", 1), default=100_000)
    d.add_argument("--signatures", type=_whole("--signatures", 1), default=20_000)
    d.add_argument("--seed", type=_whole("--seed", 0), default=7)
    d.add_argument("--keep-up", action="store_true", help="leave the stack running afterwards")
    d.add_argument("--bench", action="store_true", help="print throughput figures")
    d.add_argument("--no-sample", dest="sample", action="store_false",
                   help="skip the second run through California's random sample")
    from sigverify_cli.evaldata import add_parser as add_eval_data
    add_eval_data(sub)
    return p


def _method_options(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument("--method", choices=[m.value for m in Method], default=default,
                   required=default is None,
                   help="full-count: every signature verified; random-sample: California's "
                        "sample per county, projection, full count when in the band")
    p.add_argument("--sample-minimum", type=_whole("--sample-minimum", 1), default=None,
                   metavar="N",
                   help="every signature is verified in a county with N or fewer; otherwise "
                        "the sample is the greater of N and --sample-percent (default 500)")
    p.add_argument("--sample-percent", default="", metavar="P", help="decimal (default 3)")
    p.add_argument("--fail-below", default="", metavar="P",
                   help="the projection fails below P %% of the requirement (default 95)")
    p.add_argument("--qualify-above", default="", metavar="P",
                   help="the projection qualifies above P %% of the requirement (default 110)")


def _endpoint_command(fn: Callable[[Endpoints, argparse.Namespace], Coroutine[Any, Any, int]]
                      ) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return asyncio.run(fn(Endpoints.discover(getattr(args, "token", None)), args))
    return run


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "stack":
        return cmd_stack(args)
    if args.command == "bench":
        from sigverify_cli.bench import run_bench
        return run_bench(args)
    if args.command == "watch":
        return watch_main(args)
    if args.command == "token" and args.action == "bootstrap":
        return asyncio.run(token_bootstrap(args))
    if args.command == "demo":
        from sigverify_cli.demo import run_demo
        return run_demo(args)
    if args.command == "eval-data":
        from sigverify_cli.evaldata import run as run_eval_data
        return run_eval_data(args)
    table: dict[str, Callable[[Endpoints, argparse.Namespace], Coroutine[Any, Any, int]]] = {
        "roll": roll_cmd, "petition": petition_cmd, "county": county_cmd, "sample": sample_show,
        "submit": submit, "batch": batch_show, "wait": wait_cmd,
        "tally": tally_cmd, "results": export_cmd, "explain": explain_cmd,
        "review": review_cmd, "model": model_cmd,
        "token": token_cmd, "audit": audit_cmd, "report": report_cmd, "check": check_cmd,
    }
    return _endpoint_command(table[args.command])(args)


def _error(message: str) -> None:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)


def _check_sizes(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The generator's own rule for a synthetic data set (demo, bench, eval-data make synth
    or hostile), checked with the options: at most one signature for every two voters (a
    petition's signers are a share of the roll, duplicates and strangers included). It was
    found only inside the generator: 'unexpected ValueError', exit 70."""
    synthetic = args.command in ("demo", "bench") or (
        args.command == "eval-data" and getattr(args, "action", "") == "make"
        and getattr(args, "kind", "") in ("synth", "hostile"))
    voters, signatures = getattr(args, "voters", None), getattr(args, "signatures", None)
    if synthetic and voters is not None and signatures is not None and signatures > voters // 2:
        p.error(f"--signatures {signatures:,} is more than half of --voters {voters:,}: the "
                f"generator makes at most one signature for every two voters (at most "
                f"{voters // 2:,} here)")


def main(argv: list[str] | None = None) -> None:
    """Run one command. Whatever happens, it ends with an exit code and, on failure, one
    ``error:`` line; SIGVERIFY_DEBUG=1 adds the traceback of an unexpected exception."""
    p = parser()
    args = p.parse_args(argv)
    _check_sizes(p, args)
    client.OPENED.clear()  # the channels of this command only (tests run several in a process)
    try:
        code = dispatch(args)
    except client.ServiceUnreachable as exc:
        _error(str(exc))
        code = client.EXIT_UNREACHABLE
    except (CliError, stack.StackError, SigVerifyError) as exc:
        _error(str(exc))
        code = 2
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            _error(client.unreachable_text(exc.details() or ""))
            code = client.EXIT_UNREACHABLE
        else:
            _error(f"{exc.code().name}: {exc.details()}")
            code = 1
    except KeyboardInterrupt:
        code = 130
    except OSError as exc:
        # A file or folder the command reads or writes: missing, a directory, not writable.
        where = f"{exc.filename}: " if exc.filename else ""
        _error(f"{where}{exc.strerror or exc.__class__.__name__}")
        code = 1
    except Exception as exc:  # noqa: BLE001 - the last resort: one line, never a traceback
        if os.environ.get("SIGVERIFY_DEBUG") == "1":
            err.print_exception()
        _error(f"unexpected {exc.__class__.__name__}; run again with SIGVERIFY_DEBUG=1 for "
               "details")
        code = 70
    sys.exit(code)
