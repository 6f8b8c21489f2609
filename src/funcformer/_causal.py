"""Causal language models for `generate`: load one once and share it; decode tokens with a KV
cache; turn token ids into text that honours stop strings and never splits a character.

A causal LM is any `AutoModelForCausalLM` in a local directory (or the hub cache) with
safetensors weights. Names resolve and weights are digested as for encoder backbones
(`_backbone.resolve`, `_backbone.weights_digest`).
"""

from __future__ import annotations

import contextvars
import inspect
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import _backbone
from ._errors import BackboneNotFound

_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")
_PREFIX_TOKENS = 4
"""Prompt tokens decoded in front of the new ones, so a tokenizer that drops a leading space at
the start of a text (SentencePiece) decodes the first new word with its space."""
_loaded: _backbone.Loaded[CausalLM] = _backbone.Loaded()
STOP: contextvars.ContextVar[Callable[[], bool] | None] = contextvars.ContextVar(
    "funcformer_generate_stop", default=None)
"""A check read between decoding steps, set by a caller that may lose interest: the server's
batch worker sets one that turns true once every request of the batch has gone (its client
disconnected, or the server is stopping); the generation then raises `Stopped` where it is,
instead of running to max_new_tokens."""


class Stopped(Exception):
    """A generation stopped by `STOP`: raised, never returned, so a cut-short text cannot be
    taken for a whole one (cached, or sent to a client still waiting)."""


@dataclass(eq=False)
class CausalLM:
    """A loaded causal LM and its tokenizer, shared by the functions that use it. Read-only."""

    name: str
    path: Path
    model: Any
    tokenizer: Any
    digest: str
    device: str = "cpu"

    @property
    def context(self) -> int | None:
        """Positions the model can attend over (prompt + generated tokens); None: no limit."""
        value = getattr(self.model.config, "max_position_embeddings", None)
        return int(value) if isinstance(value, int) and value > 0 else None

    @property
    def eos_ids(self) -> set[int]:
        """Token ids that end a generation: the tokenizer's EOS and the generation config's."""
        ids = {self.tokenizer.eos_token_id}
        config = getattr(self.model, "generation_config", None)
        extra = getattr(config, "eos_token_id", None)
        ids |= set(extra) if isinstance(extra, (list, tuple)) else {extra}
        return {int(i) for i in ids if i is not None}

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else min(self.eos_ids, default=0))

    def with_model(self, model: Any) -> CausalLM:
        """The same tokenizer and name around another (e.g. fine-tuned) model."""
        return CausalLM(name=self.name, path=self.path, model=model, tokenizer=self.tokenizer,
                        digest=self.digest, device=self.device)


def load(name_or_path: str | os.PathLike[str], device: str = "cpu", dtype: str | None = None,
         trust_remote_code: bool = False, offline: bool = False) -> CausalLM:
    """Load a causal LM once per process (keyed by path, device, dtype and weights) and share it
    (`offline`: a hub name from the local cache only, as when a saved function loads).

    >>> load("models/my-gpt2") is load("models/my-gpt2")   # doctest: +SKIP
    True
    """
    _backbone.check_device(device)
    resolved = _backbone.resolve(name_or_path, offline)
    # Size and mtime of the weights are in the key, so an artifact saved again in place is
    # loaded afresh rather than served stale.
    stamp = ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                     for p in sorted(resolved.path.glob("*.safetensors")))
    key = (str(resolved.path), f"{_backbone.device_key(device)}:{dtype or 'float32'}", stamp)
    return _loaded.get(key, lambda: _load(resolved, device, dtype, trust_remote_code))


def _load(resolved: _backbone.Resolved, device: str, dtype: str | None,
          trust_remote_code: bool) -> CausalLM:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = resolved.path
    try:
        with _backbone.quiet_transformers():
            config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except ValueError as err:  # custom code not trusted, or a model type transformers lacks
        raise BackboneNotFound(
            f"Causal LM '{resolved.name}' at {path}: {str(err).splitlines()[0][:300]} Fix: if "
            "the model ships its own code and you trust it, pass trust_remote_code=True; "
            "otherwise upgrade transformers.") from None
    check_causal(config, resolved)
    if not any(path.glob("*.safetensors")):
        raise BackboneNotFound(f"Causal LM '{resolved.name}' at {path} has no *.safetensors "
                               "weights; funcformer never loads pickled *.bin files. Fix: convert "
                               "it once: AutoModelForCausalLM.from_pretrained(dir)"
                               ".save_pretrained(dir).")
    if dtype not in (None, "float32", "float16", "bfloat16"):
        raise BackboneNotFound(f"Unsupported dtype '{dtype}': use float32, float16 or bfloat16.")
    with _backbone.quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        # An explicit dtype: transformers 5 would otherwise keep the checkpoint's (often bf16).
        model = AutoModelForCausalLM.from_pretrained(
            path, use_safetensors=True, trust_remote_code=trust_remote_code,
            dtype=getattr(torch, dtype or "float32"))
    model.eval().to(device)
    return CausalLM(name=resolved.name, path=path, model=model, tokenizer=tokenizer,
                    digest=_backbone.weights_digest(path), device=device)


