"""``sigverify report``: a petition's county-by-county report as CSV and one HTML page.

Given a ``Tally`` message, writes ``counties.csv``, ``circulators.csv`` and ``report.html``:
a single self-contained file (inline CSS, SVG charts drawn here; no script, no external
resource), so it can be mailed, archived or opened on a machine without a network. Every
piece of text that reaches the HTML goes through ``html.escape``.

For a random-sample petition ``counties.csv`` gains the statutory columns after its usual
ones (``SAMPLE_COLUMNS``: raw count, sample, sample figures, the projection's rate, V, A, B,
C and projected, exactly as the tally gives them) and the page a "Statutory process" section:
the per-county projection, the statewide projection against the fail and qualify bands, the
full count's progress and the outcome.
"""

from __future__ import annotations

import csv
import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sigverify.tally.v1 import tally_pb2
from sigverify_cli.statutory import (
    COUNTY_COLUMNS,
    county_row,
    dec,
    is_statutory,
    method_of,
    outcome_name,
    statewide_facts,
)
from sigverify_common.convert import reason_from_pb
from sigverify_common.sampling import Method
from sigverify_common.vocab import Reason

#: Invalid reasons that get a column even when zero (in this order); others seen are appended.
REASON_ORDER: tuple[str, ...] = tuple(
    r.value for r in Reason if r not in (Reason.MATCHED, Reason.PENDING_REVIEW))

CIRCULATOR_COLUMNS = (
    "county", "circulator_id", "received", "verified", "valid", "invalid", "review", "pending",
    "decided", "suspect", "suspect_reasons", "rate", "others_rate", "county_rate", "ratio",
    "p_value", "q_value", "tested", "flagged",
)

#: counties.csv's extra columns for a random-sample petition (after the usual ones).
SAMPLE_COLUMNS = (
    "not_sampled", "raw", "closed", "sample_size", "sample_verified", "valid_in_sample",
    "duplicates_in_sample", "rate_percent", "v", "a", "b", "c", "projected", "complete",
    "counted", "seed",
)

COLORS = {"valid": "#2e7d32", "invalid": "#c62828", "review": "#f9a825", "pending": "#b0bec5",
          "not_sampled": "#d7ccc8", "accent": "#1565c0", "grid": "#e0e0e0", "text": "#212121",
          "muted": "#616161"}


@dataclass(frozen=True)
class ReportFiles:
    counties_csv: Path
    circulators_csv: Path
    html: Path


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def reasons_of(c: tally_pb2.Counts) -> dict[str, int]:
    return {reason_from_pb(rc.reason).value: int(rc.count) for rc in c.invalid_by_reason}


def reason_columns(t: tally_pb2.Tally) -> list[str]:
    seen = {r for g in t.by_county for r in reasons_of(g.counts)} | set(reasons_of(t.total))
    return [*REASON_ORDER, *sorted(seen - set(REASON_ORDER))]


def pct(part: int | float, whole: int | float) -> float:
    return 100.0 * part / whole if whole else 0.0


def sampled(t: tally_pb2.Tally) -> bool:
    """Whether the petition is verified by random sample (counties.csv's extra columns)."""
    return (method_of(t.method) is Method.RANDOM_SAMPLE
            or any(c.sample_size for c in t.statutory.counties))


def county_header(t: tally_pb2.Tally) -> list[str]:
    return ["county", "received", "verified", "valid", "invalid",
            *(f"invalid_{r.lower()}" for r in reason_columns(t)),
            "review", "duplicates", "pending", "valid_percent",
            *(SAMPLE_COLUMNS if sampled(t) else ())]


def _sample_cells(c: tally_pb2.Counts, p: tally_pb2.CountyProjection | None) -> list[Any]:
    if p is None:
        return [c.not_sampled, c.received, *([""] * (len(SAMPLE_COLUMNS) - 2))]
    return [c.not_sampled, p.raw, str(p.closed).lower(), p.sample_size, p.sample_verified,
            p.valid_in_sample, p.duplicates_in_sample, p.rate_percent, p.v, p.a, p.b, p.c,
            p.projected, str(p.complete).lower(), str(p.counted).lower(), p.seed]


