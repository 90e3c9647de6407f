"""The Fellegi-Sunter model's arithmetic on hand-made levels: match weights, the
term-frequency and household adjustments, the posterior, and EM on a planted mixture."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sigverify_matching import fs

N = 100_000  # voters in the roll


def model(**m_overrides: list[float]) -> fs.Model:
    """A model with plausible hand-set m and u (what EM and random pairs would give)."""
    m = {
        "first": [0.0, 0.85, 0.05, 0.04, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01],
        "middle": [0.4, 0.4, 0.15, 0.03, 0.02],
        "last": [0.0, 0.9, 0.05, 0.02, 0.01, 0.01, 0.01],
        "suffix": [0.95, 0.045, 0.005],
        "residence": [0.0, 0.8, 0.1, 0.02, 0.02, 0.03, 0.03],
        "birth": [0.9, 0.08, 0.01, 0.005, 0.005],
    }
    u = {
        "first": [0.0, 0.005, 0.003, 0.002, 0.001, 0.005, 0.003, 0.002, 0.005, 0.974],
        "middle": [0.4, 0.003, 0.01, 0.001, 0.586],
        "last": [0.0, 0.004, 0.001, 0.0002, 0.0006, 0.001, 0.9932],
        "suffix": [0.999, 0.0005, 0.0005],
        "residence": [0.0, 0.0004, 0.0002, 0.00001, 0.008, 0.18, 0.81159],
        "birth": [0.5, 0.0001, 0.00001, 0.002, 0.49789],
    }
    m.update(m_overrides)
    return fs.Model(m=m, u=u, registered_share=0.9, voters=N)


def levels(n: int = 1, **kw: object) -> fs.Levels:
    base: dict[str, object] = {c: 0 for c in fs.COMPARISONS}
    base.update(n_first=1000, n_last=500, n_addr=2, n_last_addr=2)
    base.update(kw)
    arrays = {k: np.full(n, v, dtype=np.int32 if k.startswith("n_") else np.int8)
              for k, v in base.items()}
    return fs.Levels(**arrays, swapped=np.zeros(n, dtype=bool))  # type: ignore[arg-type]


def test_levels_tables_are_consistent() -> None:
    for names in fs.LEVELS.values():
        assert names[0] == "missing"
        assert len(set(names)) == len(names)
    assert fs.LEVELS["first"][fs.FIRST_EXACT] == "exact"
    assert fs.LEVELS["first"][fs.FIRST_NICK_TYPO] == "misspelt nickname"
    assert fs.LEVELS["residence"][fs.RES_NEAR] == "near (a slip)"
    assert fs.level_name("last", fs.LAST_DIFF) == "different"


def test_weight_is_the_sum_of_its_parts_and_missing_is_neutral() -> None:
    md = model()
    lv = levels(first=fs.FIRST_NICK, last=fs.LAST_TYPO, residence=fs.RES_STREET,
                middle=fs.MID_DIFF, suffix=fs.SFX_CONFLICT, birth=fs.BIRTH_EXACT)
    total, parts = md.weights(lv)
    assert set(parts) == set(fs.COMPARISONS)
    assert total[0] == pytest.approx(sum(p[0] for p in parts.values()))
    t = md.tables()
    lm, lu = t["first"]
    assert parts["first"][0] == pytest.approx(lm[fs.FIRST_NICK] - lu[fs.FIRST_NICK])
    assert parts["middle"][0] < 0 and parts["suffix"][0] < 0 and parts["birth"][0] > 0
    nothing, nothing_parts = md.weights(levels())
    assert nothing[0] == 0.0 and all(p[0] == 0.0 for p in nothing_parts.values())


def test_given_a_value_the_missing_share_does_not_count() -> None:
    """A field left blank half the time carries the same evidence when it is given."""
    often_blank = model(birth=[0.5, 0.4, 0.05, 0.025, 0.025])
    never_blank = model(birth=[0.0, 0.8, 0.1, 0.05, 0.05])
    lv = levels(birth=fs.BIRTH_EXACT)
    assert often_blank.weights(lv)[1]["birth"][0] == pytest.approx(
        never_blank.weights(lv)[1]["birth"][0])


def test_a_rare_name_weighs_more_than_a_common_one() -> None:
    md = model()
    rare = md.weights(levels(first=fs.FIRST_EXACT, last=fs.LAST_EXACT, n_first=3, n_last=2))[1]
    common = md.weights(levels(first=fs.FIRST_EXACT, last=fs.LAST_EXACT, n_first=3000,
                               n_last=2000))[1]
    lm_f = md.tables()["first"][0][fs.FIRST_EXACT]
    assert rare["first"][0] == pytest.approx(lm_f - math.log2(3 / N))
    assert rare["first"][0] - common["first"][0] == pytest.approx(math.log2(1000))
    assert rare["last"][0] - common["last"][0] == pytest.approx(math.log2(1000))


def test_an_address_weighs_by_how_many_share_it() -> None:
    """Without the surname agreeing, an exact address is as strong as it is rare."""
    md = model()
    alone = md.weights(levels(residence=fs.RES_EXACT, last=fs.LAST_TYPO, n_addr=1))[1]
    block = md.weights(levels(residence=fs.RES_EXACT, last=fs.LAST_TYPO, n_addr=64))[1]
    assert alone["residence"][0] - block["residence"][0] == pytest.approx(6.0)


def test_in_a_household_a_slip_in_the_address_is_no_evidence_against_the_signer() -> None:
    """With the surname agreeing, the address is weighed against the other members of the
    household, who would write it exactly or with a slip alike: the slip and the exact
    address weigh the same. It says the more, the fewer of the surname live there."""
    md = model()
    kw = {"last": fs.LAST_EXACT, "n_last": 4}
    exact = md.weights(levels(residence=fs.RES_EXACT, n_last_addr=4, **kw))[1]["residence"][0]
    slip = md.weights(levels(residence=fs.RES_NEAR, n_last_addr=4, **kw))[1]["residence"][0]
    assert slip == pytest.approx(exact)
    m = np.asarray(md.m["residence"])
    assert exact == pytest.approx(math.log2(m[fs.RES_EXACT] + m[fs.RES_NEAR]))  # share 1
    one_of_four = md.weights(levels(residence=fs.RES_EXACT, n_last_addr=1, **kw))[1]
    assert one_of_four["residence"][0] - exact == pytest.approx(2.0)
    # a surname that does not agree: a slip is weaker evidence than the exact address
    other = {"last": fs.LAST_TYPO, "n_addr": 1}
    assert (md.weights(levels(residence=fs.RES_NEAR, **other))[1]["residence"][0]
            < md.weights(levels(residence=fs.RES_EXACT, **other))[1]["residence"][0])


def test_posterior_shares_the_mass_among_candidates_and_nobody() -> None:
    # two signatures: one with two equal candidates, one with a single strong one
    starts = np.array([0, 2], dtype=np.int64)
    w = np.array([20.0, 20.0, 30.0])
    prior = -16.0
    p = fs.posterior(starts, w, prior)
    odds = 2.0 ** 4
    assert p[0] == pytest.approx(odds / (1 + 2 * odds)) and p[0] == pytest.approx(p[1])
    assert p[2] == pytest.approx(2.0 ** 14 / (1 + 2.0 ** 14))
    # voters left uncompared (a crowded name) take their share
    crowded = fs.posterior(starts, w, prior, np.array([0.0, 2.0 ** 14]))
    assert crowded[2] == pytest.approx(0.5, abs=1e-4)
    assert crowded[0] == pytest.approx(p[0])
    # huge weights do not overflow
    assert fs.posterior(np.array([0]), np.array([5000.0]), 0.0)[0] == pytest.approx(1.0)
    assert len(fs.posterior(np.zeros(0, dtype=np.int64), np.zeros(0), 0.0)) == 0


def test_the_prior_of_one_voter() -> None:
    md = model()
    assert md.prior == pytest.approx(math.log2(0.9 / (N * 0.1)))
    same = md.pair_priors(np.array([True, False, True]), np.array([10_000, 10_000, 0]))
    q = md.in_county_share
    assert same[0] == pytest.approx(math.log2(0.9 * q / (10_000 * 0.1)))
    assert same[1] == pytest.approx(math.log2(0.9 * (1 - q) / ((N - 10_000) * 0.1)))
    assert same[2] == pytest.approx(md.prior)  # a county the roll lacks: anyone


def test_u_from_counts_smooths_and_falls_back() -> None:
    counts = {c: np.zeros(len(fs.LEVELS[c])) for c in fs.COMPARISONS}
    counts["first"][fs.FIRST_DIFF] = 99_999
    counts["birth"][0] = 100_000  # signatures give no birth date
    fallback = {c: np.ones(len(fs.LEVELS[c])) * 10 for c in fs.COMPARISONS}
    fallback["birth"] = np.array([0, 500, 0, 0, 99_500], dtype=float)
    u = fs.u_from_counts(counts, fallback)
    assert all(sum(v) == pytest.approx(1.0) for v in u.values())
    assert all(min(v) > 0 for v in u.values())
    assert u["first"][fs.FIRST_DIFF] > 0.99
    # birth given: the voters' random pairs say how often it agrees
    b = np.asarray(u["birth"])
    assert b[fs.BIRTH_EXACT] / b[1:].sum() == pytest.approx(501 / 100_005, rel=1e-3)


def test_em_recovers_a_planted_mixture() -> None:
    """Signatures whose candidates are levels drawn from known m (the signer, for 80 %)
    and u (the others): EM, without labels, finds m and the registered share. A small
    roll, so that nearly every planted signer stands out from the prior."""
    voters = 5_000
    rng = np.random.default_rng(5)
    true = model()
    signatures, per = 3_000, 4
    rows: dict[str, list[int]] = {c: [] for c in fs.COMPARISONS}
    registered = rng.random(signatures) < 0.8
    for signed in registered:
        for k in range(per):
            src = true.m if (signed and k == 0) else true.u
            for c in fs.COMPARISONS:
                rows[c].append(int(rng.choice(len(src[c]), p=np.asarray(src[c]) / sum(src[c]))))
    n = signatures * per
    lv = fs.Levels(**{c: np.array(v, dtype=np.int8) for c, v in rows.items()},
                   n_first=np.full(n, 500, np.int32), n_last=np.full(n, 400, np.int32),
                   n_addr=np.full(n, 40, np.int32), n_last_addr=np.full(n, 40, np.int32),
                   swapped=np.zeros(n, dtype=bool))
    # term frequencies matching u's exact levels, so that the model is the one planted
    # (and one voter of the surname at the address: the planted levels are independent)
    lv.n_first[:] = round(true.u["first"][1] * voters)
    lv.n_last[:] = round(true.u["last"][1] * voters)
    lv.n_addr[:] = max(round(true.u["residence"][1] * voters), 1)
    lv.n_last_addr[:] = 1
    start = fs.Model(m=fs.initial_m(), u=true.u, registered_share=0.5, voters=voters)
    res = fs.train_em(start, lv, np.arange(0, n, per, dtype=np.int64), signatures,
                      np.ones(n, dtype=bool), np.full(n, voters, dtype=np.int64))
    assert res.converged
    assert res.model.registered_share == pytest.approx(registered.mean(), abs=0.03)
    for c in ("first", "last", "residence"):
        got, want = np.asarray(res.model.m[c])[1:], np.asarray(true.m[c])[1:]
        assert np.abs(got / got.sum() - want / want.sum()).max() < 0.05, c
    # no pair at all: the prior's m (here the generic start), nothing iterated
    none = fs.train_em(fs.Model(m=fs.initial_m(), u=true.u, registered_share=0.5, voters=voters),
                       lv.take(np.zeros(0, dtype=np.int64)), np.zeros(0, dtype=np.int64),
                       10, np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64))
    assert none.iterations == 0 and none.converged
    for c in fs.COMPARISONS:
        want = np.asarray(fs.initial_m()[c])
        assert np.allclose(none.model.m[c], want / want.sum()), c
    assert none.model.registered_share == pytest.approx(
        fs.PRIOR_SIGNATURES * 0.75 / (10 + fs.PRIOR_SIGNATURES))


def test_the_prior_does_not_outweigh_a_seldom_filled_field() -> None:
    """A field most matched pairs leave blank (a suffix): the prior's fifty pairs leave it
    blank as often, so the few matches that give it decide its levels. A written suffix
    that agreed every time it was given keeps "conflict" rare under a match."""
    x = np.array([4_000.0, 40.0, 0.0])  # 1 % give a suffix; all of those agree
    centre = np.asarray(fs.initial_m()["suffix"])
    m = fs._with_prior(x, centre, True)
    assert m.sum() == pytest.approx(1.0)
    assert m[2] / (m[1] + m[2]) < 0.02
    # the old way (all fifty prior pairs filling the field in) gave it about a fifth
    old = x + fs.PRIOR_MATCHES * centre
    assert old[2] / (old[1] + old[2]) > 0.1
    # no data: the prior's own shape
    assert np.allclose(fs._with_prior(np.zeros(3), centre, True), centre / centre.sum())
    # a comparison without a missing level: plain pseudo-counts
    y = np.array([0.0, 10.0, 5.0, 5.0])
    c4 = np.full(4, 0.25)
    assert np.allclose(fs._with_prior(y, c4, False), (y + 50 * c4) / (y + 50 * c4).sum())


def test_an_unregistered_household_member_is_counted_once_per_household() -> None:
    """Signature 0 has two candidates of one household (surname exact, address exact) and
    one of another household whose address does not agree; signature 1 has none in a
    household. The household hypothesis counts household A once, at the evidence of its
    surname and address, over the county's households."""
    md = model()
    lv = levels(3, last=fs.LAST_EXACT, residence=fs.RES_EXACT, n_last_addr=2, n_last=50)
    lv.residence[2] = fs.RES_LOCALITY
    lv2 = levels(1, last=fs.LAST_TYPO, residence=fs.RES_EXACT)
    both = fs.Levels(**{k: np.concatenate([getattr(lv, k), getattr(lv2, k)]) for k in (
        *fs.COMPARISONS, "n_first", "n_last", "n_addr", "n_last_addr", "swapped")})
    _, parts = md.weights(both)
    starts = np.array([0, 3], dtype=np.int64)
    key = np.array([7, 7, 9, 7], dtype=np.uint64)
    households = np.full(4, 1000, dtype=np.int64)
    h = fs.household_odds(starts, both, parts, key, households)
    w = parts["last"][0] + parts["residence"][0]
    assert h[0] == pytest.approx(2.0 ** w / 1000)
    assert h[1] == 0.0
    # read swapped, a pair is no household evidence
    both.swapped[:] = True
    assert fs.household_odds(starts, both, parts, key, households)[0] == 0.0
