"""`Function`: a trained, callable, savable function; `train()` and `load()` make one."""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import inspect
import json
import logging
import os
import shutil
import stat
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from . import _backbone, _explain
from ._artifact import (
    DAMAGED_FIX,
    ENCODER_DIR,
    EXPORT_RECORD,
    HEAD_FILE,
    MANIFEST,
    ONNX_DIR,
    BackboneRef,
    HeadSpec,
    Manifest,
    atomic_directory,
    check_files,
    check_weights,
    copy_pooling_files,
    even_modes,
    float32_tensors,
    read_manifest,
    save_encoder,
    write_manifest,
)
from ._cache import Cache, open_cache
from ._config import HEADS, TrainConfig, check_metric
from ._data import (
    Examples,
    check_single_label,
    file_record,
    file_sha256,
    is_multi_label,
    label_set,
    read_examples,
    read_texts,
)
from ._errors import ArtifactError, BackboneNotFound, DataError, TaskError
from ._model import HeadChoice
from ._results import Prediction
from ._tasks import task_class, task_module
from ._train import tensor_bytes
from ._version import __version__

log = logging.getLogger("funcformer")
PathLike = str | os.PathLike[str]


class Function(abc.ABC):
    """A trained function: call it on one input for one result, on a list for a list.

    Every task's function (`classify`, `embed`, `search`, `tag`, `pair`, `generate`,
    `zero_shot`) is one of these: it carries its manifest, predicts, evaluates and saves
    atomically, and `funcformer.load` gives it back.

    >>> fn = funcformer.train("classify", "reviews.csv")   # doctest: +SKIP
    >>> fn("The battery died after a day.").label           # doctest: +SKIP
    'negative'
    """

    shares_features = False
    """True when the Engine may compute pooled backbone features once for this function and
    others on the same backbone, then apply only this function's head."""
    runtime = "torch"

    def __init__(self, *, manifest: Manifest) -> None:
        self.manifest = manifest

    @property
    def task_name(self) -> str:
        return self.manifest.task

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.labels)

    @property
    def digest(self) -> str:
        """Identifies this function's behaviour: its settings and weights."""
        return self.manifest.digest

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.manifest.metrics)

    @property
    def encoder_key(self) -> tuple[Any, ...]:
        """Functions with equal keys compute identical features: one backbone pass serves all."""
        return ("own", id(self))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(task={self.manifest.task!r}, "
                f"method={self.manifest.method!r}, labels={self.labels!r}, "
                f"backbone={self.manifest.backbone.name!r})")

    def __call__(self, inputs: Any, **options: Any) -> Any:
        unknown = unknown_option(self.predict, options)
        if unknown is not None:  # a TypeError from predict before
            raise TaskError(f"'{unknown}' is not a call option of {self.manifest.task} "
                            f"functions. Options: {options_text(self.predict)}.")
        if self.is_single(inputs):
            return self.predict([inputs], **options)[0]
        if isinstance(inputs, Mapping):  # one row, e.g. {"text": ...}: not a list of its keys
            return self.predict(self.read_inputs([inputs]), **options)[0]
        if isinstance(inputs, (bytes, bytearray)):
            raise DataError("Got bytes. Fix: decode them first, e.g. fn(data.decode('utf-8')).")
        if not isinstance(inputs, Iterable):
            raise DataError(f"Got {type(inputs).__name__}: call a function with one input or a "
                            "list of them. Fix: e.g. fn('a text') or fn(['a text', 'another']).")
        return self.predict(list(inputs), **options)

    def is_single(self, inputs: Any) -> bool:
        """Whether `inputs` is one input (a string for most tasks) rather than a list."""
        return isinstance(inputs, str)

    def read_inputs(self, data: Any, *, text_column: str = "text") -> list[Any]:
        """Validated inputs from a file, list or DataFrame (what `predict` takes)."""
        return read_texts(data, text_column=text_column).texts

    @abc.abstractmethod
    def predict(self, inputs: Sequence[Any], **options: Any) -> list[Any]:
        """One result per input, in input order; `options` are the task's call options."""

    @abc.abstractmethod
    def result_from_dict(self, data: dict[str, Any]) -> Any:
        """Rebuild a result from its `to_dict()` (the Engine caches results as JSON)."""

    @abc.abstractmethod
    def evaluate(self, data: Any, **columns: Any) -> dict[str, Any]:
        """The task's metrics on labelled data."""

    @abc.abstractmethod
    def save(self, path: PathLike) -> Path:
        """Write the artifact atomically; returns its directory."""

    def update(self, data: Any, **options: Any) -> Function:
        """Continual updates exist for `classify` functions (see `Classifier.update`)."""
        raise TaskError(f"update applies to classify functions; this function's task "
                        f"is {self.task_name}. Fix: train it again with all the data.")


