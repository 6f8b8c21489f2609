"""Benchmark: a 3-layer student distilled from an SST-2 `full` function — accuracy vs speed.

    python -u bench/distill.py                    # 4,000 + 4,000 rows: about 12 min on 2 cores
    python -u bench/distill.py --quick            # 600 + 600 rows, to check the script

The teacher is all-MiniLM-L6-v2 fine-tuned (`full`) on the first --train rows of a seeded
shuffle of SST-2 train (early stopping on 10% of them, held out). The student keeps layers
0, 2, 4 of the teacher's encoder and learns the teacher's soft labels on the same rows (mixed
with their gold labels) plus the next --extra rows of train as unlabelled texts. Both run on
the same 872 dev sentences in the same process, alternately, best of --repeats: dev accuracy
and texts/s of `fn.logits` (tokenizing, length-sorted token-budget batches, the encoder, the
head; no result cache).
"""

from __future__ import annotations

import argparse
import random
import time

from _common import DATA, print_header, read_tsv

import funcformer


def texts_per_second(fn: funcformer.Function, texts: list[str]) -> float:
    started = time.perf_counter()
    fn.logits(texts)
    return len(texts) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=4000, help="labelled rows (teacher)")
    parser.add_argument("--extra", type=int, default=4000, help="unlabelled rows (student)")
    parser.add_argument("--epochs", type=int, default=1, help="teacher epochs")
    parser.add_argument("--student-epochs", type=int, default=3)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="student's; default: the library's (1e-4)")
    parser.add_argument("--label-weight", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.train, args.extra = 600, 600
    print_header()
    rows = read_tsv(DATA / "sst2/train.tsv")
    random.Random(args.seed).shuffle(rows)
    labelled = rows[:args.train]
    unlabeled = [text for text, _ in rows[args.train:args.train + args.extra]]
    dev = read_tsv(DATA / "sst2/dev.tsv")
    dev_texts = [text for text, _ in dev]

    started = time.perf_counter()
    teacher = funcformer.train("classify", labelled, method="full", epochs=args.epochs,
                               progress=False)
    teacher_seconds = time.perf_counter() - started
    print(f"teacher: full, {len(labelled)} rows, {args.epochs} epoch(s): "
          f"{teacher_seconds:.0f}s", flush=True)
    started = time.perf_counter()
    student = funcformer.distill(teacher, student_layers=args.layers, data=labelled,
                                 unlabeled=unlabeled, epochs=args.student_epochs,
                                 learning_rate=args.learning_rate,
                                 label_weight=args.label_weight,
                                 temperature=args.temperature, progress=False)
    student_seconds = time.perf_counter() - started
    info = student.manifest.training["distill"]
    print(f"student: layers {info['kept_layers']} of {info['teacher_layers']}, "
          f"{info['labelled']} labelled + {info['unlabeled']} unlabelled texts, "
          f"{args.student_epochs} epoch(s), learning rate "
          f"{student.manifest.config['learning_rate']}, temperature {args.temperature}, "
          f"label weight {args.label_weight}: {student_seconds:.0f}s "
          f"(held-out agreement with the teacher "
          f"{student.metrics.get('held_out_teacher_agreement', float('nan')):.4f})\n",
          flush=True)

    speeds: dict[str, list[float]] = {"teacher": [], "student": []}
    for _ in range(args.repeats):  # alternate, so both see the same machine load
        for name, fn in (("teacher", teacher), ("student", student)):
            speeds[name].append(texts_per_second(fn, dev_texts))
    accuracy = {name: fn.evaluate(dev)["accuracy"]
                for name, fn in (("teacher", teacher), ("student", student))}
    agree = sum(a.label == b.label for a, b in zip(teacher(dev_texts), student(dev_texts),
                                                   strict=True)) / len(dev_texts)
    best = {name: max(values) for name, values in speeds.items()}
    print(f"SST-2 dev ({len(dev_texts)} sentences), best of {args.repeats}:\n")
    print("| function | layers | dev accuracy | texts/s | speed-up |")
    print("|---|---|---|---|---|")
    print(f"| teacher (full) | {info['teacher_layers']} | {accuracy['teacher']:.4f} | "
          f"{best['teacher']:.0f} | 1.00x |")
    print(f"| student (distilled) | {len(info['kept_layers'])} | {accuracy['student']:.4f} | "
          f"{best['student']:.0f} | {best['student'] / best['teacher']:.2f}x |")
    drop = 100 * (accuracy["teacher"] - accuracy["student"])
    print(f"\naccuracy drop: {drop:.2f} points; student agrees with the teacher on "
          f"{100 * agree:.1f}% of dev; goal: <= 2 points for >= 1.8x texts/s")


if __name__ == "__main__":
    main()
