"""Entity data for the `tag` task: reading IOB2 tokens + tags and text + character spans,
IOB2 decoding, entity-level metrics, and the word-level alignment between character spans
and a fast tokenizer's token windows.

Token rows become text by joining the tokens with single spaces, so inside there is one path:
text + character spans. Labels live on words (the tokenizer's pre-tokenized words:
whitespace/punctuation pieces, single characters for Chinese): a word's first sub-token
carries its IOB2 tag; in training the others carry I- (alignment "all") or nothing ("first");
in prediction a word's tag is read from its first sub-token.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._backbone import call_tokenizer
from .._data import Located, _blank, _json_type, _rows, _text
from .._errors import DataError, TaskError, is_whole

IGNORE = -100
"""Target of tokens the loss skips: special tokens, padding (and with alignment "first", a
word's sub-tokens after its first)."""
_TAG = re.compile(r"^[BI]-\S.*$")
ALIGNMENTS = ("first", "all")
Gold = tuple[int, int, str]  # (start, end, type): a character span and its entity type
Found = tuple[int, int, str, float]  # a predicted span and its score


@dataclass
class Tagged(Located):
    """Validated texts, their gold spans (None when read for prediction) and their places."""

    texts: list[str]
    spans: list[list[Gold]] | None
    source: str
    places: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, rows: Sequence[int]) -> Tagged:
        spans = [self.spans[i] for i in rows] if self.spans is not None else None
        return Tagged([self.texts[i] for i in rows], spans, self.source,
                      [self.places[i] for i in rows])

    def types(self) -> list[str]:
        return sorted({label for row in self.spans or [] for _, _, label in row})


def read_tagged(data: Any, *, text_column: str = "text", label_column: str = "label",
                labelled: bool = True) -> Tagged:
    """Read tokens + tags rows and text + spans rows (the format is detected per row).

    `label_column`, when not 'label', names the tags or spans field.

    >>> read_tagged([{"tokens": ["Ann", "met", "Bo"], "tags": ["B-PER", "O", "B-PER"]}]).spans
    [[(0, 3, 'PER'), (8, 10, 'PER')]]
    """
    if isinstance(data, Tagged):
        return data
    source, rows = _rows(data, text_column, None)
    texts, spans, places = [], [], []
    for row in rows:
        where = f"{source}, {row.place}"
        text, gold = _row(row.fields, where, text_column, label_column, labelled)
        texts.append(text)
        spans.append(gold)
        places.append(row.place)
    if not texts:
        raise DataError(f"{source}: no examples found. Fix: add rows with 'tokens' and 'tags', "
                        "or 'text' and 'spans'.")
    return Tagged(texts, spans if labelled else None, source, places)


def _row(fields: Mapping[str, Any], where: str, text_column: str, label_column: str,
         labelled: bool) -> tuple[str, list[Gold]]:
    if "tokens" in fields:
        text, offsets = _joined(fields["tokens"], where)
        name = _field(fields, ("tags", "ner_tags", label_column), where, labelled,
                      "give one IOB2 tag per token")
        if name is None:
            return text, []
        tags = _tags(fields[name], len(offsets), where, name)
        return text, [(offsets[a][0], offsets[b - 1][1], label) for a, b, label in chunks(tags)]
    if text_column not in fields:
        raise DataError(f"{where}: neither 'tokens' nor '{text_column}' is here (fields: "
                        f"{', '.join(map(str, fields)) or 'none'}). Fix: give 'tokens' with "
                        f"'tags' (IOB2), or '{text_column}' with 'spans'.")
    text = _text(fields, text_column, where)
    name = _field(fields, ("spans", label_column), where, labelled,
                  'add "spans": [] for a text without entities')
    return text, (_spans(fields[name], text, where, name) if name is not None else [])


def _field(fields: Mapping[str, Any], names: Sequence[str], where: str, required: bool,
           fix: str) -> str | None:
    for name in names:
        if name in fields:
            return name
    if required:
        raise DataError(f"{where}: field '{names[0]}' is missing. Fix: {fix}.")
    return None


