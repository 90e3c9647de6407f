"""The matcher's evidence as the CLI shows it: a candidate's waterfall (the prior, then each
field's level and bits, then the total), the match model's levels with their m, u and
weight, and the ``--json`` forms of both. Pure: no I/O.

Level names come from the server (``sigverify_matching.fs.LEVELS``); the words shown to a
reviewer for the terse ones are here, and a level this CLI does not know is shown by its
own name.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rich.table import Table

from sigverify.common.v1 import common_pb2
from sigverify.matching.v1 import matching_pb2
from sigverify_common.convert import decision_from_pb, reason_from_pb

#: The comparisons as a reviewer reads them.
FIELD_NAMES = {
    "first": "first name",
    "middle": "middle name",
    "last": "last name",
    "suffix": "suffix",
    "residence": "address",
    "birth": "birth date",
    "prior": "start",
}

#: Plain words for the levels whose names are terse (the rest are shown as named).
LEVEL_WORDS: dict[tuple[str, str], str] = {
    ("first", "exact"): "same",
    ("first", "nickname"): "a nickname of it (Bob, Robert)",
    ("first", "typo"): "nearly the same (a slip)",
    ("first", "misspelt nickname"): "a misspelt nickname of it",
    ("first", "initial"): "an initial only",
    ("first", "middle name as first"): "the middle name written as first",
    ("first", "similar"): "similar spelling",
    ("middle", "exact"): "same",
    ("middle", "initial"): "an initial of it",
    ("middle", "similar"): "similar spelling",
    ("last", "exact"): "same",
    ("last", "typo"): "nearly the same (a slip)",
    ("last", "part of a compound"): "one part of a compound surname",
    ("last", "similar"): "similar spelling",
    ("suffix", "agree"): "same (both JR, say)",
    ("suffix", "conflict"): "different (JR and SR, say)",
    ("suffix", "missing"): "no suffix on one side or both (no evidence)",
    ("residence", "exact"): "same address",
    ("residence", "near (a slip)"): "same address, with a slip",
    ("residence", "same address, other town"): "same house and street, another zip or town",
    ("residence", "same street"): "same street, not the same house",
    ("residence", "same zip or town"): "same zip or town, another street",
    ("residence", "different"): "elsewhere",
    ("birth", "exact"): "same",
    ("birth", "one part off"): "two of year, month and day agree",
    ("prior", "in the section's county"): "a voter of the county the section was filed in",
    ("prior", "in another county"): "a voter of another county",
}

SWAPPED = " (read swapped)"

#: One line under every waterfall.
LEGEND = "legend: +1 bit doubles the odds that the voter signed, -1 halves them; a blank counts 0"

MODEL_NOTES = (
    "m: how often a signature and the voter who signed it fall in the level (learned by EM "
    "from the signatures); u: how often a signature and a voter picked at random do (random "
    "pairs).",
    "weight = log2(m/u) in bits, with m and u taken among the pairs where the field is given "
    "on both sides (so not quite log2 of the columns shown); a blank weighs 0.",
    "An exact first name, last name or address weighs more when the value is rare in the roll "
    "and less when common (its frequency stands in for u); with the surname the same, an "
    "address agreeing is weighed by the share of that surname's voters living there.",
)


def field_name(field: str) -> str:
    return FIELD_NAMES.get(field, field)


def level_text(field: str, level: str) -> str:
    """A level in plain words ("same", "a nickname of it ..."); names read the other way
    round (first name written as last) say so."""
    swapped = level.endswith(SWAPPED)
    base = level.removesuffix(SWAPPED)
    if base == "missing" and (field, base) not in LEVEL_WORDS:
        words = "left blank on one side or both (no evidence)"
    else:
        words = LEVEL_WORDS.get((field, base), base)
    return words + (", names read swapped" if swapped else "")


def prior_of(c: common_pb2.Candidate) -> float:
    """The candidate's prior (bits): its "prior" evidence, 0 when it has none."""
    return next((e.weight for e in c.evidence if e.field == "prior"), 0.0)