class Classifier(Function):
    """A `classify` function (single- or multi-label): pooled backbone features -> a head.

    >>> fn("The battery died after a day.").label           # doctest: +SKIP
    'negative'
    """

    def __init__(self, *, task: Any, backbone: _backbone.Backbone, head: torch.nn.Module | None,
                 manifest: Manifest, encoder: torch.nn.Module | None = None,
                 runner: Any = None) -> None:
        super().__init__(manifest=manifest)
        self.task = task
        self.backbone = backbone
        self.head = head.eval() if head is not None else None
        self.encoder = encoder
        """A fine-tuned encoder not yet saved; None runs `backbone.model`."""
        self.runner = runner
        """An ONNX Runtime session computing logits from token ids; None runs torch."""
        self.memory: Examples | None = None
        """Exemplars replayed by `update` (opt-in: `train(..., memory=K)`)."""

    @property
    def runtime(self) -> str:  # type: ignore[override]
        return "torch" if self.runner is None else "onnx"

    @property
    def shares_features(self) -> bool:  # type: ignore[override]
        return self.runner is None

    def predict(self, texts: Sequence[str] | Examples) -> list[Prediction]:
        """Predictions for many texts, in input order."""
        return self.task.decode(self.logits(texts))

    def result_from_dict(self, data: dict[str, Any]) -> Any:
        return self.task.result_from_dict(data)

    def logits(self, texts: Sequence[str] | Examples, cache: Cache | None = None) -> torch.Tensor:
        """Raw head outputs (N, C), in input order."""
        examples = texts if isinstance(texts, Examples) else read_texts(list(texts))
        if self.runner is not None:
            logits, truncated = run_graph(self.runner, self.backbone, examples.texts,
                                          self.manifest.config.get("max_length"),
                                          len(self.labels))
            _note_truncation(truncated, len(examples.texts))
            return logits
        return self.apply_head(self.features(examples.texts, cache))

    @property
    def encoder_key(self) -> tuple[Any, ...]:
        if self.runner is not None:
            return ("onnx", id(self.runner))
        encoder = self.encoder if self.encoder is not None else self.backbone.model
        return id(encoder), self.manifest.config.get("max_length")

    def features(self, texts: Sequence[str], cache: Cache | None = None) -> torch.Tensor:
        """Pooled encoder outputs (N, H) for validated texts, in input order."""
        need_torch(self.runner, "features")
        max_length = self.manifest.config.get("max_length")
        features, truncated = self.backbone.embed(texts, encoder=self.encoder,
                                                  max_length=max_length, cache=cache)
        _note_truncation(truncated, len(texts))
        return torch.from_numpy(features)

    def apply_head(self, features: torch.Tensor) -> torch.Tensor:
        """Head outputs (N, C) for features (N, H)."""
        with torch.inference_mode():
            return self.head(features)

    def evaluate(self, data: Any, *, text_column: str = "text",
                 label_column: str = "label") -> dict[str, Any]:
        """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix."""
        examples = read_examples(data, text_column=text_column, label_column=label_column,
                                 empty_labels=self.task.multi_label)
        self.task.targets(examples)  # unknown labels fail here, naming the row
        predicted = self.task.predicted_labels(self.logits(examples))
        assert examples.labels is not None
        return self.task.metrics(examples.labels, predicted)

    def explain(self, text: str, *, target: str | None = None, method: str = "auto",
                steps: int = 32) -> _explain.Explanation:
        """Word attributions for `text`'s target label: see `funcformer.explain`."""
        return _explain.explain(self, text, target=target, method=method, steps=steps)

    def export_onnx(self, path: PathLike, *, int8: bool = False) -> Path:
        """Export encoder, pooling and head as one ONNX graph into the artifact at `path`.

        Writes `onnx/model.onnx` (or `onnx/model-int8.onnx`, dynamically quantized), the
        tokenizer, and `onnx/export.json` recording the function digest it was made from.
        A function loaded in half precision (`dtype=`) is refused: load it in float32.
        """
        need_torch(self.runner, "export_onnx")
        return export_graph(self.digest, self.backbone,
                            pooled(self.backbone, self.encoder, self.head), path, int8)

    def save(self, path: PathLike) -> Path:
        """Write the artifact atomically; returns its directory."""
        need_torch(self.runner, "save")
        return save_with_head(path, self.head, self.manifest, self.encoder, self.backbone,
                              memory=self.memory)

    def update(self, data: Any, *, eval_data: Any = None, memory: int | None = None,
               text_column: str = "text", label_column: str = "label", progress: bool = True,
               **options: Any) -> Classifier:
        """A new function that also knows the examples and labels in `data`, trained from this
        one (its head grows a row per new label) instead of from scratch; this one is left as
        it is. The exemplar memory (if the function has one) is replayed to limit forgetting;
        `memory=K` starts or resizes it. `manifest.training["update"]["report"]` has accuracy
        on old labels before and after, and on new labels (on `eval_data`, or a held-out part);
        micro-F1 instead for a multi-label function, whose thresholds are tuned again there.

        >>> v2 = fn.update("new_tickets.csv", eval_data="all_labels_dev.csv")  # doctest: +SKIP
        """
        from ._model import LinearHead
        from ._update import update

        if self.head is not None and not isinstance(self.head, LinearHead):
            raise TaskError(f"update grows a linear head by one row per new label; this "
                            f"function's head is '{self.task.head_choice.kind}'. Fix: train "
                            "again with all the data.")
        return update(self, data, eval_data=eval_data, memory=memory, text_column=text_column,
                      label_column=label_column, progress=progress, **options)


def save_with_head(path: PathLike, head: torch.nn.Module, manifest: Manifest,
                   encoder: torch.nn.Module | None, backbone: _backbone.Backbone,
                   memory: Examples | None = None) -> Path:
    """The artifact of a function with a head: funcformer.json, head.safetensors, and encoder/
    when the manifest says the encoder is included; written atomically."""
    from safetensors.torch import save_file

    target = Path(path)
    with atomic_directory(target) as temp:
        save_file(float32_tensors(head.state_dict()), str(temp / HEAD_FILE))
        if manifest.backbone.included:
            manifest = write_encoder(temp, encoder, backbone, manifest)
        write_adapter(temp, encoder, manifest)
        if memory is not None:
            from ._update import write_memory

            write_memory(temp, memory)
        write_manifest(temp, manifest)
    return target


def write_adapter(directory: Path, encoder: torch.nn.Module | None, manifest: Manifest) -> None:
    """Write `directory/adapter/` when the manifest records an adapter (else nothing)."""
    if manifest.adapter is None:
        return
    from . import _lora

    if encoder is None or not _lora.is_view(encoder):
        raise TaskError("This function was loaded with merge_adapter=True, so it has no "
                        "separate adapter to save. Fix: save the function loaded without "
                        "merge_adapter (or copy its directory).")
    _lora.save(encoder, directory)


