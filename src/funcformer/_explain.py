"""Explanations: how much each word of an input moved a function's score.

Two methods. Integrated Gradients (Sundararajan et al. 2017; through captum, the `[explain]`
extra) integrates the target score's gradient along a straight line from a baseline input
(every word replaced by the padding token, [CLS] and [SEP] kept) to the input, in the space of
the word embeddings; a word's attribution is the sum over its sub-word tokens, and all of them
add up to score(input) - score(baseline). Occlusion needs nothing extra: a word's attribution is
score(input) - score(input without that word).

Supported: `classify` (single- and multi-label; the probability of the target label), `pair`
(the match score, over the words of both texts) and `tag` (per entity: the mean probability of
its words' tags). Sub-word tokens are put back together into words with the fast tokenizer's
word ids and character offsets, so every word carries its place in the original string.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from ._backbone import call_tokenizer
from ._data import read_texts
from ._errors import DataError, TaskError, require

log = logging.getLogger("funcformer")

METHODS = ("auto", "ig", "occlusion")
TASKS = ("classify", "pair", "tag")
CONVERGENCE = 0.05
"""Integrated Gradients warns when its attributions miss score - baseline by more than this
share (of the change, or of 0.1 when the change is smaller). On all-MiniLM-L6-v2 sentences the
largest miss measured was 1.1 at 8 steps, 0.22 at 16, 0.001 at 32."""
MAX_STEPS = 1024
"""Integrated Gradients runs its steps as one batch (and captum's quadrature grows with their
square): more than this is memory, not accuracy."""
OCCLUSION_ROWS = 32
"""Occluded variants scored per forward pass."""

Key = tuple[int, int]
"""(part, word): which text of the input (0, or 1 for a pair's second) and which word in it."""
Kept = Sequence[Sequence[int]] | None
"""Per batch row, the positions of the original tokens it holds (None: all of them)."""


class Word(NamedTuple):
    """One word of the input, `text[start:end]`, and its attribution to the target score."""

    word: str
    start: int
    end: int
    attribution: float


@dataclass(frozen=True)
class Explanation:
    """How each word of an input moved a function's score for one target.

    `score` is the target's score on the input (the label's probability, a pair's match
    score, an entity's mean tag probability). With Integrated Gradients the attributions add
    up to `score - baseline`; with occlusion each is the score lost when that word is dropped.

    >>> e = fn.explain("The food was terrible")          # doctest: +SKIP
    >>> max(e.words, key=lambda w: abs(w.attribution)).word   # doctest: +SKIP
    'terrible'
    """

    text: str
    target: str
    score: float
    words: list[Word]
    method: str
    """"ig" (Integrated Gradients) or "occlusion"."""
    text_b: str | None = None
    """A pair's second text; its words are in `words_b`."""
    words_b: list[Word] = field(default_factory=list)
    span: tuple[int, int] | None = None
    """tag: the (start, end) characters of the entity explained."""
    baseline: float | None = None
    """Integrated Gradients: the target score of the all-padding baseline input."""

    def top(self, k: int = 5) -> list[Word]:
        """The `k` words with the largest absolute attribution (both texts of a pair)."""
        return sorted(self.words + self.words_b, key=lambda w: -abs(w.attribution))[:k]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text, "target": self.target, "score": self.score,
                               "method": self.method, "words": _word_dicts(self.words)}
        if self.text_b is not None:
            out.update(text_b=self.text_b, words_b=_word_dicts(self.words_b))
        if self.span is not None:
            out["span"] = list(self.span)
        if self.baseline is not None:
            out["baseline"] = self.baseline
        return out

    def to_terminal(self, color: bool | None = None) -> str:
        """The text with words coloured by attribution (red lowers the score, green raises
        it, stronger for larger magnitude) and the top words; `color=None` colours unless
        the NO_COLOR environment variable is set."""
        from ._render import terminal

        return terminal(self, color)

    def to_html(self) -> str:
        """A self-contained HTML page (no external assets) showing this explanation."""
        from ._render import html_page

        return html_page([self])