def has_evidence(candidates: Sequence[common_pb2.Candidate]) -> bool:
    """Whether the candidates carry the Fellegi-Sunter waterfall (older decisions carry
    per-field similarity scores only)."""
    return any(len(c.evidence) for c in candidates)


def total_of(c: common_pb2.Candidate) -> float:
    """The candidate's total in bits: its prior plus its match weight."""
    return prior_of(c) + c.match_weight


def odds_text(bits: float) -> str:
    """log2 odds as "4,390 to 1" (or "1 to 20", "over 10^15 to 1")."""
    if bits >= 40:
        return f"over 10^{int(bits * math.log10(2))} to 1"
    if bits <= -40:
        return f"under 1 to 10^{int(-bits * math.log10(2))}"
    odds = 2.0 ** bits
    if odds >= 1:
        return f"{odds:,.0f} to 1"
    return f"1 to {1 / odds:,.0f}"


def _bar(bits: float, scale: float = 2.0, width: int = 12) -> str:
    n = min(width, round(abs(bits) / scale))
    return ("+" if bits >= 0 else "-") * n


def waterfall_lines(c: common_pb2.Candidate, rank: int) -> list[str]:
    """A candidate's waterfall: a heading, the prior, each field's level and bits with the
    running total, and the total (prior + match weight), one plain line each."""
    lines = [f"candidate {rank}: voter {c.voter_id} ({c.county or '-'}): probability "
             f"{c.score:.2f} %; match weight {c.match_weight:+.2f} bits"]
    steps = [e for e in c.evidence if e.field == "prior"] + [
        e for e in c.evidence if e.field != "prior"]
    running = 0.0
    for i, e in enumerate(steps):
        running += e.weight
        sign = " " if i == 0 else "+"
        lines.append(f"  {sign} {field_name(e.field):<12} {level_text(e.field, e.level):<48} "
                     f"{e.weight:+7.2f}  {running:+8.2f}  {_bar(e.weight)}".rstrip())
    total = total_of(c)
    odds = f"odds vs nobody on the roll: {odds_text(total)}"
    lines.append(f"  = {'total':<12} {odds:<48} {total:+7.2f}")
    return lines


def candidate_dict(c: common_pb2.Candidate) -> dict[str, Any]:
    """A candidate for ``--json``: its probability (``score``, 0..100), match weight, prior,
    total and waterfall (field, level, the level in words, bits)."""
    out: dict[str, Any] = {
        "voter_id": c.voter_id, "county": c.county, "score": round(c.score, 2),
        "probability": round(c.score, 2),
        "field_scores": {k: round(v, 2) for k, v in c.field_scores.items()},
    }
    if c.evidence:
        out.update({
            "match_weight": round(c.match_weight, 2), "prior_weight": round(prior_of(c), 2),
            "total_weight": round(total_of(c), 2),
            "evidence": [{"field": e.field, "level": e.level,
                          "meaning": level_text(e.field, e.level), "weight": round(e.weight, 2)}
                         for e in c.evidence],
        })
    return out


def scores_table(candidates: Sequence[common_pb2.Candidate]) -> Table:
    """Candidates of a decision made before the Fellegi-Sunter model: per-field scores."""
    fields = sorted({k for c in candidates for k in c.field_scores})
    t = Table(title="candidates considered (best first)")
    for col in ("voter", "county", "score", *fields):
        t.add_column(col, justify="left" if col in ("voter", "county") else "right")
    for c in candidates:
        t.add_row(c.voter_id, c.county, f"{c.score:.1f}",
                  *(f"{c.field_scores[f]:.0f}" if f in c.field_scores else "-" for f in fields))
    return t


# -- the model ----------------------------------------------------------------------------------

def _pct(x: float) -> str:
    p = 100.0 * x
    if p >= 10:
        return f"{p:.1f} %"
    if p >= 0.1:
        return f"{p:.2f} %"
    return f"{p:.2g} %"