def write_encoder(directory: Path, encoder: torch.nn.Module | None,
                  backbone: _backbone.Backbone, manifest: Manifest) -> Manifest:
    """Save a fine-tuned encoder (None: the backbone's model, i.e. a loaded one) into
    `directory/encoder/`; returns the manifest with that copy's weights digest."""
    target = directory / ENCODER_DIR
    save_encoder(encoder if encoder is not None else backbone.model, backbone.tokenizer,
                 backbone.path, target)
    ref = manifest.backbone.model_copy(update={"digest": _backbone.weights_digest(target)})
    return manifest.model_copy(update={"backbone": ref})


def call_options(predict: Any) -> list[str] | None:
    """The call options a `predict` (bound or not) takes; None when it takes `**options` and
    checks them itself (generate: its Decoding fields)."""
    parameters = inspect.signature(predict).parameters
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return None
    return [name for name, p in parameters.items()
            if p.kind is p.KEYWORD_ONLY or (p.kind is p.POSITIONAL_OR_KEYWORD
                                            and p.default is not p.empty)]


def unknown_option(predict: Any, options: Mapping[str, Any]) -> str | None:
    """The first (by name) of `options` that `predict` does not take, or None; the CLI, the
    server, `map` and `fn(...)` each word the error their way."""
    if not options:  # most calls: no signature to read
        return None
    accepted = call_options(predict)
    unknown = sorted(set(options) - set(accepted)) if accepted is not None else []
    return unknown[0] if unknown else None


def options_text(predict: Any) -> str:
    """`predict`'s call options for an error message: 'k, filter, answer' or 'none'."""
    return ", ".join(call_options(predict) or []) or "none"


def _note_truncation(truncated: int, total: int) -> None:
    """Report cut texts once per call: a note, not an error."""
    if truncated:
        log.warning("%d of %d texts were longer than the token limit and were truncated.",
                    truncated, total)


def train(task: str, data: Any, *, eval_data: Any = None, backbone: PathLike | None = None,
          method: str | None = None, text_column: str = "text", label_column: str = "label",
          config: TrainConfig | None = None, progress: bool = True,
          cache: Cache | str | os.PathLike[str] | None = None, device: str = "cpu",
          init: Any = None, unlabeled: Any = None, self_training: Any = None,
          **options: Any) -> Function:
    """Train a function for `task`; `options` override fields of `TrainConfig` or set task
    options (see docs/tasks.md).

    `task`: "classify" (single- or multi-label, detected from the labels or `multi_label=`),
    "zero_shot" (data: the labels), "embed" (pairs), "search" (documents; `pairs=` queries with
    gold ids tune the encoder), "tag" (tokens + tags, or text + spans), "pair" (text_a, text_b,
    score or label) or "generate" (prompt, completion; `backbone=` a causal LM directory).

    `cache` ("memory", an SQLite path, or a Cache) keeps the frozen backbone's features, so
    training again on the same texts (another seed, another head) skips the encoder.
    `device` is a torch device ("cuda" trains `full` on a GPU; heads always train on CPU).
    `init="zero_shot"` (or a `ZeroShot` with label descriptions) starts the head from the label
    embeddings, so a few examples improve on zero-shot rather than start from scratch.
    `unlabeled` (classify, single-label: a file, list or DataFrame of texts) turns on
    self-training: confident predictions on those texts become pseudo-labels for further rounds
    of training (`self_training`: a `SelfTraining` or its dict; see docs/unlabeled.md).

    >>> fn = funcformer.train("classify", [("great", "pos"), ("awful", "neg")] * 10,
    ...                       epochs=5)                                    # doctest: +SKIP
    """
    from ._methods import AUTO_LORA, choose, fit

    config = as_config(config)
    if task != "classify":
        if unlabeled is not None or self_training is not None:
            raise TaskError(f"Self-training (unlabeled=) applies to classify functions; this "
                            f"is {task}. Fix: drop unlabeled= and self_training=.")
        _check_classify_only(task, config, options)
        return task_module(task).train(
            data, eval_data=eval_data, backbone=backbone, method=method, config=config,
            progress=progress, cache=cache, device=device, text_column=text_column,
            label_column=label_column, init=init, **options)
    multi_label = options.pop("multi_label", None)
    memory = options.pop("memory", None)
    if multi_label is not None and not isinstance(multi_label, bool):  # 'no' is truthy
        raise TaskError(f"multi_label must be true or false (or left out: decided from the "
                        f"data), got {multi_label!r}.")
    from ._update import check_memory

    check_memory(memory, "e.g. memory=20, or leave it out for no memory")
    method, options = method_option(method, options)
    config = make_config(config, method or "auto", options, resolve=False)
    if init is not None and config.head != "linear":
        raise TaskError(f"init= starts a linear head from label embeddings; head "
                        f"'{config.head}' has no such start. Fix: drop init= or use "
                        "head='linear'.")
    columns = {"text_column": text_column, "label_column": label_column,
               "empty_labels": bool(multi_label)}
    train_examples = read_examples(data, **columns)
    eval_examples = read_examples(eval_data, **columns) if eval_data is not None else None
    unlabeled_examples, settings = _unlabeled_data(unlabeled, self_training, text_column)
    if multi_label is None:
        multi_label = is_multi_label(train_examples)
    elif not multi_label:
        for examples in (train_examples, eval_examples):
            if examples is not None:
                check_single_label(examples, label_column)
    if multi_label and unlabeled_examples is not None:
        raise TaskError("Self-training (unlabeled=) pseudo-labels single-label data; this is "
                        "multi-label. Fix: drop unlabeled=, or label more rows.")
    check_metric(config.metric, multi_label)
    labels = label_set(train_examples, task, multi_label)
    reason = None
    if config.method == "auto":
        chosen, reason = choose(train_examples.labels, device, multi_label, init is not None)
        if config.lora is not None and chosen not in ("lora", "contrastive") and init is None:
            # LoRA settings mean lora, as for the other tasks (head dropped them silently)
            chosen, reason = "lora", "LoRA settings were given (lora=...)"
        config = dataclasses.replace(config, method=chosen)
        if chosen == "lora" and config.lora is None:
            config = dataclasses.replace(config, lora=dict(AUTO_LORA))
            reason += f", LoRA({', '.join(f'{k}={v}' for k, v in AUTO_LORA.items())})"
    config = config.resolved()
    task_obj = task_class(task, multi_label)(labels)
    task_obj.configure(config, train_examples)  # head and loss; "balanced" weights from the data
    if eval_examples is not None:
        task_obj.targets(eval_examples)  # fail early on labels the training data lacks
    shared = _backbone.load(backbone, device=device)
    if config.head not in HEADS:  # a user's factory: imported and shape-checked before training
        task_obj.head(shared.hidden_size, config.dropout)
    if config.method in ("prompt", "prefix"):
        from ._peft import room_for_virtual_tokens

        config = room_for_virtual_tokens(config, shared.model.config, shared.max_length)
    if init is not None:
        from ._embed import head_init

        task_obj.init = head_init(init, labels, shared)
    if reason is not None:  # said once nothing can fail before training starts
        say(f"method auto -> {config.method}: {reason}", progress)
    started = time.perf_counter()
    cache = open_cache(cache)
    if unlabeled_examples is None:
        trained = fit(task_obj, shared, train_examples, eval_examples, config, progress, cache)
    else:
        from ._unlabeled import self_train

        trained, self_report = self_train(task_obj, shared, train_examples, eval_examples,
                                          unlabeled_examples, settings, config, progress, cache)
    seconds = time.perf_counter() - started
    if trained.truncated:
        log.warning("%d of %d training texts were longer than %d tokens and were truncated.",
                    trained.truncated, len(train_examples), config.max_length or shared.max_length)
    report = {"examples": len(train_examples), "truncated": trained.truncated,
              "init": "zero_shot" if init is not None else "random",
              "seconds": round(seconds, 2), "eval_source": trained.eval_source,
              "history": trained.history.to_dict()}
    if reason is not None:
        report["method_reason"] = f"auto: {reason}"
    if trained.chosen:  # what the method's None defaults became (the config keeps None)
        report["chosen"] = trained.chosen
    if unlabeled_examples is not None:
        report["self_training"] = self_report
    source = file_record(data, text_column=text_column, label_column=label_column)
    if source is not None:  # where `distill` finds the teacher's training data again
        report["data"] = source
    if not multi_label:  # what `update` weighs its replayed examples by
        report["label_counts"] = dict(Counter(train_examples.labels))
    manifest = _manifest(task_obj, shared, trained, config, report)
    fn = Classifier(task=task_obj, backbone=shared, head=trained.head, manifest=manifest,
                  encoder=trained.encoder)
    if task_obj.multi_label and trained.eval_data is not None:
        task_obj.tune_thresholds(fn.logits(trained.eval_data), trained.eval_data)
        fn.manifest.options = task_obj.options
        fn.manifest.digest = _digest([task_obj.labels, task_obj.options],
                                     trained.head.state_dict(), encoder_state(trained.encoder),
                                     shared.digest)
    if eval_examples is not None:
        metrics = fn.evaluate(eval_examples)
        keys = ("accuracy", "micro_f1", "macro_f1", "examples")
        fn.manifest.metrics = {k: metrics[k] for k in keys if k in metrics}
    elif trained.history.best_metric is not None:
        fn.manifest.metrics = {f"held_out_{config.metric}": trained.history.best_metric}
    if memory:
        from ._update import select_memory

        # The training run cached the frozen backbone's features: herding reuses them.
        fn.memory = select_memory(fn, train_examples, int(memory),
                                  lambda texts: fn.features(texts, cache))
        fn.manifest.memory = {"per_label": int(memory), "examples": len(fn.memory)}
    return fn