def _joined(tokens: Any, where: str) -> tuple[str, list[tuple[int, int]]]:
    """Tokens joined by single spaces, and each token's (start, end) in the joined text."""
    if not isinstance(tokens, (list, tuple)):
        raise DataError(f"{where}, field 'tokens': expected a list of strings, got "
                        f"{_json_type(tokens)}. Fix: write the tokens as a JSON list.")
    if not tokens:
        raise DataError(f"{where}, field 'tokens': the list is empty. Fix: remove the row or "
                        "give its tokens.")
    offsets, position = [], 0
    for n, token in enumerate(tokens, start=1):
        if not isinstance(token, str) or _blank(token):
            raise DataError(f"{where}, field 'tokens': token {n} is {token!r}, not a word. Fix: "
                            "every token must be a string with a visible character (drop "
                            "empty or invisible tokens with their tags).")
        offsets.append((position, position + len(token)))
        position += len(token) + 1
    text = " ".join(tokens)
    return _text({"tokens": text}, "tokens", where), offsets


def _tags(tags: Any, count: int, where: str, name: str) -> list[str]:
    if not isinstance(tags, (list, tuple)):
        raise DataError(f"{where}, field '{name}': expected a list of tags, got "
                        f"{_json_type(tags)}. Fix: give one IOB2 tag per token.")
    if len(tags) != count:
        raise DataError(f"{where}, field '{name}': {len(tags)} tags for {count} tokens. Fix: "
                        "give exactly one tag per token.")
    for n, tag in enumerate(tags, start=1):
        if not isinstance(tag, str) or not (tag == "O" or _TAG.match(tag)):
            raise DataError(f"{where}, field '{name}': tag {n} is {tag!r}, which is not IOB2 "
                            "(O, B-TYPE, I-TYPE). Fix: write tags as names in the IOB2 scheme; "
                            "from BIOES/BILOU map S-/U- to B- and E-/L- to I-.")
    return list(tags)


def _spans(value: Any, text: str, where: str, name: str) -> list[Gold]:
    if not isinstance(value, (list, tuple)):
        raise DataError(f"{where}, field '{name}': expected a list of spans, got "
                        f"{_json_type(value)}. Fix: write "
                        '[{"start": 0, "end": 5, "label": "PER"}, ...] or [[0, 5, "PER"], ...].')
    spans = sorted((_span(item, n, text, f"{where}, field '{name}'"), n)
                   for n, item in enumerate(value, start=1))
    for (a, n), (b, m) in itertools.pairwise(spans):
        if b[0] < a[1]:  # shown as written: the trimmed offsets were in no file
            raise DataError(f"{where}, field '{name}': span {m} {_given(value[m - 1])} "
                            f"overlaps span {n} {_given(value[n - 1])}. Fix: entities must "
                            "not overlap; keep one of them.")
    return [span for span, _ in spans]


def _given(item: Any) -> list[Any]:
    """A checked span as its user wrote it: [start, end, label]."""
    if isinstance(item, Mapping):
        return [item.get("start"), item.get("end"), item.get("label")]
    return list(item)


def _span(item: Any, n: int, text: str, where: str) -> Gold:
    if isinstance(item, Mapping):
        values = (item.get("start"), item.get("end"), item.get("label"))
    elif isinstance(item, (list, tuple)) and len(item) == 3:
        values = tuple(item)
    else:
        raise DataError(f"{where}: span {n} is {item!r}. Fix: write each span as "
                        '{"start": 0, "end": 5, "label": "PER"} or [0, 5, "PER"].')
    start, end, label = values
    if not (is_whole(start) and is_whole(end)):
        raise DataError(f"{where}: span {n} has start {start!r} and end {end!r}; both must be "
                        "whole numbers (character offsets). Fix: give integer offsets.")
    if not isinstance(label, str) or not label.strip():
        raise DataError(f"{where}: span {n} has label {label!r}. Fix: give each span a "
                        "non-empty string label, such as 'PER'.")
    if not 0 <= start < end <= len(text):
        raise DataError(f"{where}: span {n} [{start}, {end}) is outside the text (length "
                        f"{len(text)}) or empty. Fix: offsets count characters from 0, with "
                        "start < end <= len(text).")
    if _blank(text[start:end]):  # the tokenizer drops it: no word carries the entity
        raise DataError(f"{where}: span {n} [{start}, {end}) holds only whitespace or "
                        f"invisible characters ({text[start:end]!r}). Fix: point it at the "
                        "entity's characters, or drop it.")
    # spaces at the edges (as annotation tools leave them) are no word: a prediction ends at
    # the word, so an untrimmed gold span could never match it
    trimmed = text[start:end]
    start += len(trimmed) - len(trimmed.lstrip())
    end -= len(trimmed) - len(trimmed.rstrip())
    return int(start), int(end), label