def _word_dicts(words: Sequence[Word]) -> list[dict[str, Any]]:
    return [w._asdict() for w in words]


# ------------------------------------------------------------------------ entry point


def explain(fn: Any, text: Any, *, target: str | None = None, method: str = "auto",
            steps: int = 32) -> Any:
    """Explain `fn(text)`: an `Explanation` for classify and pair functions (`text` a
    `(text_a, text_b)` tuple for a pair), a list of them for tag (one per entity found).

    `target`: the label to explain (default: the predicted one; for tag, only entities of
    that type). `method`: "ig" (Integrated Gradients, needs captum), "occlusion", or "auto"
    (ig when captum is installed). `steps`: Integrated Gradients' interpolation steps.

    `fn`: a function, or the directory of a saved one.

    >>> explain(fn, "The staff were wonderful").top(1)[0].word     # doctest: +SKIP
    'wonderful'
    """
    if isinstance(fn, (str, os.PathLike)):  # a function's directory, as the CLI takes it
        from ._function import load

        fn = load(fn)
    if method not in METHODS:
        raise TaskError(f"Unknown explanation method '{method}'. Choose {', '.join(METHODS)}.")
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= MAX_STEPS:
        raise TaskError(f"steps must be a whole number from 1 to {MAX_STEPS}, got {steps!r}. "
                        "Fix: the default 32 is within 0.001 of the exact attribution total; "
                        "raise it only when a warning asks for more.")
    task = fn.manifest.task
    if task not in TASKS:
        raise TaskError(f"explain supports {', '.join(TASKS)} functions; this function's task "
                        f"is {task}.")
    probes = {"classify": _classify, "pair": _pair, "tag": _tag}[task](fn, text, target)
    used = _choose(method, probes[0].encoder if probes else None)
    out = [_run(probe, used, steps) for probe in probes]
    return out if task == "tag" else out[0]


def _choose(method: str, encoder: torch.nn.Module | None) -> str:
    """The method to run: auto takes ig when captum imports and gradients are available."""
    if method == "occlusion":
        return method
    if encoder is None:  # an ONNX graph: no gradients to integrate
        if method == "ig":
            raise TaskError("Integrated Gradients needs the torch runtime; this function runs "
                            "on ONNX. Fix: load it with runtime='torch', or use "
                            "method='occlusion'.")
        return "occlusion"
    if method == "ig":
        require("captum.attr", "explain")
        return method
    try:
        import captum.attr  # noqa: F401
    except ImportError:
        return "occlusion"
    return "ig"


# ------------------------------------------------------------------ tokens and probes


@dataclass
class Tokens:
    """One tokenized input: ids (T,), segment ids for a pair, and each token's word."""

    texts: tuple[str, ...]
    ids: list[int]
    keys: list[Key | None]
    """(part, word) of each token; None for special tokens ([CLS], [SEP])."""
    offsets: list[tuple[int, int]]
    types: list[int] | None = None


def tokenize(tokenizer: Any, texts: tuple[str, ...], limit: int,
             types: bool = False) -> Tokens:
    """Tokenize one input (one text or a pair) with word ids and character offsets."""
    if not getattr(tokenizer, "is_fast", False):
        raise TaskError("explain needs a fast (Rust) tokenizer to map tokens back to words; "
                        "this backbone has a slow one. Fix: use a backbone with a "
                        "tokenizer.json.")
    batch = call_tokenizer(tokenizer, *([t] for t in texts), truncation=True, max_length=limit,
                           return_offsets_mapping=True)
    enc = batch.encodings[0]
    if enc.overflowing:
        log.warning("The text is longer than the token limit (%d); words past it are not "
                    "explained.", limit)
    keys = [(part, word) if word is not None and part is not None else None
            for part, word in zip(enc.sequence_ids, enc.word_ids, strict=True)]
    segments = batch.get("token_type_ids")
    return Tokens(texts, list(enc.ids), keys, [tuple(o) for o in enc.offsets],
                  list(segments[0]) if types and segments is not None else None)