def _unlabeled_data(unlabeled: Any, self_training: Any,
                    text_column: str) -> tuple[Examples | None, Any]:
    """The unlabelled texts and the self-training settings (both None without unlabeled=)."""
    if unlabeled is None:
        if self_training is not None:
            raise TaskError("self_training= sets how unlabelled texts are used; pass them too "
                            "(unlabeled=FILE, or --unlabeled FILE).")
        return None, None
    from ._unlabeled import SelfTraining, read_pool

    return read_pool(unlabeled, text_column), SelfTraining.from_value(self_training)


def _check_classify_only(task: str, config: TrainConfig | None,
                         options: dict[str, Any]) -> None:
    """Head and loss settings belong to `classify`; other tasks would silently ignore them."""
    from ._config import CLASSIFY_ONLY

    given = config.to_dict() if config is not None else {}
    for name, default in CLASSIFY_ONLY.items():
        value = options.get(name, given.get(name, default))
        if value is not None and value != default:
            raise TaskError(f"{name} applies to classify functions (their head and loss); "
                            f"{task} has its own. Fix: drop {name}.")


def as_config(config: Any) -> TrainConfig | None:
    """`config=` as given to train: a TrainConfig, a dict of its fields, or None."""
    if isinstance(config, dict):  # the fields as a dict, as TrainConfig.from_dict takes them
        return TrainConfig.from_dict(config)
    if config is not None and not isinstance(config, TrainConfig):
        raise TaskError(f"config must be a TrainConfig or a dict of its fields, got "
                        f"{type(config).__name__}. Fix: e.g. config=TrainConfig(epochs=3).")
    return config


def make_config(config: TrainConfig | dict[str, Any] | None, method: str | None,
                options: dict[str, Any], resolve: bool = True) -> TrainConfig:
    """The TrainConfig for `config` + `method` + keyword options; `resolve` fills the
    method's defaults (not possible yet for `auto`)."""
    config = as_config(config)
    values = config.to_dict() if config is not None else {}
    if values.get("method") is None:
        values["method"] = method or "head"
    unknown = set(options) - set(TrainConfig().to_dict())
    if unknown:
        raise TaskError(f"Unknown training option(s): {', '.join(sorted(unknown))}. See "
                        "funcformer.TrainConfig for the options there are.")
    values.update({k: v for k, v in options.items() if v is not None})
    made = TrainConfig.from_dict(values)
    return made.resolved() if resolve else made


