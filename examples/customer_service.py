"""Tutorial 1: a customer-service assistant (docs/tutorials/customer-service.md).

An intent classifier decides what a message asks for. Requests the shop can act on (where is
my order, cancel it, ...) go to their workflow; general questions go to a FAQ search function,
which answers or, when no entry is close enough, hands over to a person.

    python examples/customer_service.py            # the outdoor shop's data in examples/data
    python examples/customer_service.py --shared   # BANKING77 intents + StackFAQ questions
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import DATA, arguments, done, per_label, read_csv, read_shared

import funcformer

QUESTION = "general_question"
"""The intent whose messages go to the FAQ."""

WORKFLOWS = {
    "order_status": "Let me look that up. What is your order number?",
    "cancel_order": "I can cancel it if it has not shipped. Which order is it?",
    "return_item": "Returns are free within 30 days. I'll e-mail you a return label.",
    "payment_problem": "Sorry about that. I'm opening a ticket with our payments team.",
    "account_access": "I've sent a password-reset link to the e-mail address on your account.",
}


@dataclass
class Data:
    intents: Any            # text, label: what the classifier learns
    intents_test: Any
    faq: Any                # the FAQ entries: id, question, answer
    faq_columns: dict[str, str]
    calibration: Any        # queries with the id that answers them (empty: none does)
    faq_test: Any
    messages: list[str]     # a few messages to show the assistant's replies


def shop_data(quick: bool) -> Data:
    """The files in examples/data: an invented outdoor-clothing shop."""
    intents = read_csv(DATA / "intents.csv")
    return Data(
        intents=per_label(intents, 12) if quick else intents,
        intents_test=DATA / "intents_test.csv",
        faq=DATA / "faq.csv", faq_columns={"text_column": "question"},
        calibration=DATA / "faq_calibration.csv", faq_test=DATA / "faq_test.csv",
        messages=["Hi, my parcel still hasn't arrived",
                  "I want to send back the boots, they are too big",
                  "Are there student discounts?",
                  "How should I wash a merino jumper?",
                  "Do you sell fishing rods?"])


def shared_data(quick: bool) -> Data:
    """BANKING77's 77 intents (a bank's requests) plus StackFAQ's questions about web apps as
    the general questions; StackFAQ's answers are the FAQ."""
    n = 4 if quick else 12
    bank = read_shared("banking77/train.tsv")
    bank_test = read_shared("banking77/test.tsv")
    queries = [{"text": q["text"], "id": q["faq_id"], "group": q["group"]}
               for q in read_shared("stackfaq/queries.tsv")]
    asked = [q for q in queries if q["group"] == "0"]
    held = [q for q in queries if q["group"] == "1"]
    questions = [{"text": q["text"], "label": QUESTION} for q in per_label(asked, 1, key="id")]
    # Bank requests have no FAQ entry: they teach the FAQ when to stay silent.
    unanswerable = [{"text": r["text"], "id": ""} for r in per_label(bank_test, 1, seed=1)]
    return Data(
        intents=per_label(bank, n) + questions[: 40 if quick else 125],
        intents_test=per_label(bank_test, 1 if quick else 4)
        + [{"text": q["text"], "label": QUESTION} for q in per_label(held, 1, key="id")],
        faq=[{"id": r["faq_id"], "question": r["question"], "answer": r["answer"]}
             for r in read_shared("stackfaq/faq.tsv")],
        faq_columns={"text_column": "question"},
        calibration=per_label(asked, 1 if quick else 3, key="id") + unanswerable[:38],
        faq_test=per_label(held, 1 if quick else 2, key="id") + unanswerable[38:],
        messages=["I still haven't received my new card",
                  "How can I close my Facebook account for good?",
                  "Why was I charged a fee for withdrawing cash?",
                  "How can I make text strikethrough in GitHub markdown?",
                  "What's the best pizza place in Naples?"])


class Assistant:
    """Routes a message: a workflow for an actionable intent, else the FAQ, else a person."""

    def __init__(self, intents: funcformer.Function, faq: funcformer.Function,
                 min_score: float = 0.5) -> None:
        self.intents = intents
        self.faq = faq
        self.min_score = min_score

    def route(self, message: str) -> tuple[str, str]:
        """(where the message goes, the reply): ("intent:<label>", ...), ("faq:<id>", ...) or
        ("person", ...)."""
        intent = self.intents(message)
        if intent.label != QUESTION and intent.score >= self.min_score:
            reply = WORKFLOWS.get(intent.label, f"(the '{intent.label}' workflow starts here)")
            return f"intent:{intent.label}", reply
        answer = self.faq.answer(message)
        if answer.answered:
            return f"faq:{answer.id}", answer.answer
        return "person", "I'm passing you to a colleague who can help with that."


def end_to_end(assistant: Assistant, queries: Any) -> float:
    """Share of the FAQ test queries that get the right FAQ answer or, when the FAQ has none
    for them, no FAQ answer (a workflow or a person)."""
    rows = read_csv(queries) if isinstance(queries, Path) else queries
    right = 0
    for row in rows:
        where, _ = assistant.route(row["text"])
        right += where == f"faq:{row['id']}" if row["id"] else not where.startswith("faq:")
    return right / len(rows)


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    data = shared_data(args.quick) if args.shared else shop_data(args.quick)

    # 1. The intent classifier: a head on the frozen backbone trains in seconds.
    intents = funcformer.train("classify", data.intents, method="head",
                               epochs=10 if args.quick else None)
    metrics = intents.evaluate(data.intents_test)
    print(f"Intents: {len(intents.labels)} labels, test accuracy {metrics['accuracy']:.3f}, "
          f"macro-F1 {metrics['macro_f1']:.3f} ({metrics['examples']} messages)")

    # 2. The FAQ: an index of the questions; queries with known answers (and some without)
    # calibrate the similarity below which answer() says "no answer".
    faq = funcformer.train("search", data.faq, eval_data=data.calibration, **data.faq_columns)
    scores = faq.evaluate(data.faq_test)
    print(f"FAQ: {faq.manifest.options['documents']} entries, no-answer threshold "
          f"{faq.threshold:.3f}; test accuracy@1 {scores['accuracy_at_1']:.3f}, answer-or-abstain "
          f"right {scores['answer_accuracy']:.3f} ({scores['examples']} queries)")

    # 3. Route messages through both.
    assistant = Assistant(intents, faq)
    print(f"End to end: {end_to_end(assistant, data.faq_test):.3f} of the FAQ test queries get "
          "the right answer, or no FAQ answer when the FAQ has none")
    print("\nAssistant replies:")
    for message in data.messages:
        where, reply = assistant.route(message)
        if args.shared and where.startswith("faq:"):
            reply = "(StackFAQ's answer; the public data is not reprinted here)"
        print(f"  > {message}\n    [{where}] {reply[:100]}")

    # 4. Save both; load them back (or serve them: funcformer serve <out>).
    intents.save(args.out / "intents")
    faq.save(args.out / "faq")
    again = Assistant(funcformer.load(args.out / "intents"), funcformer.load(args.out / "faq"))
    assert [again.route(m) for m in data.messages] == [assistant.route(m) for m in data.messages]
    print(f"\nSaved to {args.out}/intents and {args.out}/faq; reloaded, same replies.")
    done(args)


if __name__ == "__main__":
    main()
