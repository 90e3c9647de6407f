"""The Fellegi-Sunter model: comparison levels, their m and u probabilities, match weights.

Pure: no I/O. A signature and a voter are compared field by field; each comparison falls
into one *level* (exact, a typo, a nickname, an initial, ... missing, different). Under the
model, a level is evidence ``log2(m / u)`` bits for "this voter signed", where

- ``m`` = P(level | the voter is the signer), learned by expectation-maximisation on the
  candidate pairs of the roll and the signatures themselves (``train_em``);
- ``u`` = P(level | another person), estimated on random pairs of voters of the roll
  (``estimate_u``); for exact agreement on a first name, a surname or an address it is the
  value's own frequency in the roll (a term-frequency adjustment: GARCIA is weak evidence,
  a rare surname strong), and an address's frequency is taken among the voters of that
  surname when the surname agrees (members of one household share both: the address then
  says little that the surname did not, and the first name must decide).

A signature's candidates share one posterior: P(voter j signed) is proportional to
``2**(prior + weight_j)``, the rest of the mass being "not registered" (``posterior``).
Nothing here is a hand-set score; the decision bands are configuration.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int8]

#: Comparisons and their levels, strongest first; level 0 is always "missing" (neutral).
LEVELS: dict[str, tuple[str, ...]] = {
    "first": ("missing", "exact", "nickname", "typo", "misspelt nickname", "initial",
              "middle name as first", "sounds alike", "similar", "different"),
    "middle": ("missing", "exact", "initial", "similar", "different"),
    "last": ("missing", "exact", "typo", "part of a compound", "sounds alike", "similar",
             "different"),
    "suffix": ("missing", "agree", "conflict"),
    "residence": ("missing", "exact", "near (a slip)", "same address, other town",
                  "same street", "same zip or town", "different"),
    "birth": ("missing", "exact", "day and month swapped", "one part off", "different"),
}
COMPARISONS = tuple(LEVELS)
#: Comparisons whose level 0 means a value is missing on either side (no evidence).
HAS_MISSING = frozenset(c for c in COMPARISONS if LEVELS[c][0] == "missing")

# Level numbers used by the code (must follow LEVELS).
FIRST_EXACT, FIRST_NICK, FIRST_TYPO, FIRST_NICK_TYPO, FIRST_INITIAL, FIRST_MIDDLE, \
    FIRST_PHON, FIRST_SIMILAR, FIRST_DIFF = range(1, 10)
MID_EXACT, MID_INITIAL, MID_SIMILAR, MID_DIFF = range(1, 5)
LAST_EXACT, LAST_TYPO, LAST_PART, LAST_PHON, LAST_SIMILAR, LAST_DIFF = range(1, 7)
SFX_AGREE, SFX_CONFLICT = 1, 2
RES_EXACT, RES_NEAR, RES_OTHER_TOWN, RES_STREET, RES_LOCALITY, RES_DIFF = range(1, 7)
BIRTH_EXACT, BIRTH_SWAP, BIRTH_PART, BIRTH_DIFF = range(1, 5)

#: Residence levels at which the signature's address is the voter's (a slip tolerated).
ADDRESS_AGREES = (RES_EXACT, RES_NEAR)


@dataclass
class Levels:
    """Comparison levels of candidate pairs (one int8 array per comparison) and what the
    term-frequency adjustments need: per pair, the voter's name and address counts."""

    first: I8
    middle: I8
    last: I8
    suffix: I8
    residence: I8
    birth: I8
    n_first: npt.NDArray[np.int32]
    n_last: npt.NDArray[np.int32]
    n_addr: npt.NDArray[np.int32]
    n_last_addr: npt.NDArray[np.int32]
    #: the pair's names were read swapped (first in the surname box and back)
    swapped: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def __len__(self) -> int:
        return len(self.first)

    def matrix(self) -> npt.NDArray[np.int8]:
        return np.stack([getattr(self, c) for c in COMPARISONS], axis=1)

    def take(self, idx: npt.NDArray[Any]) -> Levels:
        return Levels(**{k: getattr(self, k)[idx] for k in _FIELDS})

    @staticmethod
    def concat(parts: Sequence[Levels]) -> Levels:
        """The pairs of ``parts``, one after another."""
        return Levels(**{k: np.concatenate([getattr(p, k) for p in parts]) for k in _FIELDS})


