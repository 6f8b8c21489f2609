"""Tutorial 3: recommendation (docs/tutorials/recommendation.md).

A bookshop recommends books to readers who describe themselves in their own words. Embedding
similarity (no training) finds books on the reader's subject; a `pair` function, trained on
(reader, book, relevant or not) examples, learns what similarity misses — whether a book suits
a beginner or an expert — and reranks those candidates with `rank`.

    python examples/recommendation.py
"""

from __future__ import annotations

import time

from _common import DATA, arguments, done, read_csv

import funcformer

CANDIDATES = 5
"""Books retrieved by embedding similarity for the pair function to rerank."""
TOP_K = 2
"""Books recommended to each reader (every reader has at least 2 relevant books)."""


class Bookshop:
    """Recommends books from `catalogue`: the nearest CANDIDATES books by embedding
    similarity, reranked by pair score + similarity."""

    def __init__(self, recommender: funcformer.Function, catalogue: list[str]) -> None:
        self.recommender = recommender
        self.catalogue = catalogue
        self.vectors = funcformer.embed(catalogue)        # (books, 384), normalised, once

    def similarity(self, reader: str) -> list[float]:
        """Cosine similarity of the reader's text to every book."""
        return (self.vectors @ funcformer.embed(reader)).tolist()

    def candidates(self, reader: str) -> list[int]:
        similarity = self.similarity(reader)
        return sorted(range(len(self.catalogue)), key=lambda i: -similarity[i])[:CANDIDATES]

    def recommend(self, reader: str, top_k: int = TOP_K) -> list[tuple[int, float, float]]:
        """(book index, pair score, similarity) of the `top_k` books for `reader`."""
        similarity = self.similarity(reader)
        candidates = self.candidates(reader)
        ranked = self.recommender.rank(reader, [self.catalogue[i] for i in candidates])
        # The pair function only learned to compare books of the reader's subject; adding the
        # similarity keeps an off-subject book that slipped into the candidates from rising.
        blended = sorted(ranked, key=lambda r: -(r.score + similarity[candidates[r.index]]))
        return [(candidates[r.index], r.score, similarity[candidates[r.index]])
                for r in blended[:top_k]]


def precision(picked: list[int], books: list[dict[str, str]], reader: dict[str, str]) -> float:
    """Share of the picked books on the reader's subject and at the reader's level."""
    return sum(books[i]["category"] == reader["category"] and books[i]["level"] == reader["level"]
               for i in picked) / len(picked)


def main() -> None:
    args = arguments(__doc__.splitlines()[0], shared=False)
    books = read_csv(DATA / "books.csv")                 # 40 books: 8 subjects x 2 levels
    catalogue = [f"{b['title']}: {b['description']}" for b in books]
    readers = read_csv(DATA / "readers_test.csv")        # 16 new readers, subject and level
    pairs = read_csv(DATA / "reader_pairs.csv")          # 320 (reader, book, label) rows
    if args.quick:
        pairs = pairs[:64]

    # 1. Train the pair function: text_a is the reader, text_b the book. `full` fine-tunes the
    # encoder reading both texts together (a cross-encoder).
    started = time.perf_counter()
    recommender = funcformer.train("pair", pairs, method="full", positive="relevant",
                                   epochs=1 if args.quick else 4, batch_size=8)
    held_out = ", ".join(f"{k} {v:.3f}" for k, v in recommender.metrics.items())
    print(f"Trained a pair function on {len(pairs)} pairs in "
          f"{time.perf_counter() - started:.0f} s ({held_out or 'no held-out metrics'})")

    # 2. Score three ways on readers the function never saw: similarity alone, the pair
    # function alone over the candidates, and the blend.
    shop = Bookshop(recommender, catalogue)
    alone, reranked, blended = [], [], []
    for reader in readers:
        candidates = shop.candidates(reader["text"])
        alone.append(precision(candidates[:TOP_K], books, reader))
        top = recommender.rank(reader["text"], [catalogue[i] for i in candidates], top_k=TOP_K)
        reranked.append(precision([candidates[r.index] for r in top], books, reader))
        blended.append(precision([i for i, _, _ in shop.recommend(reader["text"])], books, reader))
    n = len(readers)
    print(f"Precision@{TOP_K} over {n} new readers (right subject and level):")
    for name, values in [("embedding similarity alone", alone),
                         (f"pair function over the {CANDIDATES} candidates", reranked),
                         ("pair score + similarity (recommend)", blended)]:
        print(f"  {name:<38} {sum(values) / n:.3f}")

    # 3. Recommendations for a beginner and an expert.
    for reader in readers[4:6]:
        print(f"\n  {reader['text']}  ({reader['level']})")
        for i, score, similarity in shop.recommend(reader["text"]):
            print(f"    pair {score:.2f}  similarity {similarity:.2f}  {books[i]['title']} "
                  f"({books[i]['level']})")

    # 4. Save (the fine-tuned encoder is included) and load back.
    recommender.save(args.out / "book-recommender")
    again = Bookshop(funcformer.load(args.out / "book-recommender"), catalogue)
    first = readers[0]["text"]
    assert ([i for i, _, _ in again.recommend(first)]
            == [i for i, _, _ in shop.recommend(first)])
    print(f"\nSaved to {args.out}/book-recommender; reloaded, same recommendations.")
    done(args)


if __name__ == "__main__":
    main()
