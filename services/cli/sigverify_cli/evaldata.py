"""Evaluation data sets for the matcher, and scoring a run against their truth.

``write_dataset`` writes one data set to a directory and says where its files are:

- ``synth``: the generator's default profile (``synth.generate``);
- ``hostile``: its hostile profile (``SynthSpec(hostile=True)``, see ``sigverify_cli.hostile``);
- ``febrl1`` .. ``febrl4``: the FEBRL benchmarks (``sigverify_cli.febrl``), ``holdout=True``
  for the variant with 10 % of the originals left out of the roll.

Every data set has a voter roll CSV, batch CSVs (each of one county, in submission order,
also listed in ``batches.csv`` as ``batch_file,county``) and a truth CSV
(``batch_file,line,expected_status,expected_reason,voter_id,noise``; FEBRL adds ``record``).
``score`` reads a ``sigverify results export`` file, maps its batch ids to batch file names
(the map the submission receipts give: ``batch_id,batch_file``) and scores it with
``sigverify_cli.scoring.compare``, links included.

On the command line (``sigverify eval-data``)::

    sigverify eval-data make hostile --out data/ [--voters N] [--signatures N] [--seed N]
    sigverify eval-data make febrl3 --out data/ [--holdout]
    sigverify eval-data make synth --out data/ --voters 22000000 --signatures 1000000 \\
        --california --shard-voters 2000000 --workers 2
    sigverify eval-data score --truth data/truth.csv --results results.csv \\
        --batches batch-ids.csv [--json]

This module imports the generators only when it runs, so the CLI stays quick to start.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

from sigverify_cli.scoring import (
    Accuracy,
    compare,
    format_accuracy,
    format_confusion,
    load_batch_map,
    read_results_csv,
)

KINDS = ("synth", "hostile", "febrl1", "febrl2", "febrl3", "febrl4")


@dataclass(frozen=True)
class EvalData:
    kind: str
    roll_csv: Path
    batches: tuple[tuple[Path, str], ...]   # (batch file, county), in submission order
    truth_csv: Path
    manifest_csv: Path                      # batches.csv: batch_file,county
    deadline: date                          # the petition's deadline the truth assumes
    accept_online: bool                     # whether the petition accepts online signatures
    voters: int
    signatures: int


def write_dataset(kind: str, out_dir: Path, *, voters: int = 100_000, signatures: int = 20_000,
                  seed: int = 7, batch_size: int = 1_000, holdout: bool = False,
                  california: bool = False, shard_voters: int = 0, workers: int = 1
                  ) -> EvalData:
    """Write a data set under ``out_dir``; see the module's docstring for the kinds.

    ``voters``, ``signatures``, ``seed``, ``batch_size``, ``california`` (all 58 counties) and
    ``shard_voters``/``workers`` (a sharded, bounded-memory run: ``synth.generate_sharded``)
    apply to ``synth`` and ``hostile``; ``holdout`` and ``batch_size`` to FEBRL.
    """
    out_dir = Path(out_dir)
    if kind in ("synth", "hostile"):
        from sigverify_cli import synth

        spec = synth.SynthSpec(voters=voters, signatures=signatures, seed=seed,
                               batch_size=batch_size, hostile=kind == "hostile")
        if california:
            spec = replace(spec, counties=synth.CALIFORNIA_COUNTIES)
        if shard_voters:
            out = synth.generate_sharded(out_dir, spec, shard_voters, workers)
        else:
            out = synth.generate(out_dir, spec)
        data = EvalData(kind, out.roll_csv, out.batches, out.truth_csv,
                        out_dir / "batches.csv", spec.deadline, spec.accept_online,
                        spec.voters, spec.signatures)
    elif kind.startswith("febrl"):
        from sigverify_cli import febrl

        fo = febrl.convert(kind, out_dir, holdout=holdout, batch_size=min(batch_size, 500))
        data = EvalData(kind + ("-holdout" if holdout else ""), fo.roll_csv, fo.batches,
                        fo.truth_csv, out_dir / "batches.csv", fo.deadline, False, fo.voters,
                        fo.signatures)
    else:
        raise ValueError(f"unknown data set {kind!r}: one of {', '.join(KINDS)}")
    with data.manifest_csv.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(("batch_file", "county"))
        for path, county in data.batches:
            w.writerow((path.name, county))
    return data


def score(truth_csv: Path, results_csv: Path,
          batch_map: Mapping[str, str] | Path | None = None) -> Accuracy:
    """Score a results export against a truth file; ``batch_map`` maps batch ids to batch
    file names (a mapping, or a ``batch_id,batch_file`` CSV)."""
    files = load_batch_map(batch_map) if isinstance(batch_map, Path) else batch_map
    return compare(truth_csv, read_results_csv(results_csv, files))


# --------------------------------------------------------------------------- command line


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    from sigverify_cli.main import _whole

    ev = sub.add_parser("eval-data", help="evaluation data sets (hostile synthetic, FEBRL) "
                        "and scoring a results export against their truth")
    evs = ev.add_subparsers(dest="action", required=True)
    mk = evs.add_parser("make", help="write a data set: roll, batches, batches.csv, truth")
    mk.add_argument("kind", choices=KINDS)
    mk.add_argument("--out", required=True, help="directory to write into")
    mk.add_argument("--voters", type=_whole("--voters", 1), default=100_000)
    mk.add_argument("--signatures", type=_whole("--signatures", 1), default=20_000)
    mk.add_argument("--seed", type=_whole("--seed", 0), default=7)
    mk.add_argument("--batch-size", type=_whole("--batch-size", 1), default=1_000)
    mk.add_argument("--hostile", action="store_true",
                    help="the hostile profile (the same as the kind 'hostile')")
    mk.add_argument("--holdout", action="store_true",
                    help="FEBRL: leave 10 %% of the originals out of the roll")
    mk.add_argument("--california", action="store_true", help="all 58 California counties")
    mk.add_argument("--shard-voters", type=_whole("--shard-voters", 0), default=0, metavar="N",
                    help="generate in shards of about N voters (bounded memory)")
    mk.add_argument("--workers", type=_whole("--workers", 1), default=1, help="shards generated at once")
    sc = evs.add_parser("score", help="score a `results export` CSV against a truth CSV")
    sc.add_argument("--truth", required=True)
    sc.add_argument("--results", required=True)
    sc.add_argument("--batches", default="",
                    help="batch_id,batch_file CSV (the batch ids the submissions returned)")
    sc.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    from sigverify_cli.main import console, err

    try:
        if args.action == "make":
            kind = "hostile" if args.hostile and args.kind == "synth" else args.kind
            data = write_dataset(
                kind, Path(args.out), voters=args.voters, signatures=args.signatures,
                seed=args.seed, batch_size=args.batch_size, holdout=args.holdout,
                california=args.california, shard_voters=args.shard_voters,
                workers=args.workers)
            console.print(f"{data.kind}: {data.voters:,} voters in {data.roll_csv}; "
                          f"{data.signatures:,} signatures in {len(data.batches)} batches "
                          f"(listed with their counties in {data.manifest_csv}); truth in "
                          f"{data.truth_csv}; deadline {data.deadline}, online signatures "
                          f"{'accepted' if data.accept_online else 'not accepted'}")
            return 0
        acc = score(Path(args.truth), Path(args.results),
                    Path(args.batches) if args.batches else None)
    except (ValueError, OSError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        return 2
    if args.json:
        links = acc.links
        print(json.dumps({
            "signatures": acc.signatures, "valid": acc.valid, "agree": acc.agree,
            "false_accept": acc.false_accept, "false_reject": acc.false_reject,
            "to_review": acc.to_review, "stand_in": acc.stand_in,
            "wrong_voter": acc.wrong_voter, **acc.rates(),
            "links": None if links is None else {
                "true": links.true_links, "predicted": links.predicted,
                "correct": links.correct, "precision": links.precision,
                "recall": links.recall, "f1": links.f1},
            "confusion": [{"expected": e, "actual": g, "count": k}
                          for (e, g), k in acc.confusion_table().items()],
        }, indent=2))
        return 0
    console.print(format_accuracy(acc), markup=False, highlight=False)
    console.print("")
    console.print(format_confusion(acc), markup=False, highlight=False)
    return 0