_FIELDS = (*COMPARISONS, "n_first", "n_last", "n_addr", "n_last_addr", "swapped")


@dataclass
class Model:
    """m and u per comparison level, the prior, and how they were learned."""

    m: dict[str, list[float]]
    u: dict[str, list[float]]
    #: share of signatures whose signer is registered (learned by EM)
    registered_share: float
    #: voters in the roll (the prior of one voter being the signer is share / voters)
    voters: int
    #: share of registered signers registered in the section's own county (learned by EM)
    in_county_share: float = 0.9
    trained: dict[str, Any] = field(default_factory=dict)
    #: u of an exact first name within a household: P(two voters sharing a surname and an
    #: address share their first name), counted on the roll (0: not known, the name's
    #: frequency is used). Another member of the signer's household is the likely other
    #: person there, and household members seldom share a first name (a JR and SR do).
    u_first_household: float = 0.0
    #: share of unregistered signers who live in a household of the roll (a spouse, a
    #: grown child not registered: they share its surname and address, not a voter's
    #: first name), learned by EM; 0 for a model without that hypothesis
    household_share: float = 0.0

    def to_json(self) -> str:
        return json.dumps({"m": self.m, "u": self.u, "registered_share": self.registered_share,
                           "in_county_share": self.in_county_share, "voters": self.voters,
                           "u_first_household": self.u_first_household,
                           "household_share": self.household_share,
                           "trained": self.trained}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Model:
        d = json.loads(text)
        return cls(m=d["m"], u=d["u"], registered_share=d["registered_share"],
                   voters=d["voters"], in_county_share=d.get("in_county_share", 0.9),
                   trained=d.get("trained", {}),
                   u_first_household=d.get("u_first_household", 0.0),
                   household_share=d.get("household_share", 0.0))

    @property
    def prior(self) -> float:
        """log2 prior odds that one given voter (anywhere in the state) signed a signature."""
        s = min(max(self.registered_share, 1e-3), 1 - 1e-3)
        return math.log2(s / (max(self.voters, 1) * (1 - s)))

    def pair_priors(self, same_county: npt.NDArray[np.bool_],
                    county_voters: npt.NDArray[np.int64]) -> F64:
        """log2 prior odds per pair that the voter signed: a registered signer is one of the
        section county's ``county_voters`` with probability ``in_county_share``, else one
        of the rest of the state's (a county the roll lacks: anyone in the state)."""
        s = min(max(self.registered_share, 1e-3), 1 - 1e-3)
        q = min(max(self.in_county_share, 1e-3), 1 - 1e-3)
        n = max(self.voters, 1)
        nc = county_voters.astype(np.float64)
        known = (nc > 0) & (nc < n)
        out = np.full(len(same_county), math.log2(s / (n * (1 - s))))
        same = known & same_county
        other = known & ~same_county
        out[same] = np.log2(s * q / (nc[same] * (1 - s)))
        out[other] = np.log2(s * (1 - q) / ((n - nc[other]) * (1 - s)))
        return out

    def tables(self) -> dict[str, tuple[F64, F64]]:
        """Per comparison: (log2 m, log2 u) by level. Where a comparison has a "missing"
        level, the others are taken given that it is not missing: how often a field is left
        blank is the signature's habit, not evidence about the voter."""
        out = {}
        for c in COMPARISONS:
            m = np.asarray(self.m[c], dtype=np.float64)
            u = np.asarray(self.u[c], dtype=np.float64)
            if c in HAS_MISSING:
                m = m / max(1.0 - m[0], 1e-12)
                u = u / max(1.0 - u[0], 1e-12)
            out[c] = (np.log2(np.maximum(m, 1e-300)), np.log2(np.maximum(u, 1e-300)))
        return out

    def weights(self, lv: Levels) -> tuple[F64, dict[str, F64]]:
        """Per pair: the total match weight (bits) and each comparison's part of it."""
        tables = self.tables()
        n = max(self.voters, 1)
        parts: dict[str, F64] = {}
        for c in COMPARISONS:
            lm, lu = tables[c]
            levels = getattr(lv, c).astype(np.intp)
            w = lm[levels] - lu[levels]
            w[levels == 0] = 0.0  # missing: no evidence either way
            parts[c] = w
        # Term-frequency adjustments of exact agreement.
        lm_f, _ = tables["first"]
        ex = lv.first == FIRST_EXACT
        parts["first"][ex] = lm_f[FIRST_EXACT] - np.log2(np.maximum(lv.n_first[ex], 1) / n)
        lm_l, _ = tables["last"]
        last_ex = lv.last == LAST_EXACT
        parts["last"][last_ex] = lm_l[LAST_EXACT] - np.log2(np.maximum(lv.n_last[last_ex], 1) / n)
        lm_r, lu_r = tables["residence"]
        res_ex = lv.residence == RES_EXACT
        alone = res_ex & ~last_ex
        parts["residence"][alone] = lm_r[RES_EXACT] - np.log2(np.maximum(lv.n_addr[alone], 1) / n)
        # With the surname agreeing, the address is as likely as the share of that surname's
        # voters living there: household members share both.
        # Another member writes the address as the signer would: exactly or with a slip, at
        # m's shares of those levels (a slip is no evidence against the member who signed).
        hh = last_ex & np.isin(lv.residence, ADDRESS_AGREES)
        share = np.maximum(lv.n_last_addr[hh], 1) / np.maximum(lv.n_last[hh], 1)
        level = lv.residence[hh].astype(np.intp)
        m_here = np.exp2(lm_r[RES_EXACT]) + np.exp2(lm_r[RES_NEAR])
        u_res = np.maximum(share * np.exp2(lm_r[level]) / m_here, np.exp2(lu_r[level]))
        parts["residence"][hh] = lm_r[level] - np.log2(u_res)
        # In the household, another person has the signer's exact first name only as often
        # as two of a household's voters share one: a common first name (MARIA) is no
        # weaker there than that; a rare one keeps its frequency's weight.
        if self.u_first_household > 0:
            in_hh = hh & ex
            parts["first"][in_hh] = np.maximum(
                parts["first"][in_hh], lm_f[FIRST_EXACT] - math.log2(self.u_first_household))
        total = np.zeros(len(lv), dtype=np.float64)
        for w in parts.values():
            total += w
        return total, parts


def household_odds(starts: npt.NDArray[np.int64], lv: Levels, parts: dict[str, F64],
                   household: npt.NDArray[np.uint64], households: npt.NDArray[np.int64]) -> F64:
    """Per signature, the odds (before ``household_share``) that an unregistered member of
    one of its candidates' households signed: for each distinct household among the pairs
    whose surname is exact and address agrees (``household``: a key per pair), one in the
    county's ``households`` (per pair) at the evidence its surname and address give (a
    member shares them as the voter does; the first name says nothing: it is a new one).
    In the units of ``posterior`` (all unregistered signers: 1)."""
    n_sig = len(starts)
    out = np.zeros(n_sig, dtype=np.float64)
    if not len(lv):
        return out
    hh = (lv.last == LAST_EXACT) & np.isin(lv.residence, ADDRESS_AGREES) & ~lv.swapped
    if not hh.any():
        return out
    group = np.repeat(np.arange(n_sig), np.diff(np.append(starts, len(lv))))
    idx = np.nonzero(hh)[0]
    key = np.stack([group[idx].astype(np.uint64), household[idx]]).T
    _, first = np.unique(key, axis=0, return_index=True)
    idx = idx[first]
    w = parts["last"][idx] + parts["residence"][idx]
    np.add.at(out, group[idx], np.exp2(w) / np.maximum(households[idx], 1))
    return out


# ------------------------------------------------------------------------ estimation

def level_counts(levels: npt.NDArray[np.int8], comparison: str,
                 weights: F64 | None = None) -> F64:
    k = len(LEVELS[comparison])
    return np.bincount(levels.astype(np.intp), weights=weights, minlength=k)[:k].astype(np.float64)


def u_from_counts(counts: dict[str, F64], fallback: dict[str, F64] | None = None,
                  enough: float = 10_000) -> dict[str, list[float]]:
    """u per level from level counts on random pairs (add-one smoothed). Where the pairs
    compared a field fewer than ``enough`` times (signatures rarely give a birth date, say),
    the ``fallback`` counts (random pairs of voters) give the levels but missing."""
    out = {}
    for c in COMPARISONS:
        x = np.asarray(counts[c], dtype=np.float64).copy()
        if fallback is not None and c in HAS_MISSING and x[1:].sum() < enough:
            x[1:] += np.asarray(fallback[c], dtype=np.float64)[1:]
        x = x + 1.0
        out[c] = (x / x.sum()).tolist()
    return out


def initial_m() -> dict[str, list[float]]:
    """EM's starting point: most of a match's mass on the first (strongest) levels. Only a
    start: EM moves it to what the data say."""
    out = {}
    for c in COMPARISONS:
        k = len(LEVELS[c])
        x = np.concatenate([[0.05], [0.3 ** i for i in range(k - 1)]])
        out[c] = (x / x.sum()).tolist()
    return out


@dataclass
class EMResult:
    model: Model
    iterations: int
    converged: bool
    log_likelihood: float


#: The prior's weight in EM: as many matched pairs as this at the prior's m, and as many
#: signatures as this at the prior's registered share (``train_em``).
PRIOR_MATCHES = 50.0
PRIOR_SIGNATURES = 20.0


#: The household share EM starts from (and its prior's centre for a first model).
HOUSEHOLD_SHARE0 = 0.2


def train_em(model: Model, levels: Levels, starts: npt.NDArray[np.int64], signatures: int,
             same_county: npt.NDArray[np.bool_], county_voters: npt.NDArray[np.int64],
             prior: Model | None = None, max_iter: int = 200, tol: float = 1e-6,
             household: npt.NDArray[np.uint64] | None = None,
             households: npt.NDArray[np.int64] | None = None) -> EMResult:
    """m and the registered share by EM over signatures and their candidate pairs.

    The model is the one the matcher decides with: a signature's signer is one of its
    candidates (each with prior odds ``registered_share / voters``, times its match
    weight's odds) or nobody on the roll. The E-step gives every candidate its posterior
    of being the signer; the M-step sets each comparison's m to the posterior-weighted
    share of its levels and the registered share to the mean posterior mass of a
    signature. u stays as estimated on random pairs; ``starts`` are the first pair of each
    signature's candidates, and ``signatures`` counts those with no candidate too.

    Estimates are maximum a posteriori under a weak Dirichlet prior: ``PRIOR_MATCHES``
    matched pairs distributed as ``prior``'s m (the model this one replaces; for the first
    model, ``initial_m``'s generic shape), and ``PRIOR_SIGNATURES`` signatures at its
    registered share. With thousands of signatures the data decide; with a handful, or a
    skewed first batch (all unregistered, say), the model stays sane.
    """
    centre = prior.m if prior is not None else initial_m()
    share0 = prior.registered_share if prior is not None else 0.75
    county0 = prior.in_county_share if prior is not None else 0.9
    with_households = household is not None and households is not None
    hh0 = (prior.household_share if prior is not None and prior.household_share > 0
           else HOUSEHOLD_SHARE0)
    if with_households:
        model.household_share = hh0
    if len(levels) == 0:
        # Not one candidate pair (the first signatures all strangers to the roll): the data
        # say nothing of m, and only that these signers are not registered. The estimates
        # are the prior's m, and its shares drawn towards that (a model a few seconds old
        # on a new deployment, provisional until more signatures come; raising here had
        # failed the batches that needed it, as if each of its records were poison).
        for c in COMPARISONS:
            model.m[c] = _with_prior(np.zeros(len(LEVELS[c])), np.asarray(centre[c], dtype=np.float64),
                                     c in HAS_MISSING).tolist()
        n = max(signatures, 1) + PRIOR_SIGNATURES
        model.registered_share = min(max(PRIOR_SIGNATURES * share0 / n, 0.01), 0.99)
        model.in_county_share = county0
        if with_households:
            model.household_share = min(max(PRIOR_SIGNATURES * hh0 / n, 1e-4), 0.99)
        return EMResult(model, 0, True, 0.0)
    prev = -np.inf
    ll = -np.inf
    converged = False
    it = 0
    group = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(levels))))
    for it in range(1, max_iter + 1):  # noqa: B007 - reported
        w, parts = model.weights(levels)
        pp = model.pair_priors(same_county, county_voters)
        t = model.household_share
        h = (household_odds(starts, levels, parts, household, households)  # type: ignore[arg-type]
             if with_households else np.zeros(len(starts)))
        unreg = 1.0 - t + t * h  # the unregistered signers' odds (random + household)
        p = posterior(starts, w, pp, unreg - 1.0)
        mass = np.add.reduceat(p, starts)
        # log-likelihood (up to a constant): log(unregistered + sum of odds) per signature
        wp = w + pp
        top = np.maximum(np.maximum.reduceat(wp, starts), 0.0)
        ll = float(np.sum(top + np.log2(unreg * np.exp2(-top) + np.add.reduceat(
            np.exp2(wp - top[group]), starts))))
        if with_households:
            # the unregistered mass of each signature, split as its odds are
            in_hh = (1.0 - mass) * (t * h) / np.maximum(unreg, 1e-300)
            unregistered = float((1.0 - mass).sum()) + (signatures - len(starts))
            model.household_share = min(max(
                (float(in_hh.sum()) + PRIOR_SIGNATURES * hh0)
                / (unregistered + PRIOR_SIGNATURES), 1e-4), 0.99)
        for c in COMPARISONS:
            k = len(LEVELS[c])
            x = np.bincount(getattr(levels, c).astype(np.intp), weights=p, minlength=k)[:k]
            model.m[c] = (_with_prior(x.astype(np.float64),
                                      np.asarray(centre[c], dtype=np.float64),
                                      c in HAS_MISSING)).tolist()
        share = float((mass.sum() + PRIOR_SIGNATURES * share0)
                      / (max(signatures, 1) + PRIOR_SIGNATURES))
        model.in_county_share = float((p[same_county].sum() + PRIOR_SIGNATURES * county0)
                                      / (mass.sum() + PRIOR_SIGNATURES))
        model.registered_share = min(max(share, 0.01), 0.99)
        if abs(ll - prev) <= tol * max(abs(ll), 1.0):
            converged = True
            break
        prev = ll
    return EMResult(model, it, converged, ll)


