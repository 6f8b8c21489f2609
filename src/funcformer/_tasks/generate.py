"""The `generate` task: a decoder language model as a function, prompt in, `Generation` out.

Any local causal LM directory works (`AutoModelForCausalLM`, safetensors weights). `full`
fine-tunes every weight on (prompt, completion) pairs, with the loss on the completion tokens
only; `lora` trains a LoRA adapter on the attention projections of a view sharing the loaded
model's weights (the artifact holds only adapter/ and references the model). A prompt too long
for the model's context keeps its end: its start is cut, with a logged warning.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

from .. import _backbone, _causal, _lora
from .._artifact import BackboneRef, Manifest, atomic_directory, save_model, write_manifest
from .._causal import CausalLM, Tracker
from .._config import TrainConfig
from .._data import LONE_SURROGATE, Records, read_records, read_texts
from .._errors import ArtifactError, DataError, TaskError, for_option, is_real, is_whole
from .._function import (
    Function,
    encoder_state,
    make_config,
    method_option,
    now,
    say,
    state_digest,
    write_adapter,
)
from .._methods import MIN_HELD_OUT, choose_tuning, task_method, trainable_encoder
from .._train import History, Plan, content_digest, length_grouped_batches, run
from .._version import __version__

log = logging.getLogger("funcformer")
MODEL_DIR = "model"
BATCH_ROWS = 16
"""Prompts generated together; sorted by length first, so little padding is wasted."""
IGNORE = -100
"""Label of tokens without loss: the prompt and the padding."""
METHODS = ("full", "lora")


@dataclass(frozen=True)
class Generation:
    """One generated continuation of a prompt.

    >>> fn("Q: capital of France?\\nA:", stop=["\\n"])   # doctest: +SKIP
    Generation(text=' Paris', tokens=3, finish_reason='stop')
    """

    text: str
    """The new text: without the prompt, the EOS token, or the stop string that ended it."""
    tokens: int
    """How many tokens the model generated (the EOS token included)."""
    finish_reason: str
    """'stop' (a stop string appeared), 'eos' (the model ended it) or 'length' (the limit)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class Decoding:
    """How text is generated; every field can be overridden per call: `fn(prompt, seed=1)`.

    >>> Decoding().updated({"stop": "\\n"}).stop
    ('\\n',)
    """

    max_new_tokens: int = 64
    """At most this many new tokens (finish_reason 'length' when reached)."""
    temperature: float = 0.0
    """0 picks the likeliest token (greedy, deterministic); above 0 samples."""
    top_p: float = 1.0
    """Sampling keeps the likeliest tokens whose probabilities add up to `top_p`."""
    seed: int | None = None
    """Seed for sampling: the same seed gives the same text. None: different every call."""
    stop: tuple[str, ...] = ()
    """Strings that end the generation; the first one found is cut from the text."""

    def __post_init__(self) -> None:
        def bad(name: str, want: str) -> TaskError:
            value = getattr(self, name)
            return for_option(name, TaskError(f"{name} must be {want}, got {value!r:.60}."))

        if not is_whole(self.max_new_tokens) or self.max_new_tokens < 1:
            raise bad("max_new_tokens", "a whole number of at least 1")
        if not is_real(self.temperature) or not 0 <= self.temperature < math.inf:
            raise bad("temperature", "a number of at least 0 (0: greedy)")
        if not is_real(self.top_p) or not 0 < self.top_p <= 1:
            raise bad("top_p", "a number above 0 and at most 1")
        if self.seed is not None and (not is_whole(self.seed) or not 0 <= self.seed < 2 ** 63):
            raise bad("seed", "a whole number from 0 to 2**63 - 1, or null")
        # Python's own numbers from here (NumPy's are taken): torch's generator and the
        # artifact's JSON need them.
        for name, kind in (("max_new_tokens", int), ("temperature", float), ("top_p", float),
                           ("seed", int)):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, kind(getattr(self, name)))
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise for_option("stop", TaskError(f"stop must be non-empty strings, got "
                                               f"{list(self.stop)!r:.60}."))
        halved = next((s for s in self.stop if LONE_SURROGATE.search(s)), None)
        if halved is not None:  # JSON "\ud800": no generated text holds it, so it never stops
            raise for_option("stop", TaskError(f"stop {halved!r:.60} is not valid Unicode (a "
                                               "lone surrogate). Fix: send it as UTF-8."))

    def updated(self, options: dict[str, Any]) -> Decoding:
        """A copy with `options` applied; a single stop string is taken as a list of one.

        >>> Decoding().updated({"stop": {"a": 1}})
        Traceback (most recent call last):
        funcformer._errors.TaskError: stop must be a string or a list of strings, got {'a': 1}.
        """
        known = {f.name for f in fields(self)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise for_option(unknown[0], TaskError(
                f"Unknown generation option(s): {', '.join(unknown)}. Options: "
                f"{', '.join(sorted(known))}."))
        values = dict(options)
        if "stop" in values:
            stop = values["stop"]
            if isinstance(stop, str):
                stop = [stop]
            elif stop is None:
                stop = []
            elif not isinstance(stop, (list, tuple)):
                raise for_option("stop", TaskError(f"stop must be a string or a list of "
                                                   f"strings, got {stop!r:.60}."))
            values["stop"] = tuple(stop)
        return replace(self, **values)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "stop": list(self.stop)}


