"""Label texts: label names that read as words join a classifier's training data.

Each label enters as a short text from `config.label_template` ("This sentence is sadness."),
twice, as SetFit's templated examples do: the encoder already knows what the words mean. With 8
examples per class (3 seeds, `bench/fewshot.py`) `contrastive` gained 6.6 points on Emotion,
4.6 on CR and 2.3 on AG News, and `head` 3.1 on Emotion and 3.3 on AG News.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .._config import TrainConfig
from .._data import Examples
from .._errors import TaskError

LABEL_COPIES = 2
"""Each label's text enters training this many times (SetFit's templated `sample_size`)."""
PLACE = "label text for {!r} (label_template)"
"""Where a label text came from, in messages; `label_text_rows` finds them by it."""


def with_label_texts(train: Examples, config: TrainConfig, labels: Sequence[str] | None = None,
                     only: Sequence[str] | None = None) -> tuple[Examples, str]:
    """`train` plus `LABEL_COPIES` texts per label made from its name with
    `config.label_template`, and a note saying what was added or why not. Coded labels ("0",
    "LABEL_1") carry no meaning: unless `config.label_names` gives words for them, no label
    text is added at all (one label without a text would be the odd one out).

    `labels`: the function's labels (default: those in `train`); `only`: add texts for these
    alone (an update teaching new labels; the old ones had theirs at training).

    >>> rows = Examples(["good", "bad"], ["positive", "negative"], "x", ["1", "2"])
    >>> with_label_texts(rows, TrainConfig())[0].texts[2:4]
    ['This sentence is negative.', 'This sentence is negative.']
    """
    assert train.labels is not None
    labels = sorted(set(train.labels if labels is None else labels))
    names = config.label_names or {}
    unknown = sorted(set(names) - set(labels))
    if unknown:
        raise TaskError(f"label_names names label(s) the training data does not have: "
                        f"{', '.join(map(repr, unknown))}. Its labels: "
                        f"{', '.join(map(repr, labels))}. Fix: use those names as keys.")
    if not config.label_texts:
        return train, "label texts off (label_texts=False)"
    words = {label: names.get(label) or label_words(label) for label in labels}
    coded = [label for label, word in words.items() if word is None]
    if coded:
        return train, (f"labels {', '.join(map(repr, coded[:3]))}{' ...' if len(coded) > 3 else ''}"
                       " are codes, not words: no label texts added (give label_names="
                       "{label: words} to add them)")
    taught = labels if only is None else sorted(only)
    texts = [config.label_template.format(words[label]) for label in taught
             for _ in range(LABEL_COPIES)]
    tagged = [label for label in taught for _ in range(LABEL_COPIES)]
    places = [PLACE.format(label) for label in tagged]
    added = Examples(texts=train.texts + texts, labels=train.labels + tagged,
                     source=train.source, places=train.places + places)
    return added, (f"{len(taught)} label texts added, {LABEL_COPIES} each, e.g. {texts[0]!r} "
                   "(label_texts=False leaves them out)")


def label_text_rows(examples: Examples) -> list[int]:
    """The rows of `examples` that `with_label_texts` added (a data row's place is "line 7" or
    "index 6", never this).

    >>> rows = Examples(["good", "bad"], ["positive", "negative"], "x", ["1", "2"])
    >>> label_text_rows(with_label_texts(rows, TrainConfig())[0])
    [2, 3, 4, 5]
    """
    prefix, suffix = PLACE.split("{!r}")
    return [i for i, place in enumerate(examples.places)
            if place.startswith(prefix) and place.endswith(suffix)]


_CODE = re.compile(r"(label|class|category|cat|lbl|type|id|tag)?[\W_]*\d*[\W_]*", re.IGNORECASE)


def label_words(label: str) -> str | None:
    """The words of a label's name ("card_arrival" -> "card arrival"; "Sci/Tech" ->
    "sci/tech"), or None when it is a code: digits, a letter or two, "LABEL_1", "class-3".

    >>> [label_words(x) for x in ("card_arrival", "Sci/Tech", "0", "LABEL_1", "B", "joy")]
    ['card arrival', 'sci/tech', None, None, None, 'joy']
    """
    if _CODE.fullmatch(label) or not re.search(r"[^\W\d_]{3,}", label):
        return None
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z][a-z])", " ", label)  # camelCase -> camel Case
    return re.sub(r"[_\s]+", " ", spaced).strip().lower()