def _with_prior(x: F64, centre: F64, has_missing: bool) -> F64:
    """m of one comparison from its posterior-weighted level counts ``x`` and the prior
    (``PRIOR_MATCHES`` matched pairs at ``centre``), normalised.

    Where the comparison has a "missing" level, the prior's pairs leave the field blank as
    often as the data's matches do, and only the others add to the levels that are
    evidence, in the shape of ``centre`` given not missing: a field the signatures seldom
    fill (a suffix, a birth date) has few matched pairs behind its levels, and fifty prior
    pairs all filling it in would outweigh them (a written JR, SR against the other
    would be worth a bit or two whatever the data said)."""
    if not has_missing:
        xp = x + PRIOR_MATCHES * centre
        return np.asarray(xp / xp.sum(), dtype=np.float64)
    # the share filled in: the data's, smoothed towards the prior's own
    filled = ((float(x[1:].sum()) + PRIOR_MATCHES * float(centre[1:].sum()) / float(centre.sum()))
              / (float(x.sum()) + PRIOR_MATCHES))
    shape = centre[1:] / max(float(centre[1:].sum()), 1e-12)
    xp = x.copy()
    xp[0] += PRIOR_MATCHES * (1.0 - filled)
    xp[1:] += PRIOR_MATCHES * filled * shape
    return np.asarray(xp / xp.sum(), dtype=np.float64)


# ------------------------------------------------------------------------ the posterior

def posterior(starts: npt.NDArray[np.int64], weights: F64, prior: float | F64,
              extra_mass: F64 | None = None) -> F64:
    """P(candidate signed) per pair; pairs grouped by signature (``starts``: first pair of
    each signature's group, ascending). Each group's remaining mass is "not registered";
    ``extra_mass`` (per group) adds the odds of voters left uncompared (crowded names)."""
    if len(weights) == 0:
        return np.zeros(0, dtype=np.float64)
    w = weights + prior
    top = np.maximum.reduceat(w, starts)
    top = np.maximum(top, 0.0)  # the "not registered" term has weight 0
    group = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(w))))
    e = np.exp2(w - top[group])
    denom = np.add.reduceat(e, starts) + np.exp2(-top)
    if extra_mass is not None:
        denom = denom + extra_mass * np.exp2(-top)
    return np.asarray(e / denom[group], dtype=np.float64)


def level_name(comparison: str, level: int) -> str:
    return LEVELS[comparison][level]
