"""The matcher's bulk shortcuts give what the plain per-item code gives.

``Decided.results()`` builds every result column-wise; ``Decided.result(i)`` is the plain
per-signature reading of the same arrays, kept as the reference. ``_round2`` is Python's
``round(x, 2)`` done in bulk. ``typo_keys`` finds the names one edit away through an index
of their one-deleted strings; ``typo_keys_by_scan`` compares with every name.
"""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sigverify_cli.synth import SynthSpec, generate
from sigverify_common.vocab import Decision
from sigverify_matching import engine
from sigverify_matching.columnar import (
    _NICK_NAMES,
    IndexBuilder,
    Vocab,
    VoterIndex,
    typo_keys,
    typo_keys_by_scan,
)
from sigverify_matching.domain import MatchConfig, SignatureInput
from sigverify_matching.evaluate import read_batches, read_roll_csv

SPEC = SynthSpec(voters=4_000, signatures=800, seed=11, batch_size=400, hostile=True,
                 counties=("Alameda", "Marin"))


@pytest.fixture(scope="module")
def petition(tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[VoterIndex, engine.fs.Model, list[SignatureInput]]:
    out = generate(Path(tmp_path_factory.mktemp("speed")), SPEC)
    builder = IndexBuilder(version=1)
    builder.add([(v.voter_id, v.first_name, v.middle_name, v.last_name, v.suffix, v.birth_date,
                  v.street, v.unit, v.city, v.zip, v.county, v.status, v.registered_on)
                 for v in read_roll_csv(out.roll_csv)])
    index = builder.finish()
    sigs = [r.signature for r in read_batches(out) if r.complete]
    return index, engine.train(index, sigs, u_pairs=200_000), sigs


@pytest.mark.parametrize("shown", [1, 3, 20])
def test_results_in_bulk_are_each_signatures_result(
        petition: tuple[VoterIndex, engine.fs.Model, list[SignatureInput]], shown: int) -> None:
    index, model, sigs = petition
    d = engine.match_batch(index, model, sigs, MatchConfig(max_candidates=shown))
    bulk = d.results()
    one_by_one = [d.result(i, int(d.counties[i])) for i in range(len(d))]
    assert bulk == one_by_one
    assert sum(len(r.candidates) for r in bulk) > len(bulk) * min(shown, 2) // 2
    # with other counties, the priors' wording follows them
    elsewhere = np.full(len(d), -1, dtype=np.int32)
    assert d.results(elsewhere) == [d.result(i, -1) for i in range(len(d))]


def test_results_without_evidence_columns(
        petition: tuple[VoterIndex, engine.fs.Model, list[SignatureInput]]) -> None:
    index, model, sigs = petition
    d = engine.match_batch(index, model, sigs[:50], MatchConfig())
    d.parts, d.priors = {}, np.zeros(0)
    assert d.results() == [d.result(i, int(d.counties[i])) for i in range(len(d))]
    assert all(c.evidence == () for r in d.results() for c in r.candidates)


def test_round2_is_pythons_round() -> None:
    rng = np.random.default_rng(4)
    x = np.concatenate([
        rng.normal(0, 30, 200_000),
        rng.integers(-200_000, 200_000, 50_000) / 1000,  # exact decimals with three places
        rng.integers(-200_000, 200_000, 50_000) / 200,  # halves of a cent, exactly
        [0.125, 2.675, -2.675, 1.005, 0.0, -0.0, 1e13, -1e15, np.inf, -np.inf],
    ])
    got = engine._round2(x)
    want = [round(v, 2) for v in x.tolist()]
    assert got == want
    assert [np.copysign(1, v) for v in got] == [np.copysign(1, v) for v in want]
    nan = engine._round2(np.array([np.nan]))
    assert len(nan) == 1 and nan[0] != nan[0]


def test_typo_keys_by_index_are_those_by_scanning_every_name() -> None:
    names = [n for group in _NICK_NAMES.values() for n in group]
    rng = random.Random(9)
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    queries = {"", "A", "ZZZZZZZZ", "K.C", "KC."}
    for n in rng.sample(names, 600):
        queries.add(n)
        s = list(n)
        i = rng.randrange(len(s))
        queries.add("".join([*s[:i], rng.choice(letters), *s[i + 1:]]))  # changed
        queries.add("".join([*s[:i], rng.choice(letters), *s[i:]]))  # added
        queries.add("".join(s[:i] + s[i + 1:]))  # dropped
        if i + 1 < len(s):
            queries.add("".join([*s[:i], s[i + 1], s[i], *s[i + 2:]]))  # swapped
        queries.add("".join(rng.choice(letters) for _ in range(len(s))))  # anything
    got = {q: typo_keys(q) for q in sorted(queries)}
    assert got == {q: typo_keys_by_scan(q) for q in sorted(queries)}
    assert sum(1 for k in got.values() if k) > len(queries) // 2


def test_house_slips_tried_only_where_possible_are_all_the_slips(
        petition: tuple[VoterIndex, engine.fs.Model, list[SignatureInput]]) -> None:
    index, _, sigs = petition
    b = engine.prepare(index, sigs)
    pairs = engine.candidates(index, b)
    rng = np.random.default_rng(2)
    s = np.concatenate([pairs.sig, rng.integers(0, b.n, 20_000)]).astype(np.int32)
    v = np.concatenate([pairs.voter, rng.integers(0, index.size, 20_000)]).astype(np.int32)
    co, vv = b.coders["house"], index.vocabs["house"]

    def slip(ua: np.ndarray, ub: np.ndarray) -> np.ndarray:
        a, bb = co.strs(ua), vv.strs(ub)
        longest = np.maximum(np.strings.str_len(a), np.strings.str_len(bb))
        transposed = np.fromiter((len(x) == len(y) == 2 and x == y[::-1] != y
                                  for x, y in zip(a.tolist(), bb.tolist(), strict=True)),
                                 dtype=bool, count=len(a))
        return np.asarray((engine._osa(a, bb) <= 1) & ((longest >= 3) | transposed))

    exact, similar = engine._house_levels(index, b, s, v, slip)
    want_exact, want_similar = engine._exact_or(b.cols["house"][s], index.cols["house"][v], slip)
    assert (exact == want_exact).all() and (similar == want_similar).all()
    assert similar.sum() > 10  # slips of the pen are there to find


@pytest.mark.parametrize(("left", "right", "n"), [
    (50, 40, 5_000),  # few possible pairs: marked in a table
    (3_000_000, 1_000, 5_000),  # many: sorted
    (1 << 31, 1 << 31, 2_000),  # codes too wide to pack in one word
    (5, 5, 0),
])
def test_distinct_pairs_are_numpys(left: int, right: int, n: int) -> None:
    rng = np.random.default_rng(left % 97 + n)
    a = rng.integers(0, left, n) + (left // 3)
    b = rng.integers(0, right, n)
    a, b = a[rng.integers(0, max(n, 1), n)], b[rng.integers(0, max(n, 1), n)]  # repeats
    ua, ub, inv = engine._unique(a, b)
    want, want_inv = np.unique(np.stack([a, b], axis=1), axis=0, return_inverse=True)
    assert ua.tolist() == want[:, 0].tolist() and ub.tolist() == want[:, 1].tolist()
    assert inv.ravel().tolist() == want_inv.ravel().tolist()
    assert (ua[inv] == a).all() and (ub[inv] == b).all()
    assert engine._distinct(a).tolist() == np.unique(a).tolist()


def test_vocab_strings_taken_from_the_decoded_vocabulary(
        petition: tuple[VoterIndex, engine.fs.Model, list[SignatureInput]]) -> None:
    index, _, _ = petition
    for name in ("given", "street", "house"):
        v = index.vocabs[name]
        codes = np.random.default_rng(3).integers(0, len(v), 500)
        assert v.strs(codes).tolist() == [v.text(int(c)) for c in codes]
        assert v.strs(codes[:0]).tolist() == []


def test_remembered_pair_answers_are_the_tests(
        petition: tuple[VoterIndex, engine.fs.Model, list[SignatureInput]]) -> None:
    index, _, sigs = petition
    b = engine.prepare(index, sigs)
    co, vv = b.coders["zip"], index.vocabs["zip"]
    calls: list[int] = []

    def near(ua: np.ndarray, ub: np.ndarray) -> np.ndarray:
        calls.append(len(ua))
        return np.asarray(engine._osa(co.strs(ua), vv.strs(ub)) <= 1)

    rng = np.random.default_rng(5)
    sc = np.concatenate([b.cols["zip"], rng.integers(-1, len(vv), 3_000)]).astype(np.int32)
    vc = rng.integers(-1, len(vv), len(sc)).astype(np.int32)
    vc[:len(b.cols["zip"])] = b.cols["zip"]  # the same zips, exactly
    want = engine._exact_or(sc, vc, near)
    index.cache.pop("pair_memo_zip", None)
    for _ in range(2):  # the second time from the table
        got = engine._exact_or(sc, vc, near, index, "zip")
        assert (got[0] == want[0]).all() and (got[1] == want[1]).all()
    assert got[1].sum() > 0
    assert len(calls) == 2 or calls[2] < calls[1]  # asked again only of the batch's own
    assert (index.cache["pair_memo_zip"] >= 0).sum() > 0


def test_levels_with_remembered_pairs_are_those_worked_out(
        petition: tuple[VoterIndex, engine.fs.Model, list[SignatureInput]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    index, _, sigs = petition
    rng = np.random.default_rng(8)

    def levels() -> list[list[int]]:
        out = []
        for part in (sigs[:300], sigs[300:]):  # a second batch meets the first one's table
            b = engine.prepare(index, part)
            pairs = engine.candidates(index, b)
            s = np.concatenate([pairs.sig, rng.integers(0, b.n, 5_000)]).astype(np.int32)
            v = np.concatenate([pairs.voter, rng.integers(0, index.size, 5_000)]).astype(np.int32)
            lv = engine.compare(index, b, s, v)
            out += [lv.first.tolist(), lv.middle.tolist(), lv.last.tolist(),
                    lv.residence.tolist()]
        return out

    for key in [k for k in index.cache if k.startswith("pair_memo_")]:
        del index.cache[key]
    remembered = levels()
    assert any(k.startswith("pair_memo_first") for k in index.cache)
    rng = np.random.default_rng(8)
    monkeypatch.setattr(engine, "MEMO_VOCAB", 0)
    assert levels() == remembered


@pytest.mark.parametrize("typo", [True, "near"])
def test_keys_shared_by_lookup_are_those_found_side_by_side(
        petition: tuple[VoterIndex, engine.fs.Model, list[SignatureInput]],
        typo: bool | str) -> None:
    index, _, sigs = petition
    b = engine.prepare(index, sigs)
    coder = b.coders["given"]
    known = len(index.vocabs["given"])
    odd = np.unique(b.cols["first"][b.cols["first"] >= known]).astype(np.int64)
    assert len(odd) > 5  # the hostile profile's misspelt given names
    rng = np.random.default_rng(12)
    codes = np.concatenate([odd, rng.choice(odd, 3_000)])
    table = engine._nick_rows(index, coder, codes, typo)
    # ids: the rows' own keys here and there, nickname rows of the roll, and padding
    ids = index.given_nick[rng.integers(0, known, len(codes))].copy()
    pick = rng.random(len(codes)) < 0.3
    ids[pick, 0] = table[pick, 0]
    ids[rng.random(ids.shape) < 0.2] = -1
    for width in (1, ids.shape[1]):
        x, y = table, ids[:, :width]
        want = ((x[:, :, None] == y[:, None, :]) & (x[:, :, None] >= 0)).any(axis=(1, 2))
        got = engine._shares(index, coder, codes, y, typo)
        assert got.tolist() == want.tolist()
        assert 0 < got.sum() < len(got)
    assert engine._shares(index, coder, codes[:0], ids[:0], typo).tolist() == []


def test_block_bounds_by_directory_are_searchsorted(
        petition: tuple[VoterIndex, engine.fs.Model, list[SignatureInput]]) -> None:
    index, _, _ = petition
    rng = np.random.default_rng(21)
    # the roll's own rules, and keys of a few huge blocks, many small ones and none
    crowded = np.sort(np.concatenate([
        np.repeat(rng.integers(0, 2**64 - 1, 5, dtype=np.uint64), 700),
        rng.integers(0, 2**64 - 1, 3_000, dtype=np.uint64),
        np.full(300, 2**64 - 1, dtype=np.uint64), np.zeros(40, dtype=np.uint64)]))
    rolls = [(index, rule) for rule in index.keys]
    rolls.append((SimpleNamespace(keys={"zl": (crowded, None)}, cache={}), "zl"))
    rolls.append((SimpleNamespace(keys={"zl": (crowded[:0], None)}, cache={}), "zl"))
    for ix, rule in rolls:
        vkeys = ix.keys[rule][0]
        q = np.sort(np.concatenate([
            vkeys[rng.integers(0, max(len(vkeys), 1), 2_000)] if len(vkeys) else vkeys,
            rng.integers(0, 2**64 - 1, 1_000, dtype=np.uint64),
            np.array([0, 1, 2**63, 2**64 - 1], dtype=np.uint64)]))
        lo, size = engine._block_bounds(ix, rule, q)  # type: ignore[arg-type]
        want_lo = np.searchsorted(vkeys, q, side="left")
        want_size = np.searchsorted(vkeys, q, side="right") - want_lo
        assert lo.tolist() == want_lo.tolist() and size.tolist() == want_size.tolist()
        assert len(vkeys) == 0 or size.max() > 0


def test_signatures_beyond_doubt_are_decided_as_with_every_rule(
        petition: tuple[VoterIndex, engine.fs.Model, list[SignatureInput]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The wide rules are asked only for the signatures the others leave in doubt: every
    signature is decided as with every rule asked for all, a doubtful one in every figure
    (its score and candidates too), and fewer pairs are compared."""
    index, model, sigs = petition
    monkeypatch.setattr(engine, "CASCADE", False)
    every = engine.match_batch(index, model, sigs, MatchConfig())
    want = every.results()
    monkeypatch.setattr(engine, "CASCADE", True)
    d = engine.match_batch(index, model, sigs, MatchConfig())
    got = d.results()
    assert [(r.decision, r.reason, r.voter_id) for r in got] == [
        (r.decision, r.reason, r.voter_id) for r in want]
    sure = engine._beyond_doubt(index, d.counties, d.pairs, d.levels, d.pair_probability,
                                MatchConfig())
    assert 0 < sure.sum() < len(sure)
    assert all(got[i].decision is Decision.MATCH for i in np.nonzero(sure)[0].tolist())
    assert all(got[i] == want[i] for i in np.nonzero(~sure)[0].tolist())
    assert len(d.pairs.sig) < len(every.pairs.sig)

    def doubtful_pairs(x: engine.Decided) -> list[tuple[int, int]]:
        keep = ~sure[x.pairs.sig]
        return list(zip(x.pairs.sig[keep].tolist(), x.pairs.voter[keep].tolist(), strict=True))

    assert doubtful_pairs(d) == doubtful_pairs(every)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="ABCZÑé \x00", max_size=4), max_size=30),
       st.lists(st.text(alphabet="ABCZ", min_size=1, max_size=4), max_size=20))
def test_vocab_codes_are_positions_of_the_strings(queries: list[str], known: list[str]) -> None:
    vocab, code_of = Vocab.of(known)
    got = vocab.codes(queries).tolist()
    # the ASCII reading of each string ('?' for the rest), numpy's bytes dropping trailing NULs
    want = [code_of.get(q.encode("ascii", "replace").rstrip(b"\x00").decode(), -1) if q else -1
            for q in queries]
    assert got == want


def test_a_warmed_index_decides_as_a_cold_one(
        petition: tuple[VoterIndex, engine.fs.Model, list[SignatureInput]]) -> None:
    index, model, sigs = petition
    cold = VoterIndex.loads(index.dumps())
    warmed = VoterIndex.loads(index.dumps())
    engine.warm(warmed)
    made = {k for k in warmed.cache if k.startswith("directory_")}
    assert made == {f"directory_{r}" for r in warmed.keys}
    assert "household_keys" in warmed.cache and not cold.cache
    assert (engine.match_batch(warmed, model, sigs, MatchConfig()).results()
            == engine.match_batch(cold, model, sigs, MatchConfig()).results())