def county_rows(t: tally_pb2.Tally) -> list[list[Any]]:
    """One row per county of the tally; with a random sample, also one per county that has a
    filing but no signature counted in the tally."""
    cols = reason_columns(t)
    extra = sampled(t)
    projections = {p.county: p for p in t.statutory.counties}
    rows: list[list[Any]] = []
    groups = [(g.key, g.counts) for g in t.by_county]
    if extra:
        seen = {key for key, _ in groups}
        groups += [(p.county, tally_pb2.Counts()) for p in t.statutory.counties if p.county not in seen]
    for key, c in groups:
        by = reasons_of(c)
        rows.append([key, c.received, c.verified, c.valid, c.invalid,
                     *(by.get(r, 0) for r in cols), c.review, c.duplicates, c.pending,
                     f"{pct(c.valid, c.verified):.2f}",
                     *(_sample_cells(c, projections.get(key)) if extra else ())])
    return rows


def _ratio(x: tally_pb2.CirculatorCheck) -> float:
    if x.others_rate > 0:
        return x.rate / x.others_rate
    return math.inf if x.rate > 0 else 0.0


def circulator_rows(t: tally_pb2.Tally) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for x in t.circulators:
        c = x.counts
        reasons = ";".join(f"{reason_from_pb(rc.reason).value}:{rc.count}" for rc in x.suspect_by_reason)
        ratio = _ratio(x)
        rows.append([x.county, x.circulator_id, c.received, c.verified, c.valid, c.invalid, c.review,
                     c.pending, x.decided, x.suspect, reasons, f"{x.rate:.4f}", f"{x.others_rate:.4f}",
                     f"{x.county_rate:.4f}", "inf" if math.isinf(ratio) else f"{ratio:.2f}",
                     f"{x.p_value:.3g}", f"{x.q_value:.3g}", str(x.tested).lower(),
                     str(x.flagged).lower()])
    return rows


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    tmp = path.with_name(path.name + ".part")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    tmp.replace(path)


def write_report(t: tally_pb2.Tally, out: Path) -> ReportFiles:
    out.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(out / "counties.csv", out / "circulators.csv", out / "report.html")
    _write_csv(files.counties_csv, county_header(t), county_rows(t))
    _write_csv(files.circulators_csv, CIRCULATOR_COLUMNS, circulator_rows(t))
    tmp = files.html.with_name(files.html.name + ".part")
    tmp.write_text(render_html(t), encoding="utf-8")
    tmp.replace(files.html)
    return files


# -- SVG charts ----------------------------------------------------------------------------------

def _svg(width: int, height: int, body: list[str], label: str) -> str:
    return (f'<svg width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(label)}">'
            f'{"".join(body)}</svg>')


def _text(x: float, y: float, s: object, *, anchor: str = "start", size: int = 12,
          color: str = COLORS["text"], weight: str = "normal") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" '
            f'fill="{color}" font-weight="{weight}">{_e(s)}</text>')


def _rect(x: float, y: float, w: float, h: float, color: str, title: str = "") -> str:
    tip = f"<title>{_e(title)}</title>" if title else ""
    return (f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(0.0, w):.1f}" height="{h:.1f}" '
            f'fill="{color}">{tip}</rect>')


def statewide_chart(t: tally_pb2.Tally, width: int = 1000) -> str:
    """Valid against the requirement, with what the pending signatures would add at the
    current validity rate; and verified against received."""
    c = t.total
    required = max(1, t.required_signatures)
    rate = c.valid / c.verified if c.verified else 0.0
    projected = c.valid + rate * c.pending
    left, bar_w, h = 170, width - 170 - 150, 26
    scale = bar_w / max(required * 1.1, projected, c.valid)
    body: list[str] = []
    y = 10
    body.append(_text(0, y + 18, "Valid vs required", weight="bold"))
    body.append(_rect(left, y, bar_w, h, COLORS["grid"]))
    body.append(_rect(left, y, projected * scale, h, "#a5d6a7",
                      f"projected at the current validity rate: {projected:,.0f}"))
    body.append(_rect(left, y, c.valid * scale, h, COLORS["valid"], f"valid: {c.valid:,}"))
    rx = left + required * scale
    body.append(f'<line x1="{rx:.1f}" y1="{y - 6}" x2="{rx:.1f}" y2="{y + h + 6}" '
                f'stroke="{COLORS["text"]}" stroke-width="2"/>')
    body.append(_text(rx, y + h + 18, f"required {t.required_signatures:,}", anchor="middle", size=11))
    body.append(_text(left + bar_w + 10, y + 18, f"{pct(c.valid, required):.1f} %", weight="bold"))
    y += h + 34
    body.append(_text(0, y + 18, "Verified vs received", weight="bold"))
    received = max(1, c.received)
    x: float = left
    for part, color, name in ((c.valid, COLORS["valid"], "valid"), (c.invalid, COLORS["invalid"], "invalid"),
                              (c.review, COLORS["review"], "in review"),
                              (c.pending, COLORS["pending"], "pending"),
                              (c.not_sampled, COLORS["not_sampled"], "not sampled")):
        w = bar_w * part / received
        body.append(_rect(x, y, w, h, color, f"{name}: {part:,}"))
        x += w
    body.append(_text(left + bar_w + 10, y + 18, f"{pct(c.verified, c.received):.1f} %", weight="bold"))
    return _svg(width, y + h + 10, body, "statewide progress")


