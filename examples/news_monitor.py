"""Tutorial 2: financial-news sentiment monitoring (docs/tutorials/news-monitor.md).

A sentiment function reads a stream of headlines an hour at a time; when the share of negative
headlines in an hour rises well above its usual level, the monitor raises an alert.

    python examples/news_monitor.py            # trained on examples/data/headlines.csv
    python examples/news_monitor.py --shared   # trained on SST-2 movie reviews instead
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator
from pathlib import Path
from statistics import mean

from _common import DATA, arguments, done, per_label, read_csv, read_shared

import funcformer


def headlines(path: Path) -> Iterator[tuple[str, list[dict[str, str]]]]:
    """(hour, the headlines published in it), in time order, read from the file as it goes:
    a stand-in for a news feed."""
    with open(path, encoding="utf-8", newline="") as f:
        for hour, rows in itertools.groupby(csv.DictReader(f), key=lambda r: r["time"][:13]):
            yield hour, list(rows)


class Monitor:
    """Alerts when a window's negative share is at least `margin` above the baseline and at
    least `ratio` times it. The baseline is the mean share of the windows so far that raised
    no alert (a spike does not raise the bar for the next one); no alert before `warmup`
    windows have been seen."""

    def __init__(self, warmup: int = 3, margin: float = 0.2, ratio: float = 2.0) -> None:
        self.warmup, self.margin, self.ratio = warmup, margin, ratio
        self.calm: list[float] = []

    def observe(self, share: float) -> tuple[float | None, bool]:
        """(the baseline this window was compared with, whether it raises an alert)."""
        baseline = mean(self.calm) if len(self.calm) >= self.warmup else None
        alert = (baseline is not None and share >= baseline + self.margin
                 and share >= self.ratio * baseline)
        if not alert:
            self.calm.append(share)
        return baseline, alert


def training_data(shared: bool, quick: bool) -> list[dict[str, str]]:
    if not shared:
        rows = read_csv(DATA / "headlines.csv")        # 150 headlines, 3 labels
        return per_label(rows, 20) if quick else rows
    # SST-2: movie-review sentences, 0 = negative, 1 = positive. No neutral class.
    names = {"0": "negative", "1": "positive"}
    rows = per_label(read_shared("sst2/train.tsv"), 100 if quick else 500)
    return [{"text": r["text"], "label": names[r["label"]]} for r in rows]


def main() -> None:
    args = arguments(__doc__.splitlines()[0])

    # 1. A sentiment function: a head on the frozen backbone.
    sentiment = funcformer.train("classify", training_data(args.shared, args.quick),
                                 method="head", epochs=10 if args.quick else None)
    print(f"Sentiment function: labels {sentiment.labels}")

    # 2. Read the stream an hour at a time; one call per window predicts all its headlines.
    monitor = Monitor()
    right = total = 0
    print(f"\n{'hour':16}  headlines  negative  (labelled)  baseline")
    for hour, rows in headlines(DATA / "headline_stream.csv"):
        predictions = sentiment([r["text"] for r in rows])
        negative = [p.label == "negative" for p in predictions]
        share = sum(negative) / len(rows)
        true_share = sum(r["label"] == "negative" for r in rows) / len(rows)
        baseline, alert = monitor.observe(share)
        # Scored only where the function knows the label (SST-2 has no neutral class).
        right += sum(p.label == r["label"] for p, r in zip(predictions, rows, strict=True))
        total += sum(r["label"] in sentiment.labels for r in rows)
        print(f"{hour}:00  {len(rows):9d}  {share:8.2f}  {true_share:10.2f}  "
              f"{'-' if baseline is None else f'{baseline:.2f}':>8}"
              f"{'  ALERT: negative news spike' if alert else ''}")
        if alert:
            worst = sorted((p.scores["negative"], r["text"])
                           for p, r in zip(predictions, rows, strict=True))[-3:]
            for score, text in reversed(worst):
                print(f"      {score:.2f}  {text}")
    print(f"\nAccuracy against the stream's labels: {right / total:.3f} ({total} headlines)")

    sentiment.save(args.out / "news-sentiment")
    print(f"Saved to {args.out}/news-sentiment")
    done(args)


if __name__ == "__main__":
    main()