Score = Callable[[dict[str, torch.Tensor], Kept], torch.Tensor]


@dataclass
class Probe:
    """What one explanation needs: the tokens, the target score of a batch (B,), and the
    encoder whose input embeddings Integrated Gradients works on (None: an ONNX graph)."""

    tokens: Tokens
    score: Score
    encoder: torch.nn.Module | None
    backbone: Any
    target: str
    span: tuple[int, int] | None = None


def _limit(fn: Any, backbone: Any) -> int:
    return min(fn.manifest.config.get("max_length") or backbone.max_length, backbone.max_length)


def _classify(fn: Any, text: Any, target: str | None) -> list[Probe]:
    """classify: the probability of `target` (softmax, or its sigmoid when multi-label)."""
    from ._backbone import pool

    text = _one_text(text)
    labels = fn.labels
    if target is None:
        scores = fn.predict([text])[0].scores
        target = max(labels, key=scores.__getitem__)
    index = _label_index(labels, target)
    multi = fn.task.multi_label
    own = fn.encoder if fn.encoder is not None else fn.backbone.model
    encoder = None if fn.runner is not None else own
    pooling = fn.backbone.pooling

    def score(batch: dict[str, torch.Tensor], kept: Kept) -> torch.Tensor:
        if encoder is None:
            logits = fn.runner(batch["input_ids"], batch["attention_mask"])
        else:
            states = encoder(**batch).last_hidden_state  # (B, T, H)
            pooled = pool(states, batch["attention_mask"], pooling).float()  # (B, H)
            logits = fn.head(pooled.to(_device(fn.head)))  # (B, C)
        probs = torch.sigmoid(logits) if multi else torch.softmax(logits, dim=-1)
        return probs[:, index]

    tokens = tokenize(fn.backbone.tokenizer, (text,), _limit(fn, fn.backbone))
    return [Probe(tokens, score, encoder, fn.backbone, target)]


def _pair(fn: Any, text: Any, target: str | None) -> list[Probe]:
    """pair: the match score (for a binary pair's negative label, one minus it)."""
    if not fn.is_single(text):
        raise DataError("A pair function explains one pair: give (text_a, text_b).")
    pair = fn.read_inputs([text])[0]
    names = list(fn.scale.labels) if fn.scale.labels else ["score"]
    target = target if target is not None else names[-1]
    flip = _label_index(names, target) == 0 and len(names) == 2
    model, runner = fn.model, getattr(fn, "runner", None)

    def score(batch: dict[str, torch.Tensor], kept: Kept) -> torch.Tensor:
        if runner is not None:  # an ONNX graph (occlusion only)
            logits = runner(batch["input_ids"], batch["attention_mask"],
                            batch.get("token_type_ids")).reshape(-1)
        else:
            logits = model(**batch)
        value = torch.sigmoid(logits.float())  # (B,)
        return 1 - value if flip else value

    tokens = tokenize(fn.backbone.tokenizer, tuple(pair), _limit(fn, fn.backbone), types=True)
    return [Probe(tokens, score, None if runner is not None else model.encoder, fn.backbone,
                  target)]


def _tag(fn: Any, text: Any, target: str | None) -> list[Probe]:
    """tag: per entity found, the mean probability of its words' predicted tags."""
    text = _one_text(text)
    types = sorted({tag[2:] for tag in fn.coder.tags if tag != "O"})
    if target is not None:
        _label_index(types, target)
    model = fn.model
    tokens = tokenize(fn.backbone.tokenizer, (text,), fn.coder.limit)
    firsts = _word_firsts(tokens)
    with fn.backbone._lock, torch.inference_mode():  # see _run
        batch = _batch([tokens.ids], None, fn.backbone)
        best = model(**batch)[0].argmax(dim=-1).tolist()  # (T,) tag index per token
    probes, past = [], 0
    for start, end, label, _ in fn.found([text])[0]:
        if target is not None and label != target:
            continue
        cells = [(p, best[p]) for p, (s, e) in firsts if start <= s and e <= end]
        if not cells:
            past += 1
            continue
        probes.append(Probe(tokens, _tag_score(model, cells), model.encoder, fn.backbone,
                            label, (start, end)))
    if past:  # once, not a line per entity (hundreds for a long text)
        log.warning("%d %s past the token limit and %s not explained.", past,
                    "entity lies" if past == 1 else "entities lie", "is" if past == 1 else "are")
    return probes