def model_dict(m: matching_pb2.ModelInfo) -> dict[str, Any]:
    return {
        "model_id": m.model_id, "roll_version": m.roll_version, "trained_at": m.trained_at,
        "trained_by": m.trained_by, "signatures": m.signatures,
        "candidate_pairs": m.candidate_pairs, "random_pairs": m.random_pairs,
        "em_iterations": m.em_iterations, "em_converged": m.em_converged,
        "registered_share": m.registered_share, "in_county_share": m.in_county_share,
        "household_share": m.household_share,
        "first_name_shared_in_household": m.first_name_shared_in_household,
        "voters": m.voters, "prior_in_county": m.prior_in_county,
        "prior_other_county": m.prior_other_county,
        "comparisons": [{"comparison": c.comparison, "levels": [
            {"level": lv.level, "meaning": level_text(c.comparison, lv.level), "m": lv.m,
             "u": lv.u, "weight": lv.weight} for lv in c.levels]} for c in m.comparisons],
    }


def model_heading(m: matching_pb2.ModelInfo, in_force: bool = False) -> list[str]:
    """The lines above the levels: which model, how it was learned, its shares and priors
    (``in_force``: it is the newest model of the active roll version)."""
    when = m.trained_at[:16].replace("T", " ")
    em = (f"{m.em_iterations} EM iteration{'' if m.em_iterations == 1 else 's'}, "
          + ("converged" if m.em_converged else "stopped before converging"))
    return [
        f"match model {m.model_id} of roll version {m.roll_version}"
        + (": in force for the active roll version" if in_force else ""),
        f"trained {when} UTC by {m.trained_by or '-'} from {m.signatures:,} "
        f"signature{'' if m.signatures == 1 else 's'}: "
        f"{m.candidate_pairs:,} candidate pairs for m ({em}), {m.random_pairs:,} random "
        "pairs for u",
        f"learned: {100 * m.registered_share:.1f} % of signers are on the roll "
        f"({m.voters:,} voters); of those, {100 * m.in_county_share:.1f} % are registered "
        "in the county their section was filed in"
        + (f"; {100 * m.household_share:.1f} % of the others live in a household of the roll"
           if m.household_share else ""),
        f"prior (bits a voter starts from): {m.prior_in_county:+.2f} for a voter of the "
        f"section's county, {m.prior_other_county:+.2f} for a voter elsewhere (shown for a "
        "county holding a tenth of the roll's voters)",
    ] + ([f"in a household, {_pct(m.first_name_shared_in_household)} of pairs of voters "
          "share a first name (an exact first name there weighs at least that much)"]
         if m.first_name_shared_in_household else [])


def model_table(m: matching_pb2.ModelInfo) -> Table:
    t = Table(title="comparison levels (strongest first)")
    for col in ("field", "level", "m", "u", "weight (bits)"):
        t.add_column(col, justify="right" if col in ("m", "u", "weight (bits)") else "left")
    for c in m.comparisons:
        for i, lv in enumerate(c.levels):
            weight = "0 (no evidence)" if lv.level == "missing" else f"{lv.weight:+.2f}"
            t.add_row(field_name(c.comparison) if i == 0 else "",
                      level_text(c.comparison, lv.level), _pct(lv.m), _pct(lv.u), weight,
                      end_section=i == len(c.levels) - 1)
    return t


# -- why: the decision in words ----------------------------------------------------------------

#: Residence levels at which the signature's address is the voter's (``fs.ADDRESS_AGREES``).
ADDRESS_AGREES = ("exact", "near (a slip)")

#: The eligibility rules (README "5. Decision"), for a voter identified.
ELIGIBILITY = {
    "VOTER_INACTIVE": "the registration is inactive, and an inactive voter's signature does "
                      "not count",
    "VOTER_CANCELLED": "the registration is cancelled, and a cancelled voter's signature does "
                       "not count",
    "SIGNED_BEFORE_REGISTRATION": "the voter signed before registering (a signer must be "
                                  "registered on the day of signing)",
    "SIGNED_AFTER_DEADLINE": "the voter signed after the petition's deadline",
}
#: Reasons only a reviewer gives.
REVIEWERS = {
    "SIGNATURE_MISMATCH": "a reviewer found the signature is not the voter's",
    "WITHDRAWN": "a reviewer recorded the signature as withdrawn",
}


