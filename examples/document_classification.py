"""Tutorial 4: document classification from few examples, then new labels as they appear
(docs/tutorials/document-classification.md).

Version 1 learns three news topics from 12 examples each. Health stories, then climate
stories, arrive later: each is an update of the function (a new label, a dozen examples, and
a small memory of the old labels' examples replayed) instead of a retraining from scratch.

    python examples/document_classification.py            # examples/data/news_*.csv
    python examples/document_classification.py --shared   # AG News: Sci/Tech arrives later
"""

from __future__ import annotations

from dataclasses import dataclass

from _common import DATA, arguments, done, per_label, read_csv, read_shared

import funcformer

MEMORY = 8
"""Examples remembered per label (chosen by herding) and replayed by each update."""


@dataclass
class Data:
    first: list[dict[str, str]]                       # version 1's examples
    arrivals: list[tuple[str, list[dict[str, str]]]]  # (new label, its examples), in order
    dev: list[dict[str, str]]                         # guides training and the update report
    test: list[dict[str, str]]                        # scores each version, never trained on


def news_data() -> Data:
    return Data(first=read_csv(DATA / "news_v1.csv"),
                arrivals=[("health", read_csv(DATA / "news_health.csv")),
                          ("climate", read_csv(DATA / "news_climate.csv"))],
                dev=read_csv(DATA / "news_dev.csv"), test=read_csv(DATA / "news_test.csv"))


def ag_news_data(quick: bool) -> Data:
    """AG News (descriptions only): World, Sports and Business from 8 examples each; Sci/Tech
    arrives later with 8. Dev and test are disjoint samples of its test split."""
    train = read_shared("ag_news/train_subset_description_only.tsv")
    first = per_label([r for r in train if r["label"] != "Sci/Tech"], 8)
    later = per_label([r for r in train if r["label"] == "Sci/Tech"], 8)
    n = 10 if quick else 50
    held = per_label(read_shared("ag_news/test_description_only.tsv"), 2 * n, seed=1)
    dev = per_label(held, n, seed=2)
    test = [r for r in held if r not in dev]
    return Data(first=first, arrivals=[("Sci/Tech", later)], dev=dev, test=test)


def known(rows: list[dict[str, str]], labels: list[str]) -> list[dict[str, str]]:
    return [r for r in rows if r["label"] in labels]


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    data = ag_news_data(args.quick) if args.shared else news_data()
    out = args.out / "topics"

    # 1. Version 1 from few examples. Without `method`, classify chooses from the data (few
    # examples per label: contrastive tuning of the encoder, then a head). `memory` keeps
    # MEMORY examples per label in the artifact for later updates.
    method = "head" if args.quick else None
    fn = funcformer.train("classify", data.first, method=method, memory=MEMORY,
                          eval_data=known(data.dev, sorted({r["label"] for r in data.first})))
    reason = fn.manifest.training.get("method_reason", "given")
    test = fn.evaluate(known(data.test, fn.labels))
    print(f"v1: {fn.labels}, method {fn.manifest.method} ({reason})\n"
          f"    test accuracy {test['accuracy']:.3f} on {test['examples']} documents")
    fn.save(out)

    # 2. New labels arrive: each update returns a new function; the old one is unchanged.
    for label, examples in data.arrivals:
        fn = fn.update(examples, eval_data=known(data.dev, [*fn.labels, label]))
        report = fn.manifest.training["update"]["report"]
        test = fn.evaluate(known(data.test, fn.labels))
        print(f"v{len(fn.manifest.versions)}: + {label!r} from {len(examples)} examples "
              f"({fn.manifest.training['update']['replayed']} remembered ones replayed)\n"
              f"    dev: old labels {report['old_labels_accuracy_before']:.3f} before, "
              f"{report['old_labels_accuracy_after']:.3f} after; new label "
              f"{report['new_labels_accuracy_after']:.3f}\n"
              f"    test accuracy {test['accuracy']:.3f} on {test['examples']} documents")
        fn.save(out)   # the same directory: a server watching it reloads the new version

    # 3. The lineage travels with the artifact.
    loaded = funcformer.load(out)
    print(f"\nSaved to {out}. Its versions:")
    for v in loaded.manifest.versions:
        digest, parent = (d.split(":")[-1][:12] if d else "-" for d in (v["digest"], v["parent"]))
        print(f"  v{v['version']}  {digest}  parent {parent:12}  {v['examples']:3d} examples  "
              f"{v['labels']} labels, new: {', '.join(v['new_labels'])}")
    print()
    for text in ["The striker scored a hat-trick in the cup final.",
                 "Floods swept the valley after the wettest winter on record."]:
        prediction = loaded(text)
        print(f"  {prediction.label:>10} {prediction.score:.2f}  {text}")
    done(args)


if __name__ == "__main__":
    main()
