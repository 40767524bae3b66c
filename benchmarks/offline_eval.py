"""Recall and false-positive rate of the offline detector on a labelled JSONL set, overall and per source.

Each line is {"text", "label", "source"} with label 1 = injection. `--split` reports the even rows (used while
writing the rules) apart from the odd rows (held out), so the held-out figures show how well the rules generalise::

    python benchmarks/offline_eval.py --split
    python benchmarks/offline_eval.py --data other.jsonl --threshold 0.6 --show-errors
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Iterable

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from lockllm_wsgi.offline import DEFAULT_THRESHOLD, OfflineDetector  # noqa: E402

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "eval" / "dev.jsonl"
# Source names are "owner/repo:path"; the table shows a shortened form to stay readable.
DEFAULT_SOURCE_WIDTH = 44


class Tally:
    def __init__(self) -> None:
        self.attacks = self.caught = self.benign = self.flagged = 0

    def add(self, label: int, hit: bool) -> None:
        if label:
            self.attacks += 1
            self.caught += hit
        else:
            self.benign += 1
            self.flagged += hit

    def row(self, name: str) -> str:
        recall = f"{self.caught / self.attacks:.3f}" if self.attacks else "-"
        fpr = f"{self.flagged / self.benign:.3f}" if self.benign else "-"
        return (f"{name[:DEFAULT_SOURCE_WIDTH]:<{DEFAULT_SOURCE_WIDTH}} {self.caught:>5}/{self.attacks:<5} {recall:>7}"
                f" {self.flagged:>5}/{self.benign:<5} {fpr:>6}")


def load(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def short_source(source: str) -> str:
    owner_repo, _, file = source.partition(":")
    return f"{owner_repo.split('/')[-1]}:{file.split('/')[-1]}"


def report(title: str, rows: Iterable[tuple[dict, bool]]) -> None:
    overall = Tally()
    per_source: dict[str, Tally] = defaultdict(Tally)
    for row, hit in rows:
        overall.add(int(row["label"]), hit)
        per_source[short_source(row["source"])].add(int(row["label"]), hit)
    print(f"\n{title}")
    header = f"{'source':<{DEFAULT_SOURCE_WIDTH}} {'caught':>11} {'recall':>7} {'flagged':>11} {'FPR':>6}"
    print(header)
    print("-" * len(header))
    for source in sorted(per_source):
        print(per_source[source].row(source))
    print("-" * len(header))
    print(overall.row("overall"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"JSONL file (default {DEFAULT_DATA})")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="flag at score >= this")
    parser.add_argument("--split", action="store_true", help="report even (dev) and odd (held-out) rows apart")
    parser.add_argument("--show-errors", action="store_true", help="print missed attacks and false positives")
    args = parser.parse_args(argv)

    detector = OfflineDetector()
    rows = load(args.data)
    results = []
    for row in rows:
        detection = detector.detect(row["text"])
        results.append((row, detection.score >= args.threshold))
        if args.show_errors and (detection.score >= args.threshold) != bool(row["label"]):
            kind = "MISS" if row["label"] else "FALSE+"
            print(f"{kind} {detection.score:.2f} {detection.families} {row['text'][:160]!r}")
    print(f"data: {args.data}  rows: {len(rows)}  threshold: {args.threshold}")
    report("all rows", results)
    if args.split:
        report("dev half (even rows)", results[0::2])
        report("held-out half (odd rows)", results[1::2])
    return 0


if __name__ == "__main__":
    sys.exit(main())