def method_option(method: Any, options: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """`method=LoRA(...)` means method "lora" with those settings; `method=IA3(...)` (or
    AdaLoRA, PromptTuning, PrefixTuning) means that method with those settings in `peft`."""
    from ._lora import LoRA, Settings

    if isinstance(method, LoRA):
        return "lora", {**options, "lora": method}
    if isinstance(method, Settings):
        return type(method).method, {**options, "peft": method}  # type: ignore[attr-defined]
    return method, options


def say(message: str, enabled: bool = True) -> None:
    """A one-line note to the user on stderr (the CLI and notebooks show it)."""
    if enabled:
        print(message, file=sys.stderr, flush=True)


def encoder_state(encoder: torch.nn.Module | None) -> dict[str, torch.Tensor] | None:
    """The weights that make a trained encoder this function's: the adapter of a LoRA view,
    the whole state of a full copy, nothing for the shared backbone."""
    if encoder is None:
        return None
    from . import _lora

    return _lora.adapter_state(encoder) if _lora.is_view(encoder) else encoder.state_dict()


def _manifest(task: Any, shared: _backbone.Backbone, trained: Any, config: TrainConfig,
              report: dict[str, Any]) -> Manifest:
    from . import _lora

    adapter = trained.encoder is not None and _lora.is_view(trained.encoder)
    included = trained.encoder is not None and not adapter
    ref = BackboneRef(name=shared.name, digest=shared.digest, included=included,
                      base_digest=shared.digest if included else None)
    head = HeadSpec(**task.head_choice.record(shared.hidden_size, len(task.labels)))
    return Manifest(
        task=task.name, labels=task.labels, method=config.method, backbone=ref, head=head,
        options=task.options, adapter=_lora.describe(trained.encoder) if adapter else None,
        digest=_digest([task.labels, task.options] if task.options else task.labels,
                       trained.head.state_dict(), encoder_state(trained.encoder),
                       shared.digest),
        config=config.to_dict(), training=report, library_version=__version__,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"))


def _digest(labels: Any, head_state: dict[str, torch.Tensor],
            encoder_state: dict[str, torch.Tensor] | None, backbone_digest: str) -> str:
    return state_digest(labels, backbone_digest, head_state, encoder_state or {})


def state_digest(settings: Any, backbone_digest: str, *states: dict[str, Any]) -> str:
    """sha256 over JSON settings, the backbone digest and tensors (by sorted name)."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    digest.update(backbone_digest.encode())
    for state in states:
        for name in sorted(state):
            digest.update(name.encode())
            digest.update(tensor_bytes(state[name]))  # raw: a bfloat16 load can update too
    return "sha256:" + digest.hexdigest()


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def load(path: PathLike, *, backbone: PathLike | None = None, runtime: str = "torch",
         threads: int | None = None, device: str = "cpu", dtype: str | None = None,
         trust_remote_code: bool = False, merge_adapter: bool = False,
         head_factories: Iterable[str] = ()) -> Function:
    """Load a saved function. `backbone` overrides where to find a referenced backbone.

    `runtime`: "torch", or "onnx" / "onnx-int8" to run a graph made by `export_onnx` (every
    task but generate; then neither the backbone nor torch's model code is loaded; `threads`
    sets ONNX Runtime's).
    `device` and `dtype` ("float16", "bfloat16") place the encoder, e.g. on a GPU (the torch
    runtime: the ONNX runtimes run on the CPU). Such a function saves float32 files of its
    rounded weights; load it in float32 to copy the exact ones.
    `trust_remote_code` lets a `generate` function's model run its own code (never read from
    the artifact: the caller decides).
    `head_factories`: the import paths ("package.module:function") of your own heads that
    this load may call. A function trained with such a head names it in its manifest, and
    anyone who can edit a manifest could name any function installed here: so none is
    imported unless you allow it, here or in the environment variable
    FUNCFORMER_HEAD_FACTORIES (comma-separated; the CLI and the server read it).
    A `lora` function attaches its adapter to the shared backbone (one backbone in memory for
    any number of them); `merge_adapter=True` folds the adapter into private copies of the
    adapted weights instead: slightly faster calls for a few MB more memory. The same holds
    for `adalora` and `ia3`; `prompt` and `prefix` functions have nothing to merge (a
    TaskError says so).
    The files saved with the function must be the ones `funcformer.json` records (their
    sha256): a weight file swapped or edited since is an ArtifactError, for the function's
    digest, which result caches and servers key by, would vouch for other weights. A save
    that replaces the directory while it loads makes it load again, from that save.

    >>> fn = funcformer.load("functions/sentiment")   # doctest: +SKIP
    """
    # a save replacing the directory mid-load (one rename) could pair the manifest read with
    # the other save's files: the record then fails, or the manifest has changed since; then
    # the load starts again, from the new save
    last = "each load was complete, but the directory had changed by its end"
    for attempt in range(LOAD_ATTEMPTS):
        if attempt:
            time.sleep(0.05 * attempt)  # the save's two renames: target out, new one in
        stamp = _manifest_stamp(Path(path))
        try:
            fn = _load(path, backbone=backbone, runtime=runtime, threads=threads,
                       device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                       merge_adapter=merge_adapter,
                       head_factories=allowed_factories(head_factories))
            # after the loaders: they name a damaged file better
            check_files(Path(path), fn.manifest)
        except ArtifactError as err:
            if _manifest_stamp(Path(path)) == stamp:
                raise
            last = f"the last attempt: {err}"
        else:
            if _manifest_stamp(Path(path)) == stamp:
                return fn
    raise ArtifactError(f"{path}: saved again {LOAD_ATTEMPTS} times while it was loading "
                        f"({last}). Fix: load it once the saves are done.")


LOAD_ATTEMPTS = 3
HEAD_FACTORIES_ENV = "FUNCFORMER_HEAD_FACTORIES"


def allowed_factories(given: Iterable[str]) -> frozenset[str]:
    """The head factories a load may call: `given` and those of FUNCFORMER_HEAD_FACTORIES.

    >>> sorted(allowed_factories(["pkg.heads:gated"]))  # doctest: +SKIP
    ['pkg.heads:gated']
    """
    if isinstance(given, str) or not all(isinstance(name, str) for name in given):
        raise TaskError(f"head_factories={given!r:.80}: a list of import paths. Fix: "
                        f"head_factories=[{given!r:.80}].")
    listed = os.environ.get(HEAD_FACTORIES_ENV, "").split(",")
    return frozenset(name.strip() for name in [*given, *listed] if name.strip())
ONNX_TASKS = ("classify", "zero_shot", "embed", "search", "pair", "tag")
"""Tasks whose functions export to ONNX and load with runtime "onnx" / "onnx-int8"."""


def _manifest_stamp(directory: Path) -> str | None:
    """The directory's inode and the sha256 of its funcformer.json (None if absent): each save
    renames a new directory into place, and a function saved again unchanged writes the same
    manifest, so the bytes alone missed a save landing mid-load."""
    try:
        if not stat.S_ISREG(os.stat(directory / MANIFEST).st_mode):
            return None  # a pipe would block; read_manifest names it
        return f"{os.stat(directory).st_ino}:{file_sha256(directory / MANIFEST)}"
    except OSError:
        return None


def _load(path: PathLike, *, backbone: PathLike | None, runtime: str, threads: int | None,
          device: str, dtype: str | None, trust_remote_code: bool,
          merge_adapter: bool, head_factories: frozenset[str]) -> Function:
    if runtime not in ("torch", "onnx", "onnx-int8"):
        raise TaskError(f"Unknown runtime '{runtime}'. Choose torch, onnx or onnx-int8.")
    if runtime != "torch" and (dtype not in (None, "float32") or merge_adapter):
        raise TaskError(f"{'merge_adapter' if merge_adapter else f'dtype {dtype!r}'} applies "
                        f"to the torch runtime; runtime '{runtime}' runs the ONNX export as "
                        "exported. Fix: drop it, or use runtime='torch'.")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1 or runtime == "torch"):
        # -1 went to ONNX Runtime unchecked, and the torch runtime ignored any number
        raise TaskError(f"threads={threads!r}: a whole number of 1 or more, for the ONNX "
                        "runtimes (runtime='onnx' or 'onnx-int8'). Fix: give one, or for the "
                        "torch runtime set torch.set_num_threads(n) / OMP_NUM_THREADS.")
    if runtime in ("onnx", "onnx-int8") and str(device).partition(":")[0] != "cpu":
        raise TaskError(f"runtime '{runtime}' runs the ONNX export on the CPU; device "
                        f"'{device}' applies to the torch runtime. Fix: device='cpu' (the "
                        f"default), or runtime='torch' to run on '{device}' (CLI: --device "
                        "cpu, or --runtime torch).")
    directory = Path(path)
    manifest = read_manifest(directory)
    if manifest.task == "generate":  # transformers would fail on a damaged file, naming none
        from ._tasks.generate import MODEL_DIR

        check_weights(directory / MODEL_DIR)  # (an encoder/: _backbone.load checks it)
    if manifest.task != "classify":
        if runtime != "torch":
            if manifest.task not in ONNX_TASKS:
                raise TaskError(f"{directory}: runtime '{runtime}' serves classify, zero_shot, "
                                f"embed, search, pair and tag functions; this is a "
                                f"{manifest.task} function. Fix: use runtime='torch'.")
            runner, tokenizer = open_graph(directory, manifest, runtime, threads)
            return task_module(manifest.task).from_graph(directory, manifest, runner,
                                                         tokenizer)
        extra = {"trust_remote_code": True} if trust_remote_code else {}
        if trust_remote_code and manifest.task != "generate":
            raise TaskError("trust_remote_code applies to generate functions only.")
        if merge_adapter:
            extra["merge_adapter"] = True
        return task_module(manifest.task).load(directory, manifest, backbone=backbone,
                                               device=device, dtype=dtype, **extra)
    _check_head_fits_labels(directory, manifest)
    try:
        task = task_class(manifest.task, manifest.options.get("multi_label", False))(
            manifest.labels, **manifest.options.get("task", {}))
    except (TypeError, ValueError) as err:  # options edited by hand
        raise ArtifactError(f"{directory / MANIFEST}: field 'options.task' cannot be used "
                            f"({str(err)[:160]}). The artifact is damaged or was edited by "
                            f"hand. {DAMAGED_FIX}") from None
    if runtime != "torch":
        runner, tokenizer = open_graph(directory, manifest, runtime, threads)
        return Classifier(task=task, backbone=tokenizer, head=None, manifest=manifest,
                          runner=runner)
    task.head_choice = HeadChoice.from_record(manifest.head)  # a user's factory: by import path
    shared = load_backbone(directory, manifest, backbone, device, dtype)
    head = load_head(directory, manifest, task.head_choice, head_factories, shared.hidden_size)
    from ._update import read_memory

    fn = Classifier(task=task, backbone=shared, head=head, manifest=manifest,
                    encoder=load_adapter(directory, manifest, shared, merge_adapter))
    fn.memory = read_memory(directory, manifest)
    return fn


def load_head(directory: Path, manifest: Manifest, choice: HeadChoice,
              factories: frozenset[str], width: int | None = None) -> torch.nn.Module:
    """The head saved at `directory`, for an encoder of `width` features. A factory head is
    built only when the caller allowed its import path (`factories`). Sizes come from the
    manifest: a linear or MLP head is first built on the meta device and must have the tensors
    of head.safetensors, so an edited size cannot make it allocate what the file does not hold
    (a factory, user code, is built for real, once its `hidden` is the encoder's width)."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    from ._model import _factory

    assert manifest.head is not None  # the manifest's validator requires one for classify
    where = f"{directory}: "
    kind = choice.kind
    if kind not in ("linear", "mlp") and ":" not in kind:
        _factory(kind, ArtifactError, where)  # "unknown head type": nothing to allow
    if kind not in ("linear", "mlp") and kind not in factories:
        raise ArtifactError(
            f"{directory}: its head is built by '{kind}', a function its {MANIFEST} names; "
            f"funcformer imports and calls such a function only when you allow it, for anyone "
            f"who can edit a manifest could name any function installed here. Fix, for a "
            f"function you trust: {HEAD_FACTORIES_ENV}={kind} in the environment (the command "
            f"line, the server, map, Engine.from_directory), or "
            f"funcformer.load(..., head_factories=['{kind}']).")
    hidden, outputs = manifest.head.hidden, manifest.head.outputs
    dropout = manifest.config.get("dropout", 0.1)
    for name, value, good in (
            ("head.hidden", hidden, isinstance(hidden, int) and hidden > 0
             and (width is None or hidden == width)),
            ("head.outputs", outputs, isinstance(outputs, int) and outputs > 0),
            ("config.dropout", dropout, isinstance(dropout, int | float)
             and not isinstance(dropout, bool) and 0 <= dropout <= 1)):
        if not good:
            size = f" (the encoder's width is {width})" if name == "head.hidden" and width else ""
            raise ArtifactError(f"{directory / MANIFEST}: field '{name}' is {value!r:.40}, "
                                f"which no funcformer writes{size}. The manifest was edited by "
                                f"hand or is damaged. {DAMAGED_FIX}")
    head_file = directory / HEAD_FILE
    if not head_file.is_file():
        raise ArtifactError(f"{directory}: {HEAD_FILE} is missing. Save the function again.")
    try:
        with safe_open(str(head_file), "pt") as handle:
            saved = {key: tuple(handle.get_slice(key).get_shape())
                     for key in handle.keys()}  # noqa: SIM118 (not a dict)
    except Exception as err:  # safetensors' own errors, OSError
        raise ArtifactError(f"{head_file}: cannot load the head weights ({str(err)[:200]}). "
                            f"The artifact is damaged. {DAMAGED_FIX}") from None

    def build() -> torch.nn.Module:
        try:
            return choice.build(hidden, outputs, float(dropout), error=ArtifactError,
                                where=where)
        except (TypeError, ValueError, RuntimeError) as err:  # options edited by hand
            raise ArtifactError(f"{directory / MANIFEST}: the head it describes cannot be "
                                f"built ({type(err).__name__}: {str(err)[:160]}). "
                                f"{DAMAGED_FIX}") from None

    # ours on the meta device, so an edited width allocates nothing; a user's factory for
    # real (under the meta device its module, imported then, would keep meta tensors for
    # good), its hidden size bounded by the encoder's width above
    if kind in ("linear", "mlp"):
        with torch.device("meta"):
            planned = build()
    else:
        planned = head = build()
    wanted = {key: tuple(value.shape) for key, value in planned.state_dict().items()}
    if wanted != saved:
        raise ArtifactError(f"{head_file}: its tensors {_shapes(saved)} are not those of "
                            f"the head {MANIFEST} describes {_shapes(wanted)}; the manifest "
                            f"was edited by hand or is damaged. {DAMAGED_FIX}")
    if kind in ("linear", "mlp"):
        head = build()
    try:
        head.load_state_dict(load_file(str(head_file)))
    except (SafetensorError, RuntimeError, OSError) as err:
        raise ArtifactError(f"{head_file}: cannot load the head weights ({str(err)[:200]}). "
                            f"The artifact is damaged. {DAMAGED_FIX}") from None
    return head


def _shapes(shapes: Mapping[str, tuple[int, ...]]) -> str:
    text = ", ".join(f"{key} {list(shape)}" for key, shape in sorted(shapes.items()))
    return f"({text[:200]})"


def _check_head_fits_labels(directory: Path, manifest: Manifest) -> None:
    """One head output per label: an edited label list would otherwise fail (or pair scores
    with the wrong labels) at the first prediction."""
    assert manifest.head is not None  # the manifest's validator requires one for classify
    if manifest.head.outputs != len(manifest.labels):
        raise ArtifactError(
            f"{directory / MANIFEST}: {len(manifest.labels)} labels in 'labels', but the head "
            f"has {manifest.head.outputs} outputs (one per label); the manifest was edited "
            f"by hand or is damaged. {DAMAGED_FIX}")


def load_adapter(directory: Path, manifest: Manifest, shared: _backbone.Backbone,
                 merge: bool = False) -> torch.nn.Module | None:
    """The adapter view saved with a `lora` (`adalora`, `ia3`, `prompt`, `prefix`) function
    (None for other functions)."""
    if manifest.adapter is None:
        if merge:
            raise TaskError(f"{directory}: merge_adapter applies to LoRA, AdaLoRA and IA³ "
                            f"functions; this one was trained with '{manifest.method}'.")
        return None
    from . import _lora

    return _lora.attach(shared.model, directory, merge=merge)


def load_backbone(directory: Path, manifest: Manifest, override: PathLike | None,
                   device: str, dtype: str | None) -> _backbone.Backbone:
    ref = manifest.backbone
    if ref.included:
        where: PathLike = directory / ENCODER_DIR
        if not (directory / ENCODER_DIR / "config.json").is_file():
            raise ArtifactError(f"{directory}: the fine-tuned encoder ({ENCODER_DIR}/) is "
                                "missing. Save the function again.")
    else:
        where = override or ref.name
    shared = _backbone.load(where, device=device, dtype=dtype, offline=True,
                            error=ArtifactError if ref.included else BackboneNotFound)
    if shared.digest != ref.digest:
        what = "its fine-tuned encoder" if ref.included else f"backbone '{ref.name}'"
        raise ArtifactError(
            f"{directory}: this function was trained on {what} with weights digest "
            f"{ref.digest[:19]}…, but the weights found at {shared.path} have digest "
            f"{shared.digest[:19]}…; its predictions would be wrong. Fix: pass backbone= "
            "(or --backbone) pointing to the original weights, or retrain.")
    return shared


def onnx_file(int8: bool) -> str:
    return "model-int8.onnx" if int8 else "model.onnx"


def need_torch(runner: Any, what: str) -> None:
    """Refuse `what` on a function loaded from its ONNX export (`runner` set): the graph
    holds no separate weights to read, save or export."""
    if runner is not None:
        raise TaskError(f"{what} needs the torch runtime: this function runs on its ONNX "
                        "export, which holds no separate encoder or head. Fix: load it with "
                        "runtime='torch' (the default).")


def run_graph(runner: Any, backbone: _backbone.Backbone, texts: Sequence[str],
              max_length: int | None, width: int) -> tuple[torch.Tensor, int]:
    """The graph's outputs (a classifier's logits, (N, width)) for `texts`, in input order
    (length-sorted token-budget batches, as on torch), and how many texts were cut at the
    token limit. Graphs of pooled features run in `Backbone.embed` instead (its `graph`)."""
    encoded, batches = backbone.batches(texts, max_length)
    out = torch.zeros((len(texts), width))
    for index, batch in batches:
        out[index] = runner(batch["input_ids"], batch["attention_mask"])
    return out, encoded.truncated


def pooled(backbone: _backbone.Backbone, encoder: torch.nn.Module | None,
           head: torch.nn.Module) -> torch.nn.Module:
    """`encoder` (None: the backbone's), the backbone's pooling and `head`, as one module."""
    from ._model import FunctionModel

    return FunctionModel(encoder if encoder is not None else backbone.model, head,
                         backbone.pooling)


def export_graph(digest: str, backbone: _backbone.Backbone, model: torch.nn.Module,
                 path: PathLike, int8: bool, token_types: bool = False,
                 graph_of: str | None = None) -> Path:
    """Export `model` (its `encoder`, pooling and head: see `pooled`) as one ONNX graph into
    the artifact at `path` of the function of `digest`: `onnx/model.onnx` (or
    `model-int8.onnx`), the tokenizer, and last `onnx/export.json`, which records `digest`
    (and `graph_of`, see `_onnx.write_record`). `token_types`: the graph takes
    token_type_ids too (a pair's cross-encoder)."""
    from . import _onnx

    encoder = model.encoder
    dtype = next(encoder.parameters()).dtype
    if dtype != torch.float32:
        # the graph would hold the rounded weights under the float32 function's digest,
        # which load(runtime="onnx") takes as proof the two answer alike
        raise TaskError(f"This function was loaded in {str(dtype).removeprefix('torch.')}; "
                        "an ONNX export made from its rounded weights would not match the "
                        "artifact it is stamped with. Fix: load it without dtype= (float32) "
                        "to export it; the export runs on the CPU whatever the device.")
    _check_export_home(Path(path), digest)
    directory = Path(path) / ONNX_DIR
    _refuse_links(directory)
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    try:
        # ORT's transformer fusions measured slower once weights are int8 on AVX2 (the fused
        # Attention op stays fp32); int8 graphs are therefore left unfused.
        target = _onnx.export(model.eval(), directory / onnx_file(int8), int8=int8,
                              optimize=not int8, token_types=token_types)
        backbone.tokenizer.save_pretrained(directory)
        encoder.config.save_pretrained(directory)
        copy_pooling_files(backbone.path, directory)
    except BaseException:
        if created:  # no export was there: leave none, not an empty or partial onnx/
            shutil.rmtree(directory, ignore_errors=True)
        raise
    _onnx.write_record(directory, digest, target, __version__, graph_of)  # last: vouches
    even_modes(directory, directory / EXPORT_RECORD)
    return target


def _refuse_links(directory: Path) -> None:
    """An export writes (and sets the modes of) the files in `directory`: a symbolic link
    there, or `directory` itself one, would make it write wherever the link points, outside
    the function (a folder received from someone else can hold such links)."""
    if directory.is_symlink():
        links = [directory]
    elif directory.is_dir():
        links = [entry for entry in directory.rglob("*") if entry.is_symlink()]
    else:
        return
    if links:
        raise ArtifactError(f"{links[0]}: a symbolic link (to {os.readlink(links[0])}); an "
                            f"export writes into {directory} and would write through it, "
                            f"outside the function. Fix: remove it (rm {links[0]}) and export "
                            "again.")


def open_graph(directory: Path, manifest: Manifest, runtime: str,
               threads: int | None) -> tuple[Any, _backbone.Backbone]:
    """The ONNX runner of the function saved at `directory` (its export for `runtime`, checked
    against the manifest's digest) and a model-less backbone with its tokenizer."""
    from ._onnx import open_export

    int8 = runtime == "onnx-int8"
    graph = directory / ONNX_DIR / onnx_file(int8)
    flag = " --int8" if int8 else ""
    if not graph.is_file():
        raise ArtifactError(f"{directory}: no ONNX export ({ONNX_DIR}/{graph.name}). Fix: run "
                            f"funcformer export {directory} --onnx{flag}")
    fix = f"Fix: run funcformer export {directory} --onnx{flag} again."
    runner = open_export(directory / ONNX_DIR, graph, manifest.digest, threads=threads, fix=fix)
    return runner, _backbone.load_tokenizer(directory / ONNX_DIR, fix)


def _check_export_home(path: Path, digest: str) -> None:
    """An export goes into the directory this function is saved in: elsewhere it would be
    stray files, or (in another function's directory) a graph answering for that one."""
    if not (path / MANIFEST).is_file():
        raise TaskError(f"{path}: no function is saved there ({MANIFEST} is missing); an ONNX "
                        "export goes into the directory of the function it runs. Fix: "
                        "fn.save(path) first, then export there.")
    if read_manifest(path).digest != digest:
        raise TaskError(f"{path}: holds another function (or another version of this one); "
                        "its export would not be this function. Fix: export into this "
                        "function's own directory (fn.save(path) first), or load the one "
                        "saved there and export that.")