class TextGenerator(Function):
    """A `generate` function: `fn(prompt)` -> `Generation`, `fn.stream(prompt)` -> text pieces.

    >>> fn = funcformer.generator("models/my-gpt2")                  # doctest: +SKIP
    >>> fn("Once upon a time", max_new_tokens=20, stop=["\\n"]).text   # doctest: +SKIP
    """

    def __init__(self, *, lm: CausalLM, manifest: Manifest, decoding: Decoding) -> None:
        super().__init__(manifest=manifest)
        self.lm = lm
        self.decoding = decoding
        """Defaults for every call (saved with the function)."""

    def predict(self, prompts: Sequence[str], **options: Any) -> list[Generation]:
        """One Generation per prompt, in input order; `options` override `self.decoding`."""
        decoding = self.decoding.updated(options)
        rows = self._prompt_rows(prompts, decoding)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        out: list[Generation] = [None] * len(rows)  # type: ignore[list-item]
        for start in range(0, len(order), BATCH_ROWS):
            index = order[start:start + BATCH_ROWS]
            *_, trackers = self._generate([rows[i] for i in index], decoding)  # the last step
            for i, tracker in zip(index, trackers, strict=True):
                out[i] = Generation(tracker.text, tracker.count, tracker.finish or "length")
        return out

    def stream(self, prompt: str, **options: Any) -> Iterator[str]:
        """Text pieces as they are generated; joined, they equal `fn(prompt, **options).text`.

        A piece never ends inside a character, and text that may begin a stop string is held
        back until it is clear.

        >>> for piece in fn.stream("Once upon a time", max_new_tokens=20):   # doctest: +SKIP
        ...     print(piece, end="", flush=True)
        """
        decoding = self.decoding.updated(options)  # bad options fail here, not at first next()
        rows = self._prompt_rows([prompt], decoding)

        def pieces() -> Iterator[str]:
            for (tracker,) in self._generate(rows, decoding):
                piece = tracker.delta()
                if piece:
                    yield piece

        return pieces()

    def _generate(self, rows: list[list[int]], decoding: Decoding) -> Iterator[list[Tracker]]:
        """Each step's trackers (one per row) until every row has finished."""
        trackers = [Tracker(self.lm.tokenizer, row, eos_ids=self.lm.eos_ids, stop=decoding.stop,
                            limit=decoding.max_new_tokens) for row in rows]
        pick = _causal.sampler(decoding.temperature, decoding.top_p, decoding.seed, len(rows),
                               self.lm.model.device)
        stop = _causal.STOP.get()
        for tokens in _causal.next_tokens(self.lm.model, rows, self.lm.pad_id, pick):
            for tracker, token in zip(trackers, tokens, strict=True):
                tracker.push(token)
            yield trackers
            if all(tracker.finish for tracker in trackers):
                return
            if stop is not None and stop():
                raise _causal.Stopped("the generation was stopped: nobody waits for it")

    def _prompt_rows(self, prompts: Sequence[str], decoding: Decoding) -> list[list[int]]:
        """Token ids per prompt; a prompt that leaves no room for `max_new_tokens` in the
        model's context loses its start (logged), since its end is what gets continued."""
        texts = read_texts(list(prompts)).texts
        rows = self.lm.tokenizer(texts)["input_ids"]
        for i, row in enumerate(rows):
            if not row:
                raise DataError(f"<list>, index {i}: the prompt has no tokens. Fix: give text.")
        context = self.lm.context
        if context is None:
            return rows
        room = context - decoding.max_new_tokens
        if room < 1:
            raise for_option("max_new_tokens", TaskError(
                f"max_new_tokens={decoding.max_new_tokens} leaves no room for a prompt in "
                f"this model's context of {context} tokens. Fix: ask for fewer new tokens."))
        cut = sum(len(row) > room for row in rows)
        if cut:
            log.warning("%d of %d prompts were longer than %d tokens (the context of %d minus "
                        "max_new_tokens=%d); their start was cut.", cut, len(rows), room,
                        context, decoding.max_new_tokens)
        return [row[-room:] for row in rows]

    def result_from_dict(self, data: dict[str, Any]) -> Generation:
        return Generation(**data)

    def evaluate(self, data: Any, *, prompt_column: str = "prompt",
                 completion_column: str = "completion", **_columns: Any) -> dict[str, Any]:
        """Mean loss per completion token (EOS included), its perplexity, and the count."""
        records = read_pairs(data, prompt_column, completion_column)
        pairs = encode_pairs(self.lm, records, _limit(self.lm, None))
        loss = mean_loss(self.lm, self.lm.model, pairs)
        return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "examples": len(records)}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the artifact atomically: funcformer.json, and model/ after `full` (adapter/
        after `lora`)."""
        target = Path(path)
        with atomic_directory(target) as temp:
            manifest = self.manifest
            if manifest.backbone.included:
                save_model(self.lm.model, temp / MODEL_DIR)  # float32, as loaded or not
                self.lm.tokenizer.save_pretrained(temp / MODEL_DIR)
                ref = manifest.backbone.model_copy(
                    update={"digest": _backbone.weights_digest(temp / MODEL_DIR)})
                manifest = manifest.model_copy(update={"backbone": ref})
            write_adapter(temp, self.lm.model, manifest)
            write_manifest(temp, manifest)
        return target


def generator(backbone: str | os.PathLike[str], *, device: str = "cpu",
                  dtype: str | None = None, trust_remote_code: bool = False,
                  decoding: Decoding | dict[str, Any] | None = None) -> TextGenerator:
    """A function that generates with a causal LM as it is, without training. Saved, it
    references the model by name and weights digest (nothing is copied).

    >>> fn = funcformer.generator("models/my-gpt2", decoding={"stop": ["\\n\\n"]})  # doctest: +SKIP
    """
    lm = _causal.load(backbone, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    chosen = _decoding(decoding)
    options = {"decoding": chosen.to_dict()}
    manifest = Manifest(
        task="generate", method="none", backbone=BackboneRef(name=_name(lm), digest=lm.digest),
        options=options, digest=state_digest(options, lm.digest), library_version=__version__,
        created_at=now())
    return TextGenerator(lm=lm, manifest=manifest, decoding=chosen)


def train(data: Any, *, eval_data: Any = None, backbone: str | os.PathLike[str] | None = None,
          method: Any = None, config: TrainConfig | None = None, progress: bool = True,
          cache: Any = None, device: str = "cpu", text_column: str = "text",
          label_column: str = "label", init: Any = None, **options: Any) -> TextGenerator:
    """Fine-tune a causal LM on (prompt, completion) pairs (`funcformer.train("generate", ...)`):
    method `full` (default) or `lora` (`method=LoRA(r=16)` sets the adapter).

    Extra options: `prompt_column`, `completion_column`, `decoding` (defaults saved with the
    function), `dtype`, `trust_remote_code`. `text_column`, `label_column` and `cache` do not
    apply to this task.

    >>> fn = funcformer.train("generate", "pairs.jsonl", backbone="models/my-gpt2",
    ...                       epochs=3)                                    # doctest: +SKIP
    """
    method, options = method_option(method, options)
    asked = task_method("generate", method, config, METHODS, options)
    columns = (options.pop("prompt_column", "prompt"), options.pop("completion_column",
                                                                   "completion"))
    lm_options = {"dtype": options.pop("dtype", None),
                  "trust_remote_code": bool(options.pop("trust_remote_code", False))}
    decoding = _decoding(options.pop("decoding", None))
    if init is not None:
        raise TaskError("init= starts a classifier's head; generate has none. Fix: drop it.")
    records = read_pairs(data, *columns)
    eval_records = read_pairs(eval_data, *columns) if eval_data is not None else None
    chosen, reason = choose_tuning(asked, "full", len(records), device)
    config = make_config(replace(config, method=chosen) if config else None, chosen, options)
    shared = _causal.load(backbone, device=device, **lm_options)
    if reason is not None:
        say(f"method auto -> {chosen}: {reason}", progress)
    started = time.perf_counter()
    model, history, source, truncated = fine_tune(shared, records, eval_records, config,
                                                  progress)
    report = {"examples": len(records), "truncated": truncated,
              "seconds": round(time.perf_counter() - started, 2), "eval_source": source,
              "history": history.to_dict()}
    if reason is not None:
        report["method_reason"] = f"auto: {reason}"
    if truncated:
        log.warning("%d of %d training pairs were longer than the token limit; their prompt "
                    "start (or completion end) was cut.", truncated, len(records))
    manifest = _trained_manifest(shared, model, decoding, config, report)
    fn = TextGenerator(lm=shared.with_model(model), manifest=manifest, decoding=decoding)
    if eval_records is not None:
        fn.manifest.metrics = fn.evaluate(eval_records)
    elif history.best_metric is not None:
        fn.manifest.metrics = {"held_out_loss": -history.best_metric}
    return fn


def _trained_manifest(shared: CausalLM, model: torch.nn.Module, decoding: Decoding,
                      config: TrainConfig, report: dict[str, Any]) -> Manifest:
    """`full`: the fine-tuned model is included (the ref's digest becomes its own when saved);
    `lora`: the adapter is, and the ref names the shared model."""
    options = {"decoding": decoding.to_dict()}
    adapter = _lora.is_view(model)
    ref = BackboneRef(name=_name(shared), digest=shared.digest, included=not adapter,
                      base_digest=None if adapter else shared.digest)
    return Manifest(
        task="generate", method=config.method, backbone=ref, options=options,
        adapter=_lora.describe(model) if adapter else None,
        digest=state_digest(options, shared.digest, encoder_state(model) or {}),
        config=config.to_dict(), training=report, library_version=__version__, created_at=now())


def load(directory: Path, manifest: Manifest, *, backbone: str | os.PathLike[str] | None = None,
         device: str = "cpu", dtype: str | None = None, trust_remote_code: bool = False,
         merge_adapter: bool = False) -> TextGenerator:
    """The function saved in `directory` (called by `funcformer.load`); a `lora` one attaches
    its adapter to the shared model (merged into private weight copies with `merge_adapter`)."""
    ref = manifest.backbone
    if ref.included:
        where: str | os.PathLike[str] = directory / MODEL_DIR
        if not (directory / MODEL_DIR / "config.json").is_file():
            raise ArtifactError(f"{directory}: the fine-tuned model ({MODEL_DIR}/) is missing. "
                                "Save the function again.")
    else:
        where = backbone or ref.name
    lm = _causal.load(where, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                      offline=True)
    if lm.digest != ref.digest:
        what = "its fine-tuned model" if ref.included else f"causal LM '{ref.name}'"
        raise ArtifactError(
            f"{directory}: this function was made from {what} with weights digest "
            f"{ref.digest[:19]}…, but the weights at {lm.path} have digest {lm.digest[:19]}…. "
            "Fix: pass backbone= (or --backbone) pointing to the original weights, or retrain.")
    if manifest.adapter is not None:
        lm = lm.with_model(_lora.attach(lm.model, directory, merge=merge_adapter))
    elif merge_adapter:
        raise TaskError(f"{directory}: merge_adapter applies to LoRA functions; this one was "
                        f"trained with '{manifest.method}'.")
    return TextGenerator(lm=lm, manifest=manifest,
                         decoding=_decoding(manifest.options.get("decoding")))


def _decoding(value: Decoding | dict[str, Any] | None) -> Decoding:
    return value if isinstance(value, Decoding) else Decoding().updated(dict(value or {}))


def _name(lm: CausalLM) -> str:
    """How the manifest names the LM: an absolute path for a local directory, so the artifact
    loads from any working directory; a hub id as given."""
    return str(lm.path) if Path(lm.name).expanduser().is_dir() else lm.name


def read_pairs(data: Any, prompt_column: str = "prompt",
               completion_column: str = "completion") -> Records:
    """(prompt, completion) rows from a file, list of pairs or dicts, or DataFrame, keyed
    'prompt' and 'completion'; a missing or empty side is a DataError naming line and field."""
    if isinstance(data, Records):
        return data
    found = read_records(data, texts=[prompt_column, completion_column], what="pairs",
                         fields=["prompt", "completion"])
    rows = [{"prompt": row[prompt_column], "completion": row[completion_column]}
            for row in found.rows]
    return Records(rows=rows, source=found.source, places=found.places)


@dataclass
class Pairs:
    """Token ids of prompt + completion + EOS, and labels: IGNORE over the prompt."""

    ids: list[list[int]]
    labels: list[list[int]]
    truncated: int


def encode_pairs(lm: CausalLM, records: Records, limit: int | None) -> Pairs:
    """Tokenize pairs; one longer than `limit` loses its prompt's start first, then, if the
    completion alone is too long, the completion's end (one prompt token always stays)."""
    eos = lm.tokenizer.eos_token_id
    if eos is None:
        raise TaskError(f"The tokenizer of '{lm.name}' has no EOS token, so a completion "
                        "cannot be taught to end. Fix: set eos_token in its tokenizer_config.")
    prompts = lm.tokenizer(records.column("prompt"))["input_ids"]
    completions = lm.tokenizer(records.column("completion"), add_special_tokens=False)
    ids, labels, truncated = [], [], 0
    for prompt, completion in zip(prompts, completions["input_ids"], strict=True):
        completion = [*completion, eos]
        if limit is not None and len(prompt) + len(completion) > limit:
            truncated += 1
            completion = completion[:limit - 1]
            prompt = prompt[-(limit - len(completion)):]
        ids.append(prompt + completion)
        labels.append([IGNORE] * len(prompt) + completion)
    return Pairs(ids=ids, labels=labels, truncated=truncated)


def collate(pairs: Pairs, index: Sequence[int], pad_id: int,
            device: Any) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Right-padded inputs (B, T) and labels (B, T), IGNORE on the padding."""
    width = max(len(pairs.ids[i]) for i in index)
    ids = torch.full((len(index), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(index), width), dtype=torch.long)
    labels = torch.full((len(index), width), IGNORE, dtype=torch.long)
    for row, i in enumerate(index):
        n = len(pairs.ids[i])
        ids[row, :n] = torch.tensor(pairs.ids[i])
        mask[row, :n] = 1
        labels[row, :n] = torch.tensor(pairs.labels[i])
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}, labels.to(device)


def causal_loss(logits: torch.Tensor, labels: torch.Tensor,
                reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of each next token whose label is not IGNORE: logits (B, T, V), labels
    (B, T); position t predicts token t + 1."""
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE,
        reduction=reduction)