def _tag_score(model: torch.nn.Module, cells: list[tuple[int, int]]) -> Score:
    """Mean probability of tag t at position p over the entity's (p, t) cells; a row that
    lost every cell of the entity (occlusion) scores 0."""

    def score(batch: dict[str, torch.Tensor], kept: Kept) -> torch.Tensor:
        probs = torch.softmax(model(**batch).float(), dim=-1)  # (B, T, C)
        out = []
        for row in range(probs.shape[0]):
            where = {p: i for i, p in enumerate(kept[row])} if kept is not None else None
            found = [probs[row, where[p] if where is not None else p, t] for p, t in cells
                     if where is None or p in where]
            out.append(torch.stack(found).mean() if found else probs.new_zeros(()))
        return torch.stack(out)

    return score


def _word_firsts(tokens: Tokens) -> list[tuple[int, tuple[int, int]]]:
    """(position, word's (start, end)) of the token that begins each word: it carries the
    word's tag, as in the tag task's decoding."""
    ranges = word_ranges(tokens)
    return [(p, ranges[key]) for p, (key, (start, _)) in
            enumerate(zip(tokens.keys, tokens.offsets, strict=True))
            if key is not None and start == ranges[key][0]]


def word_ranges(tokens: Tokens) -> dict[Key, tuple[int, int]]:
    """Each word's (start, end) characters: from its first sub-word token's start to its
    last one's end."""
    ranges: dict[Key, tuple[int, int]] = {}
    for key, (start, end) in zip(tokens.keys, tokens.offsets, strict=True):
        if key is not None:
            old = ranges.get(key, (start, end))
            ranges[key] = (min(old[0], start), max(old[1], end))
    return ranges


def _one_text(text: Any) -> str:
    if not isinstance(text, str):
        raise DataError(f"explain takes one text (a string), got {type(text).__name__}.")
    return read_texts([text]).texts[0]


def _label_index(labels: Sequence[str], target: str) -> int:
    if target not in labels:
        raise DataError(f"Unknown target '{target}'. This function knows: "
                        f"{', '.join(labels)}.")
    return list(labels).index(target)


def _device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


# ------------------------------------------------------------------------- methods


def _run(probe: Probe, method: str, steps: int) -> Explanation:
    # The encoder may be the shared backbone: hold its lock, as every other user does, so no
    # other thread runs it while captum's hooks are on its embedding layer.
    with probe.backbone._lock:
        if method == "ig":
            values, score, baseline = integrated_gradients(probe, steps)
        else:
            values, score, baseline = occlusion(probe), _full_score(probe), None
    parts = words(probe.tokens, values)
    texts = probe.tokens.texts
    return Explanation(text=texts[0], target=probe.target, score=score, words=parts[0],
                       method=method, text_b=texts[1] if len(texts) > 1 else None,
                       words_b=parts[1] if len(texts) > 1 else [], span=probe.span,
                       baseline=baseline)


