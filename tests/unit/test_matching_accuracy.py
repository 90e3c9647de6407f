"""Regression guard for the matcher's accuracy on a small synthetic petition (error rates,
never times): the bars of issue 3 on a seed the thresholds were not chosen on."""

from __future__ import annotations

from pathlib import Path

import pytest

from sigverify_cli.synth import SynthSpec, format_accuracy, generate
from sigverify_matching.baseline import BaselineMatcher
from sigverify_matching.domain import SignatureInput
from sigverify_matching.evaluate import evaluate, read_roll_csv

SPEC = SynthSpec(voters=20_000, signatures=4_000, seed=31, batch_size=500,
                 counties=("Los Angeles", "Fresno", "Marin", "Alameda"))


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return generate(Path(tmp_path_factory.mktemp("synth")), SPEC)


def test_accuracy_bars_hold(generated) -> None:  # type: ignore[no-untyped-def]
    acc = evaluate(generated)
    rates = acc.rates()
    report = format_accuracy(acc)
    assert acc.signatures == SPEC.signatures
    assert rates["false_accept_rate"] <= 0.001, report
    assert rates["false_reject_rate"] <= 0.005, report
    assert rates["review_rate"] <= 0.03, report
    assert rates["agreement"] >= 0.95, report


def test_baseline_matches_exact_rows(generated) -> None:  # type: ignore[no-untyped-def]
    voters = list(read_roll_csv(generated.roll_csv))[:50]
    m = BaselineMatcher.build(voters)
    v = voters[0]
    s = SignatureInput(first_name=v.first_name, middle_name="", last_name=v.last_name,
                       street=v.street, unit="", city="", zip=v.zip, county=v.county,
                       signed_on=None)
    assert m.match(s)[0] == v.voter_id
    assert m.match(SignatureInput("Q", "", "Zzyzx", "1 Nowhere", "", "", "", v.county, None)) == (
        "", 0.0)
    assert m.match(SignatureInput("Q", "", "Zzyzx", "1 Nowhere", "", "", "", "Atlantis", None)) == (
        "", 0.0)