def level_of(c: common_pb2.Candidate, field: str) -> str:
    """The candidate's level for ``field`` ("" when it has none)."""
    return next((e.level for e in c.evidence if e.field == field), "")


def _pct2(p: float) -> str:
    return f"{p:.2f} %"


def why(x: matching_pb2.Explanation) -> str:
    """Why the matcher (or a reviewer) decided as it did, in one sentence, from what the
    Explanation carries: the decision and reason, the named voter's probability p, the
    thresholds, and the candidates' evidence (README "5. Decision")."""
    decision, reason = decision_from_pb(x.decision).value, reason_from_pb(x.reason).value
    accept, review = f"{x.accept_threshold:g} %", f"{x.review_threshold:g} %"
    cands = list(x.candidates)
    named = next((c for c in cands if x.voter_id and c.voter_id == x.voter_id), None)
    top = named or (cands[0] if cands else None)
    p = named.score if named is not None else x.score
    address = level_of(top, "residence") if top is not None else ""
    if p >= x.accept_threshold:
        identified = f"the voter is identified (p {_pct2(p)} >= accept {accept})"
    else:
        # Only a reviewer names a voter below accept.
        identified = f"a reviewer named the voter (p {_pct2(p)}, below accept {accept})"
    if reason in REVIEWERS:
        return REVIEWERS[reason]
    if decision == "REVIEW":
        if p >= x.accept_threshold:
            return (f"{identified} but the address can be neither confirmed nor refuted (no "
                    "street name to compare)")
        at_address = [c for c in cands if level_of(c, "residence") in ADDRESS_AGREES
                      and level_of(c, "prior") != "in another county"]
        if len(at_address) <= 1:
            return (f"the one candidate at the signature's address is below accept {accept} "
                    f"(p {_pct2(p)}) but not below review {review}: a person says whether "
                    "that voter signed")
        return (f"no one candidate reaches accept {accept} (best {_pct2(p)}); the "
                f"{len(at_address)} voters at the signature's address hold together >= review "
                f"{review} (one of them signed: a person says which)")
    if reason == "ADDRESS_MISMATCH":
        return (f"{identified}, but the signature's address is not the voter's registered one "
                f"(address: {address or 'not compared'})")
    if reason == "WRONG_COUNTY":
        county = top.county if top is not None and top.county else "another county"
        return f"{identified}, registered in {county}, not the section's county"
    if reason in ELIGIBILITY:
        return f"{identified}, but {ELIGIBILITY[reason]}"
    if reason == "MATCHED":
        where = ("the address agrees" if address in ADDRESS_AGREES
                 else "nothing in the address says elsewhere")
        return (f"{identified}, registered in the section's county, and {where} "
                f"(address: {address or 'not compared'})")
    if reason == "NOT_REGISTERED":
        if not cands:
            return "no voter on the roll came near the signature"
        best = cands[0]
        if x.voter_id and p >= x.accept_threshold:
            return f"a reviewer found the signer is not the voter named (p {_pct2(p)})"
        if best.score < x.review_threshold:
            return (f"no candidate is likely enough (best {_pct2(best.score)}, review from "
                    f"{review})")
        if level_of(best, "prior") == "in another county":
            return (f"the best candidate ({_pct2(best.score)}) is below accept {accept} and "
                    f"registered in another county ({best.county or '-'}): only voters of the "
                    "section's county at the signature's address go to review")
        if level_of(best, "residence") not in ADDRESS_AGREES:
            return (f"the best candidate ({_pct2(best.score)}) is below accept {accept} and not "
                    f"at the signature's address (address: {level_of(best, 'residence')}): "
                    "only voters at that address go to review")
        return (f"no candidate reaches accept {accept}, and those at the signature's address "
                f"in the section's county hold together less than review {review}")
    if reason == "INCOMPLETE":
        return "the row lacks the printed name or the residence address"
    if reason == "ONLINE_NOT_ACCEPTED":
        return "signed online, and the petition does not accept online signatures"
    return f"{decision}, {reason}"