def county_chart(t: tally_pb2.Tally, width: int = 1000) -> str:
    """One stacked bar per county: valid, invalid, review, pending out of received."""
    counties = list(t.by_county)
    left, right, h, gap = 170, 250, 22, 10
    bar_w = width - left - right
    most = max((g.counts.received for g in counties), default=1) or 1
    body: list[str] = []
    y = 4
    for g in counties:
        c = g.counts
        body.append(_text(0, y + 16, g.key))
        x: float = left
        for part, color, name in ((c.valid, COLORS["valid"], "valid"),
                                  (c.invalid, COLORS["invalid"], "invalid"),
                                  (c.review, COLORS["review"], "in review"),
                                  (c.pending, COLORS["pending"], "pending"),
                                  (c.not_sampled, COLORS["not_sampled"], "not sampled")):
            w = bar_w * part / most
            body.append(_rect(x, y, w, h, color, f"{g.key}: {name} {part:,}"))
            x += w
        body.append(_text(x + 8, y + 16,
                          f"{c.valid:,} valid ({pct(c.valid, c.verified):.1f} % of verified)",
                          size=11, color=COLORS["muted"]))
        y += h + gap
    return _svg(width, max(y, 30), body, "progress per county")


def reasons_chart(t: tally_pb2.Tally, width: int = 1000) -> str:
    reasons = sorted(reasons_of(t.total).items(), key=lambda kv: -kv[1])
    left, right, h, gap = 230, 120, 20, 8
    bar_w = width - left - right
    most = max((n for _, n in reasons), default=1) or 1
    invalid = max(1, t.total.invalid)
    body: list[str] = []
    y = 4
    for reason, n in reasons:
        body.append(_text(0, y + 15, reason))
        w = bar_w * n / most
        body.append(_rect(left, y, w, h, COLORS["invalid"], f"{reason}: {n:,}"))
        body.append(_text(left + w + 8, y + 15, f"{n:,} ({pct(n, invalid):.1f} %)", size=11,
                          color=COLORS["muted"]))
        y += h + gap
    if not reasons:
        body.append(_text(0, 20, "no invalid signatures", color=COLORS["muted"]))
        y = 30
    return _svg(width, y, body, "invalid signatures by reason")


def circulator_chart(t: tally_pb2.Tally, width: int = 1000) -> str:
    """Per county: each tested circulator's suspect rate as a dot on a 0-100 % axis, the
    county's rate as a line; flagged circulators in red."""
    by_county: dict[str, list[tally_pb2.CirculatorCheck]] = {}
    for x in t.circulators:
        if x.tested:
            by_county.setdefault(x.county, []).append(x)
    left, right, h = 170, 40, 26
    axis_w = width - left - right
    top_rate = max((x.rate for xs in by_county.values() for x in xs), default=0.0)
    top = max(0.1, min(1.0, math.ceil(top_rate * 10 + 0.5) / 10))
    body: list[str] = []
    y = 22
    for i in range(0, 11):
        v = top * i / 10
        gx = left + axis_w * i / 10
        body.append(f'<line x1="{gx:.1f}" y1="14" x2="{gx:.1f}" y2="{14 + h * len(by_county) + 4}" '
                    f'stroke="{COLORS["grid"]}"/>')
        body.append(_text(gx, 10, f"{v * 100:.0f} %", anchor="middle", size=10, color=COLORS["muted"]))
    for county in sorted(by_county):
        xs = by_county[county]
        body.append(_text(0, y + 12, county))
        cx = left + axis_w * min(xs[0].county_rate, top) / top
        body.append(f'<line x1="{cx:.1f}" y1="{y - 2}" x2="{cx:.1f}" y2="{y + 18}" '
                    f'stroke="{COLORS["accent"]}" stroke-width="2"><title>{_e(county)} county rate '
                    f'{xs[0].county_rate * 100:.1f} %</title></line>')
        for x in sorted(xs, key=lambda x: x.flagged):
            px = left + axis_w * min(x.rate, top) / top
            color = COLORS["invalid"] if x.flagged else "#78909c"
            r = 6 if x.flagged else 4
            body.append(f'<circle cx="{px:.1f}" cy="{y + 8}" r="{r}" fill="{color}" fill-opacity="0.8">'
                        f'<title>{_e(x.circulator_id)}: {x.rate * 100:.1f} % of {x.decided:,}'
                        f'{" (flagged)" if x.flagged else ""}</title></circle>')
        y += h
    if not by_county:
        return _svg(width, 30, [_text(0, 20, "no circulator has enough decided signatures to test",
                                      color=COLORS["muted"])], "circulator rates")
    return _svg(width, y + 4, body, "circulator suspect-invalid rates by county")