def integrated_gradients(probe: Probe, steps: int) -> tuple[dict[Key, float], float, float]:
    """Per word, the sum of its tokens' Integrated Gradients attributions on the word
    embeddings; and the target score of the input and of the baseline."""
    from captum.attr import LayerIntegratedGradients

    tokens, backbone = probe.tokens, probe.backbone
    batch = _batch([tokens.ids], [tokens.types] if tokens.types else None, backbone)
    pad_id = backbone.tokenizer.pad_token_id or 0
    special = torch.tensor([key is None for key in tokens.keys], device=backbone.device)
    baseline = torch.where(special, batch["input_ids"], torch.full_like(batch["input_ids"],
                                                                        pad_id))  # (1, T)
    rest = {k: v for k, v in batch.items() if k != "input_ids"}
    names = list(rest)

    def forward(input_ids: torch.Tensor, *others: torch.Tensor) -> torch.Tensor:
        return probe.score({"input_ids": input_ids, **dict(zip(names, others, strict=True))},
                           None)

    assert probe.encoder is not None
    layer = LayerIntegratedGradients(forward, probe.encoder.get_input_embeddings())
    attributions = layer.attribute(batch["input_ids"], baselines=baseline, n_steps=steps,
                                   additional_forward_args=tuple(rest.values()),
                                   internal_batch_size=steps)  # (1, T, H)
    per_token = attributions.sum(dim=-1)[0].detach().float().cpu().tolist()  # (T,)
    with torch.inference_mode():
        ends = probe.score({"input_ids": torch.cat([batch["input_ids"], baseline]),
                            **{k: v.expand(2, -1) for k, v in rest.items()}}, None)
    totals: dict[Key, float] = {}
    for key, value in zip(tokens.keys, per_token, strict=True):
        if key is not None:
            totals[key] = totals.get(key, 0.0) + value
    score, base = float(ends[0]), float(ends[1])
    gap = abs(sum(totals.values()) - (score - base))
    if gap > CONVERGENCE * max(abs(score - base), 0.1):
        log.warning("Integrated Gradients did not converge: the attributions add up to %.4f "
                    "but the score changed by %.4f. Fix: more steps (e.g. steps=%d).",
                    sum(totals.values()), score - base, steps * 2)
    return totals, score, base


def occlusion(probe: Probe) -> dict[Key, float]:
    """Per word, the target score of the input minus that of the input without the word."""
    tokens = probe.tokens
    groups: dict[Key, list[int]] = {}
    for position, key in enumerate(tokens.keys):
        if key is not None:
            groups.setdefault(key, []).append(position)
    everything = list(range(len(tokens.ids)))
    variants = [[p for p in everything if p not in dropped]
                for dropped in map(set, groups.values())]
    scores = _scores(probe, [everything, *variants])
    return {key: scores[0] - scores[i + 1] for i, key in enumerate(groups)}


def _full_score(probe: Probe) -> float:
    return _scores(probe, [list(range(len(probe.tokens.ids)))])[0]


def _scores(probe: Probe, rows: list[list[int]]) -> list[float]:
    """Target scores of inputs made of the token positions in `rows`."""
    tokens, out = probe.tokens, []
    with torch.inference_mode():
        for first in range(0, len(rows), OCCLUSION_ROWS):
            kept = rows[first:first + OCCLUSION_ROWS]
            types = [[tokens.types[p] for p in row] for row in kept] if tokens.types else None
            batch = _batch([[tokens.ids[p] for p in row] for row in kept], types, probe.backbone)
            out += probe.score(batch, kept).float().cpu().tolist()
    return out


def _batch(ids: Sequence[Sequence[int]], types: Sequence[Sequence[int]] | None,
           backbone: Any) -> dict[str, torch.Tensor]:
    """Right-padded input_ids and attention_mask (B, T), and token_type_ids for pairs."""
    batch = backbone.pad([list(row) for row in ids])
    if types is not None:
        segments = torch.zeros_like(batch["input_ids"])
        for row, values in enumerate(types):
            segments[row, : len(values)] = torch.tensor(values)
        batch["token_type_ids"] = segments
    return batch


def words(tokens: Tokens, values: dict[Key, float]) -> list[list[Word]]:
    """Per part of the input, its words in order: `text[start:end]` from the tokens' offsets
    (a word's sub-word tokens joined) and the word's attribution."""
    spans = word_ranges(tokens)
    parts: list[list[Word]] = [[] for _ in tokens.texts]
    for key in sorted(spans):
        start, end = spans[key]
        text = tokens.texts[key[0]]
        parts[key[0]].append(Word(text[start:end], start, end, float(values.get(key, 0.0))))
    return parts
