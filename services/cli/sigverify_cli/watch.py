"""``sigverify watch``: a live terminal view of a petition's tally, fed by ``WatchTally``.

Statewide: valid against the requirement and verified against received; per county: verified
against received and the county's valid signatures against the statewide requirement (its
contribution); for a random-sample petition (or any tally with a statutory stage), the
projected total against the bands and the outcome; and the flagged circulators. ``--once``
prints one frame and exits (for scripts and terminals that are not TTYs). Ctrl-C leaves the
view as it was and exits 0.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import grpc
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from sigverify.tally.v1 import tally_pb2, tally_pb2_grpc
from sigverify_cli.statutory import OUTCOME_STYLE, is_statutory, outcome_line, outcome_name

BAR = 36


def _bar(done: float, total: float, style: str = "green") -> ProgressBar:
    return ProgressBar(total=max(total, 1), completed=min(done, max(total, 1)), width=BAR,
                       complete_style=style, finished_style=style)


def _pct(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:5.1f} %" if whole else "    - "


def render(t: tally_pb2.Tally) -> RenderableType:
    c = t.total
    required = t.required_signatures
    days = t.days_to_deadline
    deadline = (f"{days} days to the deadline ({t.deadline})" if days >= 0
                else f"deadline passed {-days} days ago ({t.deadline})")
    head = Text.assemble((f"{t.title or t.petition_id}", "bold"), f"  ({t.petition_id})  ",
                         (deadline, "yellow" if 0 <= days <= 14 else ""), f"  as of {t.as_of[:19]}")

    state = Table.grid(padding=(0, 2))
    for _ in range(4):
        state.add_column()
    state.add_row("valid / required", _bar(c.valid, required),
                  f"{c.valid:,} / {required:,}", _pct(c.valid, required))
    state.add_row("verified / received", _bar(c.verified, c.received, "cyan"),
                  f"{c.verified:,} / {c.received:,}", _pct(c.verified, c.received))
    not_sampled = f"not sampled {c.not_sampled:,} · " if c.not_sampled else ""
    detail = Text(f"invalid {c.invalid:,} · review {c.review:,} · duplicates {c.duplicates:,} · "
                  f"pending {c.pending:,} · {not_sampled}unreadable rows rejected "
                  f"{t.rows_rejected:,}", style="dim")

    counties = Table(title="by county", expand=False)
    for col, just in (("county", "left"), ("verified / received", "left"), ("of", "right"),
                      ("valid", "right"), ("invalid", "right"), ("review", "right"),
                      ("valid %", "right"), ("share of required", "left")):
        counties.add_column(col, justify=just)  # type: ignore[arg-type]
    for g in t.by_county:
        k = g.counts
        counties.add_row(g.key, _bar(k.verified, k.received, "cyan"),
                         f"{k.verified:,}/{k.received:,}", f"{k.valid:,}", f"{k.invalid:,}",
                         f"{k.review:,}", _pct(k.valid, k.verified), _bar(k.valid, required))

    lines: list[RenderableType] = [state, detail]
    if is_statutory(t):
        lines.append(Text(outcome_line(t),
                          style=OUTCOME_STYLE.get(outcome_name(t.statutory.outcome), "")))
    statewide = Panel(Group(*lines), title="statewide", expand=False)
    parts: list[RenderableType] = [head, statewide, counties]
    if t.flagged_circulators:
        flags = Table(title="flagged circulators", title_style="bold red")
        for col in ("county", "circulator", "decided", "suspect", "rate", "rest of county", "q"):
            flags.add_column(col, justify="left" if col in ("county", "circulator") else "right")
        for x in t.flagged_circulators[:10]:
            flags.add_row(x.county, x.circulator_id, f"{x.decided:,}", f"{x.suspect:,}",
                          f"{100 * x.rate:.1f} %", f"{100 * x.others_rate:.1f} %", f"{x.q_value:.2g}")
        parts.append(flags)
        if len(t.flagged_circulators) > 10:
            parts.append(Text(f"... and {len(t.flagged_circulators) - 10} more", style="dim"))
    else:
        parts.append(Text("no circulator flagged", style="dim"))
    return Group(*parts)


async def stream(channel: grpc.aio.Channel, petition: str, interval_ms: int,
                 timeout: float) -> AsyncGenerator[tally_pb2.Tally, None]:
    # A watch is meant to run for hours; its deadline is the --for option.
    call = tally_pb2_grpc.TallyServiceStub(channel).WatchTally(
        tally_pb2.WatchTallyRequest(petition_id=petition, min_interval_ms=interval_ms),
        timeout=timeout)
    try:
        async for t in call:
            yield t
    finally:
        call.cancel()


async def watch(channel: grpc.aio.Channel, console: Console, petition: str, *, once: bool = False,
                interval_ms: int = 1000, timeout: float = 86_400) -> int:
    """Show the tally until the stream ends, the deadline passes or the user presses Ctrl-C."""
    updates = stream(channel, petition, interval_ms, timeout)
    try:
        first = await anext(updates)
        if once:
            console.print(render(first))
            return 0
        with Live(render(first), console=console, refresh_per_second=4, auto_refresh=False) as live:
            try:
                async for t in updates:
                    live.update(render(t), refresh=True)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise
        return 0
    except StopAsyncIteration:
        return 1
    finally:
        await updates.aclose()