def _number(text: str) -> float:
    """A decimal figure for drawing only (0 when absent or unreadable)."""
    try:
        return float(text) if text else 0.0
    except ValueError:
        return 0.0


def projection_chart(t: tally_pb2.Tally, width: int = 1000) -> str:
    """The statewide projected total on an axis of signatures, over the three bands: fails
    below ``fail_below``, full count in between, qualifies above ``qualify_above``."""
    s = t.statutory
    fail, qualify = _number(s.fail_below), _number(s.qualify_above)
    left, right, h = 170, 150, 26
    bar_w = width - left - right
    top = max(qualify * 1.15, s.projected_total * 1.05, t.required_signatures * 1.2, 1.0)
    scale = bar_w / top
    y = 10
    body = [_text(0, y + 18, "Projected valid", weight="bold"),
            _rect(left, y, fail * scale, h, "#ffcdd2", f"fails below {dec(s.fail_below)}"),
            _rect(left + fail * scale, y, (qualify - fail) * scale, h, "#fff9c4",
                  f"full count from {dec(s.fail_below)} to {dec(s.qualify_above)}"),
            _rect(left + qualify * scale, y, bar_w - qualify * scale, h, "#c8e6c9",
                  f"qualifies above {dec(s.qualify_above)}"),
            _rect(left, y + 8, s.projected_total * scale, h - 16, COLORS["accent"],
                  f"projected: {s.projected_total:,}")]
    rx = left + t.required_signatures * scale
    body.append(f'<line x1="{rx:.1f}" y1="{y - 6}" x2="{rx:.1f}" y2="{y + h + 6}" '
                f'stroke="{COLORS["text"]}" stroke-width="2"/>')
    body.append(_text(rx, y + h + 18, f"required {t.required_signatures:,}", anchor="middle", size=11))
    body.append(_text(left + bar_w + 10, y + 18, f"{dec(s.projected_percent)} %", weight="bold"))
    return _svg(width, y + h + 26, body, "statewide projection against the bands")


def statutory_html(t: tally_pb2.Tally) -> str:
    """The "Statutory process" section of the page."""
    s = t.statutory
    outcome = outcome_name(s.outcome)
    cls = {"QUALIFIES": "ok", "FAILS": "bad", "FULL_COUNT": "warn"}.get(outcome, "")
    random = method_of(t.method) is Method.RANDOM_SAMPLE
    cards = [("outcome", outcome, cls), ("stage", s.stage or "-", ""),
             ("raw count", f"{s.raw_total:,}", "")]
    if random:
        cards += [("projected valid", f"{s.projected_total:,}", ""),
                  ("of the requirement", f"{dec(s.projected_percent)} %", ""),
                  ("fails below", dec(s.fail_below), ""), ("qualifies above", dec(s.qualify_above), "")]
    if s.full_count:
        cards += [("counted valid", f"{s.counted_valid:,}", ""),
                  ("remaining", f"{s.counted_remaining:,}", "")]
    cards_html = "".join(f'<div class="card {c}"><b>{_e(v)}</b><span>{_e(k)}</span></div>'
                         for k, v, c in cards)
    facts = _table(["", "statewide"], [[k, v] for k, v in statewide_facts(t)], left=2)
    chart = projection_chart(t) if random and (s.projected_total or s.fail_below) else ""
    counties = (_table(COUNTY_COLUMNS, [county_row(c) for c in s.counties], left=1)
                if s.counties else '<p class="note">No county has filed yet.</p>')
    if random:
        how = ("California's process (EC 9030-9031): each county's raw count, then a random "
               "sample of each county and the projection of its valid signatures by 2 CCR "
               "20530-20532 (rate to two decimals; V = raw x rate, rounded up; A = raw / sample "
               "to four decimals; B = A(A - 1); C = duplicates in the sample x B, rounded up; "
               "projected = V - C). Below the fail threshold the petition fails, above the "
               "qualify threshold it qualifies; in between every county counts every signature, "
               "and the count may stop once the requirement is reached (AB 2219).")
    else:
        how = ("Full count: every signature is verified; the petition qualifies when its counted "
               "valid signatures reach the requirement (the count may stop there, AB 2219) and "
               "fails when every county has closed and every signature is verified below it.")
    return f"""<h2>Statutory process</h2>
<p class="note">{_e(how)}</p>
<div class="cards">{cards_html}</div>
{chart}
{facts}
<h3>Random sample and projection per county</h3>
{counties}
"""