def mean_loss(lm: CausalLM, model: torch.nn.Module, pairs: Pairs) -> float:
    """Loss per label token over all pairs (batches sorted by length)."""
    order = sorted(range(len(pairs.ids)), key=lambda i: len(pairs.ids[i]))
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(order), BATCH_ROWS):
            inputs, labels = collate(pairs, order[start:start + BATCH_ROWS], lm.pad_id, lm.device)
            total += float(causal_loss(model(**inputs).logits, labels, reduction="sum"))
            count += int((labels[:, 1:] != IGNORE).sum())
    return total / max(count, 1)


def fine_tune(shared: CausalLM, train: Records, eval_data: Records | None, config: TrainConfig,
              progress: bool) -> tuple[torch.nn.Module, History, str, int]:
    """Train a private copy of the LM (`full`) or a LoRA adapter on a view sharing its weights
    (`lora`) through the shared loop; early stopping on eval loss.

    Returns the model, the history, where eval data came from, and how many pairs were cut.
    """
    source = "given"
    if eval_data is None:
        train, eval_data = _holdout(train, config.eval_share, config.seed)
        source = f"held out {len(eval_data)}" if eval_data is not None else "none"
    limit = _limit(shared, config.max_length)
    pairs = encode_pairs(shared, train, limit)
    torch.manual_seed(config.seed)
    model = trainable_encoder(shared.model, config)
    lengths = [len(row) for row in pairs.ids]
    batch_size = int(config.batch_size or 16)

    def batches(epoch: int) -> list[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        order = length_grouped_batches(lengths, batch_size, config.seed + epoch)
        return [collate(pairs, index, shared.pad_id, shared.device) for index in order]

    held = encode_pairs(shared, eval_data, limit) if eval_data is not None else None
    evaluate = (lambda m: -mean_loss(shared, m, held)) if held else None  # higher is better
    plan = Plan(model=model, batches=batches, forward=lambda m, inputs: m(**inputs).logits,
                loss=causal_loss, evaluate=evaluate, baseline=held is not None,
                metric_name="-eval_loss", eval_key=content_digest(held))  # (token ids)
    history = run(plan, config, progress=progress, description="fine-tune")
    return model, history, source, pairs.truncated


def _limit(lm: CausalLM, max_length: int | None) -> int | None:
    """Tokens per training pair: `max_length` if given, never more than the context."""
    limits = [n for n in (max_length, lm.context) if n is not None]
    return min(limits) if limits else None


def _holdout(records: Records, fraction: float, seed: int) -> tuple[Records, Records | None]:
    """A seeded random split; none when fewer than `MIN_HELD_OUT` pairs would be held out."""
    take = round(len(records) * fraction)
    if take < MIN_HELD_OUT:
        return records, None
    order = torch.randperm(len(records), generator=torch.Generator().manual_seed(seed)).tolist()
    return _subset(records, sorted(order[take:])), _subset(records, sorted(order[:take]))


def _subset(records: Records, index: list[int]) -> Records:
    return Records(rows=[records.rows[i] for i in index], source=records.source,
                   places=[records.places[i] for i in index])


from_backbone = generator  # the name every task module uses for "a function, untrained"
