"""Scoring a verification run against a truth file: pure code, the only I/O is reading CSVs.

A truth file (``synth.TRUTH_COLUMNS``; extra columns are ignored) says for every batch row
what a correct verification decides: ``expected_status`` (VALID | INVALID),
``expected_reason`` and the ``voter_id`` of the person who signed (empty for someone not on
the roll). Results are keyed by (batch file name, line) and hold the system's status and
reason, and optionally the voter it linked the signature to.

The figures (``Accuracy``):

- **false accept**: a count that is not the signer's own: counted VALID where the truth says
  INVALID, or (when the results carry voter ids) counted VALID for a voter other than the
  one who signed; ``rates()["false_accept_rate"]`` is of all signatures. Not a false accept:
  a **stand-in** (``stand_in``), a signature the truth calls a DUPLICATE of voter V that
  was counted for V while no other signature was counted for V: V signed twice, the
  signature the truth counts (the first) was not recognised, and the later one counts in
  its place, as a county's would; V is counted once, as the truth wants. The unrecognised
  first signature stays a false reject.
- **false reject**: the truth says VALID, the system INVALID; ``false_reject_rate`` is of all
  signatures (as the README's bars are), ``valid_rejected_rate`` of the valid ones.
- **review**: the system said REVIEW; ``review_rate`` of all signatures.
- **agreement**: status and reason both as expected (a VALID result with an empty reason
  counts as MATCHED); ``by_expected_reason`` and ``confusion`` break it down, and
  ``confusion_table`` gives the whole expected x actual table (agreements on the diagonal).
- **links** (only when the results carry voter ids): precision, recall and F1 of the
  signature -> voter links. A true link is (signature, truth voter_id) for every signature
  whose truth names a voter and whose expected reason is not INCOMPLETE (intake never
  sends a row without a printed name or a street to the matcher, so it cannot be linked).
  A predicted link is (signature, result voter_id) for every result with a voter id whose
  status is not REVIEW (a review is no link yet) nor NOT_SAMPLED; INVALID results count when
  they name a voter (a duplicate, an inactive voter, a wrong county are links to a voter).
  precision = correct / predicted, recall = correct / true, F1 their harmonic mean; a run
  with nothing predicted (or nothing to find) has precision (recall) 1.0 by convention.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

MISSING = "MISSING"
REVIEW = "REVIEW"

#: (batch file name, line) -> (status, reason) or (status, reason, voter_id).
Results = Mapping[tuple[str, int], tuple[str, str] | tuple[str, str, str]]


@dataclass(frozen=True)
class Linkage:
    true_links: int          # signatures the truth links to a voter (INCOMPLETE left out)
    predicted: int           # results naming a voter, REVIEW and NOT_SAMPLED left out
    correct: int             # predicted links to the truth's voter

    @property
    def precision(self) -> float:
        return self.correct / self.predicted if self.predicted else 1.0

    @property
    def recall(self) -> float:
        return self.correct / self.true_links if self.true_links else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


@dataclass(frozen=True)
class Accuracy:
    signatures: int
    agree: int                       # status and reason both as expected
    false_accept: int                # counted VALID, truth says INVALID
    false_reject: int                # truth VALID, system INVALID
    to_review: int                   # system says REVIEW
    by_expected_reason: dict[str, tuple[int, int]]   # reason -> (expected, agreed)
    confusion: dict[tuple[str, str], int]            # (expected_reason, got_reason) -> count
    valid: int = 0                   # signatures the truth says VALID
    links: Linkage | None = None     # when the results carry voter ids
    stand_in: int = 0                # a DUPLICATE counted in place of its voter's first
    wrong_voter: int = 0             # counted VALID for another voter (in false_accept)

    def rates(self) -> dict[str, float]:
        n = self.signatures or 1
        return {
            "false_accept_rate": self.false_accept / n,
            "false_reject_rate": self.false_reject / n,
            "review_rate": self.to_review / n,
            "agreement": self.agree / n,
            "valid_rejected_rate": self.false_reject / (self.valid or 1),
        }

    def confusion_table(self) -> dict[tuple[str, str], int]:
        """Expected reason x actual reason (REVIEW, MISSING as such), agreements included."""
        table: Counter[tuple[str, str]] = Counter(self.confusion)
        for reason, (_, agreed) in self.by_expected_reason.items():
            if agreed:
                table[reason, reason] += agreed
        return dict(sorted(table.items()))


def _actual(status: str, reason: str) -> str:
    if status == REVIEW:
        return REVIEW
    return reason or status or MISSING


def compare(truth_csv: Path, results: Results) -> Accuracy:
    """Score the system's decisions against the truth.

    ``results`` maps (batch file name, line) to (status, reason[, voter_id]). A VALID
    decision with an empty reason counts as MATCHED. In ``confusion`` a REVIEW decision is
    labelled ``REVIEW``, a row the system did not decide at all ``MISSING``, and a result with
    no reason by its status (``NOT_SAMPLED``). Rows of ``results`` that the truth does not
    know are ignored. Linkage is scored only when some result carries a voter id element.
    """
    n = agree = fa = fr = review = valid = stand_in = wrong_voter = 0
    true_links = predicted = correct = 0
    with_links = any(len(v) >= 3 for v in results.values())
    # Signatures counted per voter, for the stand-ins.
    counted = Counter(v[2].strip() for v in results.values()
                      if len(v) >= 3 and v[0].strip().upper() == "VALID" and v[2].strip())
    by: dict[str, list[int]] = {}
    confusion: Counter[tuple[str, str]] = Counter()
    with Path(truth_csv).open(newline="", encoding="utf-8") as fh:
        for t in csv.DictReader(fh):
            n += 1
            exp_status, exp_reason = t["expected_status"], t["expected_reason"]
            exp_voter = (t.get("voter_id") or "").strip()
            valid += exp_status == "VALID"
            if exp_voter and exp_reason != "INCOMPLETE":
                true_links += 1
            counts = by.setdefault(exp_reason, [0, 0])
            counts[0] += 1
            got = results.get((t["batch_file"], int(t["line"])))
            if got is None:
                confusion[exp_reason, MISSING] += 1
                continue
            status, reason = got[0].strip().upper(), (got[1] or "").strip().upper()
            if status == "VALID" and not reason:
                reason = "MATCHED"
            voter = got[2].strip() if len(got) >= 3 else ""
            if voter and status not in (REVIEW, "NOT_SAMPLED"):
                predicted += 1
                if exp_voter and exp_reason != "INCOMPLETE" and voter == exp_voter:
                    correct += 1
            if status == REVIEW:
                review += 1
            elif status == "VALID" and exp_status == "INVALID":
                if (exp_reason == "DUPLICATE" and exp_voter and voter == exp_voter
                        and counted[voter] == 1):
                    stand_in += 1
                else:
                    fa += 1
            elif status == "VALID" and voter and exp_voter and voter != exp_voter:
                fa += 1
                wrong_voter += 1
            elif status == "INVALID" and exp_status == "VALID":
                fr += 1
            if status == exp_status and reason == exp_reason:
                agree += 1
                counts[1] += 1
            else:
                confusion[exp_reason, _actual(status, reason)] += 1
    return Accuracy(
        signatures=n, agree=agree, false_accept=fa, false_reject=fr, to_review=review,
        by_expected_reason={r: (e, a) for r, (e, a) in sorted(by.items())},
        confusion=dict(sorted(confusion.items(), key=lambda kv: (-kv[1], kv[0]))),
        valid=valid,
        links=Linkage(true_links, predicted, correct) if with_links else None,
        stand_in=stand_in, wrong_voter=wrong_voter,
    )


def read_results_csv(path: Path, files: Mapping[str, str] | None = None
                     ) -> dict[tuple[str, int], tuple[str, str, str]]:
    """A ``sigverify results export`` file as results for ``compare``.

    The export names batches by their server id; ``files`` maps each batch id to the batch
    file's name (what the truth uses; ``load_batch_map`` reads one from a CSV). Without it
    the batch id is taken as the file name. A row whose batch is not in ``files`` is keyed by
    its batch id, so the truth ignores it. Raises ValueError naming the row on a bad line.
    """
    out: dict[tuple[str, int], tuple[str, str, str]] = {}
    with Path(path).open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"batch_id", "line", "status", "reason", "voter_id"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{Path(path).name}: results header lacks {', '.join(sorted(missing))}")
        for r in reader:
            batch = r["batch_id"].strip()
            line = r["line"].strip()
            if not line.isdigit():
                raise ValueError(f"{Path(path).name}: record {reader.line_num}: line "
                                 f"{line!r} is not a positive whole number")
            name = files.get(batch, batch) if files is not None else batch
            out[name, int(line)] = (r["status"], r["reason"], r["voter_id"])
    return out


def load_batch_map(path: Path) -> dict[str, str]:
    """``batch_id,batch_file`` rows (batch id -> file name), as ``eval-data`` expects."""
    with Path(path).open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not {"batch_id", "batch_file"} <= set(reader.fieldnames or ()):
            raise ValueError(f"{Path(path).name}: header must have batch_id,batch_file")
        return {r["batch_id"].strip(): Path(r["batch_file"].strip()).name for r in reader}


def format_accuracy(acc: Accuracy, top: int = 8) -> str:
    """A short table for the terminal."""
    r = acc.rates()
    lines = [
        f"signatures {acc.signatures:,}   agreement {r['agreement']:.2%}   "
        f"false accept {acc.false_accept:,} ({r['false_accept_rate']:.2%})   "
        f"false reject {acc.false_reject:,} ({r['false_reject_rate']:.2%})   "
        f"review {acc.to_review:,} ({r['review_rate']:.2%})",
    ]
    if acc.valid:
        lines.append(f"valid signatures rejected {acc.false_reject:,} of {acc.valid:,} "
                     f"({r['valid_rejected_rate']:.3%})")
    if acc.stand_in or acc.wrong_voter:
        lines.append(f"false accepts counted for another voter {acc.wrong_voter:,}; "
                     f"duplicates counted in place of their voter's unrecognised first "
                     f"signature (not false accepts) {acc.stand_in:,}")
    if acc.links is not None:
        li = acc.links
        lines.append(f"links: precision {li.precision:.4f}   recall {li.recall:.4f}   "
                     f"F1 {li.f1:.4f}   ({li.correct:,} correct of {li.predicted:,} made, "
                     f"{li.true_links:,} true)")
    lines += ["", f"{'expected reason':<28}{'expected':>10}{'agreed':>10}{'rate':>9}"]
    for reason, (e, a) in sorted(acc.by_expected_reason.items(), key=lambda kv: -kv[1][0]):
        lines.append(f"{reason:<28}{e:>10,}{a:>10,}{(a / e if e else 0):>9.1%}")
    if acc.confusion:
        lines += ["", f"{'expected -> got (disagreements)':<50}{'count':>8}"]
        for (exp, got), k in list(acc.confusion.items())[:top]:
            lines.append(f"{exp + ' -> ' + got:<50}{k:>8,}")
        rest = len(acc.confusion) - top
        if rest > 0:
            lines.append(f"... and {rest} more")
    return "\n".join(lines)


def format_confusion(acc: Accuracy) -> str:
    """The whole expected (rows) x actual (columns) reason table."""
    table = acc.confusion_table()
    rows = sorted({e for e, _ in table})
    cols = sorted({g for _, g in table})
    width = max([len(c) for c in cols] + [6]) + 1
    corner = "expected \\ actual"
    head = f"{corner:<28}" + "".join(f"{c[:width - 1]:>{width}}" for c in cols)
    out = [head]
    for e in rows:
        out.append(f"{e:<28}" + "".join(f"{table.get((e, c), 0):>{width},}" for c in cols))
    return "\n".join(out)