# -- the page ------------------------------------------------------------------------------------

CSS = """
body { font-family: -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif;
       color: #212121; margin: 0; background: #fafafa; }
main { max-width: 1040px; margin: 0 auto; padding: 24px 20px 48px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 32px 0 8px; border-bottom: 2px solid #e0e0e0; padding-bottom: 4px; }
.sub { color: #616161; margin: 0 0 16px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 16px 0; }
.card { background: #fff; border: 1px solid #e0e0e0; border-radius: 6px; padding: 10px 14px;
        min-width: 112px; }
.card b { display: block; font-size: 20px; }
.card span { color: #616161; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card.ok b { color: #2e7d32; } .card.bad b { color: #c62828; } .card.warn b { color: #b26a00; }
table { border-collapse: collapse; width: 100%; background: #fff; font-size: 13px; }
th, td { padding: 5px 8px; border-bottom: 1px solid #eee; text-align: right; }
td { white-space: nowrap; }
th { background: #f1f3f4; font-weight: 600; vertical-align: bottom; }
td:first-child, th:first-child, td.l, th.l { text-align: left; }
tr.flag td { background: #ffebee; }
.legend span { display: inline-block; margin-right: 14px; font-size: 12px; color: #616161; }
.legend i { display: inline-block; width: 12px; height: 12px; margin-right: 4px; vertical-align: -1px; }
.note { color: #616161; font-size: 12px; }
svg { display: block; margin: 8px 0; max-width: 100%; height: auto; }
"""


def _legend(not_sampled: bool = False) -> str:
    items = (("valid", COLORS["valid"]), ("invalid", COLORS["invalid"]), ("in review", COLORS["review"]),
             ("pending", COLORS["pending"]),
             *((("not sampled", COLORS["not_sampled"]),) if not_sampled else ()))
    return ('<div class="legend">' + "".join(f'<span><i style="background:{c}"></i>{_e(n)}</span>'
                                               for n, c in items) + "</div>")


