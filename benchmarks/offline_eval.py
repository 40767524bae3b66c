"""Recall and false-positive rate of the offline detector on a labelled JSONL set, overall and per source.

Each line is {"text", "label", "source"} with label 1 = injection. `--split` reports the even rows (used while
writing the rules) apart from the odd rows (held out), so the held-out figures show how well the rules generalise.
`--model` adds the model stage (the model extra must be installed): rules + model at the calibrated threshold, and
a by-source split where each source is judged at the threshold calibrated on all the other sources. `--calibrate`
picks the model threshold on these rows (the lowest at which rules + model flag at most DEFAULT_EXTRA_FPR more of
the benign rows than the rules alone)::

    python benchmarks/offline_eval.py --split
    python benchmarks/offline_eval.py --data other.jsonl --threshold 0.6 --show-errors
    python benchmarks/offline_eval.py --model --calibrate --model-scores /tmp/nanoguard-dev-scores.json
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
from lockllm_wsgi.offline_scan import combined_score  # noqa: E402

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "eval" / "dev.jsonl"
# Source names are "owner/repo:path"; the table shows a shortened form to stay readable.
DEFAULT_SOURCE_WIDTH = 44
# Benign rows that rules + model may flag beyond the rules alone at the calibrated threshold: the model is worth
# its misses only while it adds almost no false positives (its own 0.5 flags ~8% of benign prompts).
DEFAULT_EXTRA_FPR = 0.01


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


def model_scores(rows: list[dict], cache: Path | None) -> list[float]:
    """NanoGuard's score of every row (minutes on two cores), read from / written to `cache` when given."""
    if cache is not None and cache.exists():
        scores = json.loads(cache.read_text())
        if len(scores) == len(rows):
            return scores
    from lockllm_wsgi.classifier import load_nanoguard

    model = load_nanoguard()
    scores = [model.score(row["text"]) for row in rows]
    if cache is not None:
        cache.write_text(json.dumps(scores))
    return scores


def false_positive_rate(rows: list[dict], flags: Iterable[bool]) -> float:
    benign = [hit for row, hit in zip(rows, flags) if not row["label"]]
    return sum(benign) / max(1, len(benign))


def calibrate(rows: list[dict], rule_scores: list[float], scores: list[float],
              extra_fpr: float = DEFAULT_EXTRA_FPR) -> float:
    """The lowest model threshold (one of the benign rows' own scores, or 1.0) at which rules + model flag at most
    `extra_fpr` of the benign rows beyond the rules alone."""
    rules_fpr = false_positive_rate(rows, (score >= DEFAULT_THRESHOLD for score in rule_scores))
    candidates = sorted({score for row, score in zip(rows, scores) if not row["label"]} | {1.0})
    for threshold in candidates:
        flags = (combined_score(rule, model, threshold) >= DEFAULT_THRESHOLD
                 for rule, model in zip(rule_scores, scores))
        if false_positive_rate(rows, flags) <= rules_fpr + extra_fpr:
            return threshold
    return 1.0


def by_source_split(rows: list[dict], rule_scores: list[float], scores: list[float]) -> list[tuple[dict, bool]]:
    """Each row judged at the model threshold calibrated on the rows of every other source."""
    results: list[tuple[dict, bool]] = []
    for source in sorted({short_source(row["source"]) for row in rows}):
        inside = [i for i, row in enumerate(rows) if short_source(row["source"]) == source]
        outside = [i for i, row in enumerate(rows) if short_source(row["source"]) != source]
        threshold = calibrate([rows[i] for i in outside], [rule_scores[i] for i in outside],
                              [scores[i] for i in outside])
        print(f"  {source[:DEFAULT_SOURCE_WIDTH]:<{DEFAULT_SOURCE_WIDTH}} threshold from the other sources: "
              f"{threshold:.6f}")
        results += [(rows[i], combined_score(rule_scores[i], scores[i], threshold) >= DEFAULT_THRESHOLD)
                    for i in inside]
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"JSONL file (default {DEFAULT_DATA})")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="flag at score >= this")
    parser.add_argument("--split", action="store_true", help="report even (dev) and odd (held-out) rows apart")
    parser.add_argument("--show-errors", action="store_true", help="print missed attacks and false positives")
    parser.add_argument("--model", action="store_true", help="also rules + model, and the by-source split")
    parser.add_argument("--calibrate", action="store_true", help="choose the model threshold on these rows")
    parser.add_argument("--model-scores", type=Path, help="JSON file caching the model's scores of these rows")
    args = parser.parse_args(argv)

    detector = OfflineDetector()
    rows = load(args.data)
    detections = [detector.detect(row["text"]) for row in rows]
    rule_scores = [detection.score for detection in detections]
    results = []
    for row, detection in zip(rows, detections):
        results.append((row, detection.score >= args.threshold))
        if args.show_errors and (detection.score >= args.threshold) != bool(row["label"]):
            kind = "MISS" if row["label"] else "FALSE+"
            print(f"{kind} {detection.score:.2f} {detection.families} {row['text'][:160]!r}")
    print(f"data: {args.data}  rows: {len(rows)}  threshold: {args.threshold}")
    report("rules alone, all rows", results)
    if args.split:
        report("rules alone, dev half (even rows)", results[0::2])
        report("rules alone, held-out half (odd rows)", results[1::2])
    if args.model or args.calibrate:
        from lockllm_wsgi.classifier import DEFAULT_MODEL_THRESHOLD

        scores = model_scores(rows, args.model_scores)
        threshold = DEFAULT_MODEL_THRESHOLD
        if args.calibrate:
            threshold = calibrate(rows, rule_scores, scores)
            print(f"\ncalibrated model threshold: {threshold:.6f} (rules + model flag at most {DEFAULT_EXTRA_FPR:.0%} "
                  f"more benign rows than the rules alone; in use: {DEFAULT_MODEL_THRESHOLD})")
        report("model alone at its own 0.5", [(row, score >= 0.5) for row, score in zip(rows, scores)])
        report(f"rules + model at {threshold:.6f}, all rows",
               [(row, combined_score(rule, model, threshold) >= DEFAULT_THRESHOLD)
                for row, rule, model in zip(rows, rule_scores, scores)])
        print("\nby-source split: each source judged at the threshold calibrated on the others")
        report("rules + model, by-source split", by_source_split(rows, rule_scores, scores))
    return 0


if __name__ == "__main__":
    sys.exit(main())