def check_causal(config: Any, resolved: _backbone.Resolved) -> None:
    """A BackboneNotFound unless `config` describes a decoder-only language model."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    names = list(getattr(config, "architectures", None) or [])
    if names:
        causal = any(name.endswith(_CAUSAL_SUFFIXES) for name in names)
    else:
        causal = config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    if causal and not getattr(config, "is_encoder_decoder", False):
        return
    kind = ", ".join(names) or config.model_type
    raise BackboneNotFound(
        f"Backbone '{resolved.name}' at {resolved.path} is a {kind} model, not a causal "
        "language model; 'generate' needs a decoder LM. Fix: pass backbone= (or --backbone) "
        "a local directory holding an AutoModelForCausalLM (config.json naming e.g. "
        "GPT2LMHeadModel or LlamaForCausalLM, *.safetensors weights, tokenizer files).")


def next_tokens(model: Any, rows: Sequence[list[int]], pad_id: int,
                pick: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[list[int]]:
    """Yield each step's next token per row, forever; the caller stops when it has enough.

    Rows of different lengths are left-padded, and positions count from each row's first real
    token, so a row decodes as it would alone. Earlier steps' keys and values are cached.
    """
    device = next(model.parameters()).device
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row):] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T)
    # Output logits for the last position only: over the whole prompt, the first step's output
    # layer cost B x T x vocabulary (about a second for 8 prompts of 60 tokens on GPT-2 here).
    keep = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}
    cache = None
    while True:
        # Inference mode per step, never across the yield: the caller's code between steps
        # (a stream's consumer) must run in whatever mode it chose.
        with torch.inference_mode():
            out = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                        cache=cache, use_cache=True, **keep)
            cache = out.cache
            tokens = pick(out.logits[:, -1, :].float())  # (B,)
            ids = tokens[:, None]  # (B, 1)
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)  # (B, T + 1)
            positions = positions[:, -1:] + 1  # (B, 1)
        yield tokens.tolist()


def _accepts(model: Any, name: str) -> bool:
    """Whether `model`'s forward names the argument `name` (models with their own code may
    not know the newer ones)."""
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # no signature to read
        return False


def sampler(temperature: float, top_p: float, seed: int | None, rows: int,
            device: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """logits (B, V) -> tokens (B,): greedy at temperature 0, else nucleus sampling.

    Each row draws from its own generator seeded with `seed`, so a row's text does not depend
    on which other prompts share its batch.
    """
    if temperature == 0:
        return lambda logits: logits.argmax(dim=-1)
    generators = [torch.Generator(device=device) for _ in range(rows)]
    for generator in generators:
        if seed is None:
            generator.seed()  # a fresh random seed
        else:
            generator.manual_seed(seed)

    def pick(logits: torch.Tensor) -> torch.Tensor:
        # The row's best logit at 0 and the temperature at least float32's smallest normal:
        # 1e-300 rounded to 0 made 0/0 and every probability nan; now it is greedy in effect.
        # (float32, not float64: MPS has no float64.)
        logits = logits.float()
        shifted = logits - logits.max(dim=-1, keepdim=True).values
        probs = torch.softmax(shifted / max(temperature, torch.finfo(torch.float32).tiny),
                              dim=-1)  # (B, V)
        if top_p < 1:
            ranked, order = probs.sort(dim=-1, descending=True)
            # Drop tokens once the mass before them reaches top_p; the first always stays
            # (a top_p of 1e-300 dropped it too, leaving nothing to draw).
            drop = (ranked.cumsum(dim=-1) - ranked) >= top_p
            drop[:, 0] = False
            ranked[drop] = 0
            probs = torch.zeros_like(probs).scatter_(-1, order, ranked)
        return torch.cat([torch.multinomial(row, 1, generator=g)
                          for row, g in zip(probs, generators, strict=True)])

    return pick


class Tracker:
    """One prompt's generated text as tokens arrive: EOS, stop strings, the token limit, and
    how much text is safe to show (no half character, no possible start of a stop string).

    >>> tracker = Tracker(tokenizer, ids, eos_ids={0}, stop=["\\n"], limit=8)  # doctest: +SKIP
    """

    def __init__(self, tokenizer: Any, prompt_ids: list[int], *, eos_ids: set[int],
                 stop: Sequence[str], limit: int) -> None:
        self.tokenizer, self.eos_ids, self.stop, self.limit = tokenizer, eos_ids, stop, limit
        self.prefix_ids = prompt_ids[-_PREFIX_TOKENS:]
        self.prefix = self._decode(self.prefix_ids)
        self.ids: list[int] = []
        self.count = 0
        self.text = ""
        self.shown = 0
        self.finish: str | None = None
        """"eos", "stop" or "length" once done; None while generating."""

    def push(self, token: int) -> None:
        """Take the next generated token (ignored once finished)."""
        if self.finish is not None:
            return
        self.count += 1
        if token in self.eos_ids:
            self.finish = "eos"
            return
        self.ids.append(token)
        text = self._decode(self.prefix_ids + self.ids)
        self.text = text[len(self.prefix):] if text.startswith(self.prefix) else \
            self._decode(self.ids)
        cuts = [i for i in (self.text.find(s) for s in self.stop) if i >= 0]
        if cuts:
            self.text, self.finish = self.text[:min(cuts)], "stop"
        elif self.count >= self.limit:
            self.finish = "length"

    def delta(self) -> str:
        """Text not yet shown that is safe to show now (all of the rest once finished)."""
        end = len(self.text) if self.finish else self._safe_end()
        piece = self.text[self.shown:end]
        self.shown = max(self.shown, end)
        return piece

    def _safe_end(self) -> int:
        text = self.text
        hold = max((k for s in self.stop for k in range(1, len(s)) if text.endswith(s[:k])),
                   default=0)
        end = len(text) - hold
        while end > self.shown and text[end - 1] == "\ufffd":  # bytes of an unfinished char
            end -= 1
        return end

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True,
                                     clean_up_tokenization_spaces=False)