def chunks(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """Entities in an IOB2 sequence as (first, last + 1, type); leniently, an I- that does not
    continue an entity of its type starts one.

    >>> chunks(["B-PER", "I-PER", "O", "I-LOC", "B-LOC"])
    [(0, 2, 'PER'), (3, 4, 'LOC'), (4, 5, 'LOC')]
    """
    out: list[tuple[int, int, str]] = []
    current: list[Any] | None = None
    for i, tag in enumerate(tags):
        kind, _, label = tag.partition("-")
        if current is not None and kind == "I" and label == current[2]:
            current[1] = i + 1
            continue
        if current is not None:
            out.append((current[0], current[1], current[2]))
        current = [i, i + 1, label] if tag != "O" else None
    if current is not None:
        out.append((current[0], current[1], current[2]))
    return out


def entity_metrics(gold: Sequence[Sequence[Gold]],
                   predicted: Sequence[Sequence[Gold]]) -> dict[str, Any]:
    """Entity-level precision, recall and F1 (micro, and per type), as seqeval counts them:
    an entity is right only when its span and its type both match exactly.

    >>> m = entity_metrics([[(0, 3, "PER"), (8, 10, "LOC")]], [[(0, 3, "PER"), (8, 9, "LOC")]])
    >>> m["precision"], m["recall"], m["f1"]
    (0.5, 0.5, 0.5)
    """
    counts: dict[str, list[int]] = {}  # type -> [correct, predicted, gold]
    for g, p in zip(gold, predicted, strict=True):
        wanted = set(g)
        for span in set(p):
            row = counts.setdefault(span[2], [0, 0, 0])
            row[0] += span in wanted
            row[1] += 1
        for span in wanted:
            counts.setdefault(span[2], [0, 0, 0])[2] += 1
    per_type = {label: _scores(*counts[label]) for label in sorted(counts)}
    total = [sum(row[i] for row in counts.values()) for i in range(3)]
    return {**{k: v for k, v in _scores(*total).items() if k != "support"},
            "examples": len(gold), "per_type": per_type}


def _scores(correct: int, predicted: int, gold: int) -> dict[str, Any]:
    return {"precision": correct / predicted if predicted else 0.0,
            "recall": correct / gold if gold else 0.0,
            "f1": 2 * correct / (predicted + gold) if predicted + gold else 0.0,
            "support": gold}


# ------------------------------------------------------------ windows, targets, decoding


@dataclass
class Window:
    """One model input: a text's tokens within the token limit (B = one window per row)."""

    text: int
    """Index of the text it comes from."""
    ids: list[int]
    words: list[int | None]
    """Word index (in the whole text) of each token; None for special tokens."""
    firsts: list[int]
    """Positions of tokens that begin their word: these carry the word's tag."""


@dataclass
class Encoded:
    windows: list[Window]
    ranges: list[dict[int, tuple[int, int]]]
    """Per text: word index -> its (start, end) characters in the text."""


class Coder:
    """Texts <-> token windows: tokenizing with offsets, training targets, decoding spans."""

    def __init__(self, tokenizer: Any, tags: Sequence[str], limit: int,
                 alignment: str = "all") -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise TaskError("tag needs a fast (Rust) tokenizer for character offsets; this "
                            "backbone's tokenizer is a slow one. Fix: use a backbone with a "
                            "tokenizer.json.")
        self.tokenizer, self.tags, self.limit = tokenizer, list(tags), limit
        self.stride = limit // 4
        self.alignment = alignment
        self.index = {tag: i for i, tag in enumerate(self.tags)}

    def encode(self, texts: Sequence[str]) -> Encoded:
        """Tokenize into windows of `limit` tokens overlapping by `stride`."""
        batch = call_tokenizer(self.tokenizer, list(texts), truncation=True,
                               max_length=self.limit, stride=self.stride,
                               return_overflowing_tokens=True, return_offsets_mapping=True)
        pairs = list(zip(batch["overflow_to_sample_mapping"], batch.encodings, strict=True))
        ranges: list[dict[int, tuple[int, int]]] = [{} for _ in texts]
        for text, enc in pairs:
            found = ranges[text]
            for word, (start, end) in zip(enc.word_ids, enc.offsets, strict=True):
                if word is not None:
                    old = found.get(word, (start, end))
                    found[word] = (min(old[0], start), max(old[1], end))
        return Encoded([Window(text, list(enc.ids), list(enc.word_ids),
                               _firsts(enc.word_ids, enc.offsets, ranges[text]))
                        for text, enc in pairs], ranges)

    def targets(self, encoded: Encoded, spans: Sequence[Sequence[Gold]]) -> list[list[int]]:
        """Tag indices per window token; IGNORE where the loss should not look."""
        tags = [word_tags(encoded.ranges[i], row) for i, row in enumerate(spans)]
        out = []
        for window in encoded.windows:
            row, firsts, known = [IGNORE] * len(window.ids), set(window.firsts), tags[window.text]
            for k, word in enumerate(window.words):
                if word is None:
                    continue
                if k in firsts:
                    row[k] = self.index[known[word]]
                elif self.alignment == "all":
                    row[k] = self.index[known[word].replace("B-", "I-", 1)]
            out.append(row)
        return out

    def decode(self, encoded: Encoded, probs: Sequence[np.ndarray]) -> list[list[Found]]:
        """(start, end, type, score) per text from per-window tag probabilities (T, C); a
        word seen in two windows gets the mean of its two probability rows. The score is the
        mean probability of the chosen tags over the entity's words."""
        sums: list[dict[int, list[Any]]] = [{} for _ in encoded.ranges]
        for window, p in zip(encoded.windows, probs, strict=True):
            found = sums[window.text]
            for k in window.firsts:
                entry = found.setdefault(window.words[k], [0.0, 0])
                entry[0], entry[1] = entry[0] + p[k], entry[1] + 1
        return [self._found(ranges, sums[i]) for i, ranges in enumerate(encoded.ranges)]

    def _found(self, ranges: dict[int, tuple[int, int]],
               sums: dict[int, list[Any]]) -> list[Found]:
        words = sorted(sums)
        means = [sums[w][0] / sums[w][1] for w in words]
        best = [int(m.argmax()) for m in means]
        out = []
        for first, last, label in chunks([self.tags[b] for b in best]):
            score = sum(float(means[i][best[i]]) for i in range(first, last)) / (last - first)
            out.append((ranges[words[first]][0], ranges[words[last - 1]][1], label, score))
        return out


def _firsts(words: Sequence[int | None], offsets: Sequence[tuple[int, int]],
            ranges: dict[int, tuple[int, int]]) -> list[int]:
    """Positions of tokens that begin their word (a window may start inside a word)."""
    return [k for k, (word, (start, _)) in enumerate(zip(words, offsets, strict=True))
            if word is not None and start == ranges[word][0]]


def word_tags(ranges: dict[int, tuple[int, int]], spans: Sequence[Gold]) -> dict[int, str]:
    """IOB2 tag of every word: B- on the first word a span overlaps, I- on the others."""
    tags, j, started = {}, 0, -1
    for word in sorted(ranges):  # word indices follow the text
        start, end = ranges[word]
        while j < len(spans) and spans[j][1] <= start:
            j += 1
        if j < len(spans) and spans[j][0] < end:
            tags[word] = ("I-" if started == j else "B-") + spans[j][2]
            started = j
        else:
            tags[word] = "O"
    return tags


def word_spans(ranges: dict[int, tuple[int, int]], spans: Sequence[Gold]) -> list[Gold]:
    """Gold spans as training reads them (`word_tags`) and predictions report them: runs of
    tagged words, each from its first word's start to its last word's end. A span over part
    of a word ("foo" of "food") never matched a prediction.

    >>> word_spans({0: (0, 3), 1: (4, 8)}, [(0, 3, "Y"), (4, 7, "X")])
    [(0, 3, 'Y'), (4, 8, 'X')]
    """
    words = sorted(ranges)
    tags = word_tags(ranges, spans)
    return [(ranges[words[first]][0], ranges[words[last - 1]][1], label)
            for first, last, label in chunks([tags[w] for w in words])]


def tag_list(types: Sequence[str]) -> list[str]:
    """['O', 'B-LOC', 'I-LOC', ...]: the model's outputs for these entity types."""
    return ["O"] + [f"{kind}-{label}" for label in types for kind in "BI"]
