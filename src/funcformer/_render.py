"""Showing explanations: coloured terminal text (ANSI) and self-contained HTML pages."""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._explain import Explanation, Word

RED = (224, 217, 210, 203, 196)
GREEN = (194, 157, 120, 83, 46)
"""xterm-256 backgrounds, palest to strongest: five steps of attribution magnitude."""
RESET = "\x1b[0m"
METHOD_NAMES = {"ig": "Integrated Gradients", "occlusion": "occlusion"}
MEANING = {"ig": "The attributions add up to the score minus the baseline score.",
           "occlusion": "Each attribution is the score lost when that word is dropped."}


def _peak(e: Explanation) -> float:
    return max((abs(w.attribution) for w in e.words + e.words_b), default=0.0) or 1.0


def _level(value: float, peak: float) -> int:
    """0 (no colour) to 5: the attribution's magnitude relative to the largest one."""
    share = abs(value) / peak
    return 0 if share < 0.05 else min(5, int(share * 5 + 0.999))


def _header(e: Explanation) -> str:
    what = f"target {e.target!r}"
    if e.span is not None:
        what = f"entity {e.text[e.span[0]:e.span[1]]!r} [{e.span[0]}, {e.span[1]}) {e.target}"
    how = METHOD_NAMES[e.method]
    if e.baseline is not None:
        how += f", baseline score {e.baseline:.3f}"
    return f"{what}   score {e.score:.3f}   ({how})"


def terminal(e: Explanation, color: bool | None = None) -> str:
    """Header, the text (and a pair's second text) with coloured words, the top words."""
    if color is None:
        color = not os.environ.get("NO_COLOR")
    peak = _peak(e)
    lines = [_header(e), _paint(e.text, e.words, peak, color)]
    if e.text_b is not None:
        lines.append(_paint(e.text_b, e.words_b, peak, color))
    top = ", ".join(f"{w.word} {w.attribution:+.3f}" for w in e.top(5))
    lines.append(f"top words: {top}")
    return "\n".join(lines)


def _paint(text: str, words: Sequence[Word], peak: float, color: bool) -> str:
    out, at = [], 0
    for w in words:
        out.append(text[at:w.start])
        piece, level = text[w.start:w.end], _level(w.attribution, peak)
        if color and level:
            palette = GREEN if w.attribution > 0 else RED
            piece = f"\x1b[38;5;16;48;5;{palette[level - 1]}m{piece}{RESET}"
        out.append(piece)
        at = w.end
    out.append(text[at:])
    return "".join(out).replace("\n", " ")


# --------------------------------------------------------------------------- HTML

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 60rem; padding: 0 1rem; color: #1f2328; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.05rem; margin: 0 0 .5rem; }
section { border: 1px solid #d0d7de; border-radius: 8px; padding: 1rem 1.2rem;
          margin: 1rem 0; }
.meta { color: #57606a; font-size: .9rem; margin-bottom: .6rem; }
.text { font-size: 1.25rem; line-height: 2.1; white-space: pre-wrap; }
.text .w { border-radius: 4px; padding: .1em .15em; }
.text .entity { border-bottom: 3px solid #0969da; }
.label { color: #57606a; font-size: .8rem; text-transform: uppercase; }
.legend { display: flex; gap: 1rem; align-items: center; font-size: .85rem;
          color: #57606a; }
.legend span { padding: .1em .5em; border-radius: 4px; }
table { border-collapse: collapse; font-size: .9rem; margin-top: .8rem; }
td, th { padding: .2rem .8rem; border-bottom: 1px solid #eaeef2; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
"""


def _colour(value: float, peak: float) -> str:
    alpha = 0.08 + 0.72 * min(abs(value) / peak, 1.0)
    rgb = "22, 163, 74" if value > 0 else "220, 38, 38"
    return f"rgba({rgb}, {alpha:.2f})"


def _marked(text: str, words: Sequence[Word], peak: float,
            span: tuple[int, int] | None) -> str:
    out, at = [], 0
    for w in words:
        out.append(html.escape(text[at:w.start]))
        classes = "w entity" if span and span[0] <= w.start and w.end <= span[1] else "w"
        out.append(f'<span class="{classes}" style="background: {_colour(w.attribution, peak)}"'
                   f' title="{w.attribution:+.4f}">{html.escape(text[w.start:w.end])}</span>')
        at = w.end
    out.append(html.escape(text[at:]))
    return "".join(out)


def _table(e: Explanation) -> str:
    rows = "".join(f"<tr><td>{html.escape(w.word)}</td><td class=num>{w.attribution:+.4f}"
                   "</td></tr>" for w in e.top(10))
    return f"<table><tr><th>word</th><th>attribution</th></tr>{rows}</table>"


def _section(e: Explanation) -> str:
    peak = _peak(e)
    texts = f'<div class="text">{_marked(e.text, e.words, peak, e.span)}</div>'
    if e.text_b is not None:
        texts = (f'<div class="label">text a</div>{texts}<div class="label">text b</div>'
                 f'<div class="text">{_marked(e.text_b, e.words_b, peak, None)}</div>')
    return (f"<section><h2>{html.escape(_header(e))}</h2>"
            f'<div class="meta">{MEANING[e.method]} Hover a word for its value.</div>'
            f"{texts}{_table(e)}</section>")


def html_page(explanations: Sequence[Explanation], title: str = "funcformer explanation") -> str:
    """One self-contained page (inline CSS, no scripts or external assets), all text escaped."""
    legend = ('<div class="legend"><span style="background: rgba(220, 38, 38, .6)">lowers the '
              'score</span><span style="background: rgba(22, 163, 74, .6)">raises the score'
              "</span><span>stronger colour: larger effect</span></div>")
    body = "".join(_section(e) for e in explanations) or "<p>Nothing to explain.</p>"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
            f"<body><h1>{html.escape(title)}</h1>{legend}{body}</body></html>\n")