def _table(header: Sequence[str], rows: Iterable[Sequence[object]], row_class: Sequence[str] = (),
           left: int = 1) -> str:
    """A table whose first ``left`` columns are text (left-aligned), the rest numbers."""
    def cell(tag: str, j: int, v: object) -> str:
        return f'<{tag} class="l">{_e(v)}</{tag}>' if j < left else f"<{tag}>{_e(v)}</{tag}>"

    head = "".join(cell("th", j, h) for j, h in enumerate(header))
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{_e(row_class[i])}"' if i < len(row_class) and row_class[i] else ""
        body.append(f"<tr{cls}>" + "".join(cell("td", j, v) for j, v in enumerate(row)) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def deadline_text(t: tally_pb2.Tally) -> str:
    """How far the deadline is: "12 days to the deadline (2026-06-30)", "the deadline is
    today (...)" or "deadline passed 3,416 days ago (...)"."""
    d = t.days_to_deadline
    if d > 0:
        return f"{d:,} days to the deadline ({t.deadline})"
    if d == 0:
        return f"the deadline is today ({t.deadline})"
    return f"deadline passed {-d:,} days ago ({t.deadline})"


def render_html(t: tally_pb2.Tally) -> str:
    c = t.total
    short = max(0, t.required_signatures - c.valid)
    cards = [
        ("received", f"{c.received:,}", ""), ("verified", f"{c.verified:,}", ""),
        ("valid", f"{c.valid:,}", "ok"), ("invalid", f"{c.invalid:,}", "bad"),
        ("in review", f"{c.review:,}", "warn"), ("duplicates", f"{c.duplicates:,}", "bad"),
        ("pending", f"{c.pending:,}", ""),
        *((("not sampled", f"{c.not_sampled:,}", ""),) if c.not_sampled else ()),
        ("rows rejected", f"{t.rows_rejected:,}", ""),
        ("required", f"{t.required_signatures:,}", ""),
        ("still needed", f"{short:,}", "ok" if short == 0 else ""),
        ("days to deadline", f"{t.days_to_deadline:,}", "bad" if t.days_to_deadline < 0 else ""),
    ]
    cards_html = "".join(f'<div class="card {cls}"><b>{_e(v)}</b><span>{_e(k)}</span></div>'
                         for k, v, cls in cards)
    ns = c.not_sampled > 0
    counties = _table([*county_header(t)[:5], "review", "duplicates", "pending",
                       *(("not sampled",) if ns else ()), "valid %"],
                      [[g.key, f"{k.received:,}", f"{k.verified:,}", f"{k.valid:,}", f"{k.invalid:,}",
                        f"{k.review:,}", f"{k.duplicates:,}", f"{k.pending:,}",
                        *((f"{k.not_sampled:,}",) if ns else ()),
                        f"{pct(k.valid, k.verified):.1f}"]
                       for g in t.by_county for k in (g.counts,)])
    reason_cols = [r for r in reason_columns(t) if reasons_of(t.total).get(r)]
    by_county_reason = _table(["county", *(r.lower().replace("_", " ") for r in reason_cols)],
                              [[g.key, *(f"{reasons_of(g.counts).get(r, 0):,}" for r in reason_cols)]
                               for g in t.by_county])
    flagged = list(t.flagged_circulators)
    flag_rows = [[x.county, x.circulator_id, f"{x.decided:,}", f"{x.suspect:,}",
                  ", ".join(f"{reason_from_pb(rc.reason).value.lower().replace('_', ' ')} {rc.count:,}"
                            for rc in x.suspect_by_reason),
                  f"{x.rate * 100:.1f} %", f"{x.others_rate * 100:.1f} %",
                  "∞" if math.isinf(_ratio(x)) else f"{_ratio(x):.1f} times", f"{x.p_value:.2g}",
                  f"{x.q_value:.2g}"] for x in flagged]
    flag_header = ["county", "circulator", "decided", "suspect", "suspect reasons", "rate",
                   "rest of county", "ratio", "p", "q (BH)"]
    flags_html = (_table(flag_header, flag_rows, ["flag"] * len(flag_rows), left=2) if flag_rows
                  else '<p class="note">No circulator is flagged.</p>')
    tested = sum(1 for x in t.circulators if x.tested)
    p = t.flag_policy
    policy = (f"Test: {p.test}. Suspect reasons: {', '.join(p.suspect_reasons)}. A circulator "
              f"is tested with at least {p.min_decided} decided (valid or invalid) signatures in a "
              f"county that has other circulators, and flagged when its rate is at least "
              f"{p.min_ratio:g} times the rest of the county's and the adjusted p-value is at most "
              f"{p.fdr:g} (false discovery rate). Signatures in review or pending are left out. "
              f"{tested:,} of {len(t.circulators):,} circulator-county pairs were tested.")
    title = t.title or t.petition_id
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}: signature verification report</title>
<style>{CSS}</style></head>
<body><main>
<h1>{_e(title)}</h1>
<p class="sub">Petition {_e(t.petition_id)} · {_e(deadline_text(t))} · as of {_e(t.as_of)}</p>
<div class="cards">{cards_html}</div>
<h2>Statewide progress</h2>
<p class="note">{_e(f"{c.valid:,} valid of {t.required_signatures:,} required ({t.progress_percent:.2f} %)")};
light green: what the {_e(f"{c.pending:,}")} pending signatures would add at the current validity
rate. {_e(deadline_text(t)).capitalize()}.</p>
{statewide_chart(t)}
{_legend(ns)}
<h2>Progress per county</h2>
{_legend(ns)}
{county_chart(t)}
{counties}
{statutory_html(t) if is_statutory(t) else ""}<h2>Why signatures do not count</h2>
{reasons_chart(t)}
<p class="note">Per county (reasons that occur):</p>
{by_county_reason}
<h2>Circulator flags</h2>
<p class="note">{_e(policy)}</p>
{flags_html}
<h3>Suspect-invalid rate of every tested circulator, per county</h3>
<p class="note">Dots: circulators (red: flagged); blue line: the county's rate.</p>
{circulator_chart(t)}
</main></body></html>
"""
