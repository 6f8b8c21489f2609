"""Training configuration: one dataclass used from Python, the CLI and artifacts alike."""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from ._errors import DataError, TaskError, is_real, is_whole


class Options:
    """Base of small keyword-only settings dataclasses (`LoRA`, `SelfTraining`, ...): stored as
    a dict in TrainConfig and the manifest, rebuilt with `from_value`. `option_name` is what
    error messages call them (default: the class name)."""

    option_name: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_value(cls, value: Any) -> Any:
        """Settings from None (the defaults), an instance, or a dict of its fields."""
        name = cls.option_name or cls.__name__
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise TaskError(f"{name} settings must be a funcformer.{cls.__name__}(...) or a "
                            f"dict, got {value!r}.")
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = set(value) - known
        if unknown:
            raise TaskError(f"Unknown {name} option(s): {', '.join(sorted(unknown))}. "
                            f"Known: {', '.join(sorted(known))}.")
        return cls(**value)


EVAL_FRACTION = 0.1
"""`TrainConfig.eval_fraction` when not given (`contrastive`: 0)."""
METHODS = ("auto", "head", "full", "lora", "contrastive", "adalora", "ia3", "prompt", "prefix")
METRICS = ("accuracy", "macro_f1", "micro_f1")
"""Early-stopping metrics a user can choose for `classify` (micro_f1: multi-label only); other
tasks use their own (Spearman for `embed` and `pair`, entity F1 for `tag`, MRR for `search`,
loss for `generate`)."""
OPTIMIZERS = ("adamw", "sgd", "adafactor")
SCHEDULES = ("linear", "cosine", "constant")
LOSSES = ("cross_entropy", "focal")
PRECISIONS = ("fp32", "bf16")
CONTRASTIVE_LOSSES = ("auto", "pairs", "supcon")
HEADS = ("linear", "mlp")
"""Built-in heads; `head` may also name a factory by import path, "package.module:function"."""
LABEL_TEMPLATE = "This sentence is {}."
CLASSIFY_ONLY = {"loss": "cross_entropy", "label_smoothing": 0.0, "focal_gamma": 2.0,
                 "class_weight": None, "head": "linear", "head_hidden": 256,
                 "head_options": None, "label_texts": True, "label_template": LABEL_TEMPLATE,
                 "label_names": None, "contrastive_loss": "auto", "metric": "accuracy"}
"""Settings of a classifier's head, loss and eval metric, with their defaults; other tasks have
their own (a pair function's --config with metric: macro_f1 trained on Spearman, silently)."""
_FACTORY_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
"""A head factory's import path, "package.module:function"."""
# Defaults that differ by method: the head trains on cached features, so it can afford many
# cheap epochs at a high learning rate; full fine-tuning takes few epochs at a small one.
_METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "head": {"epochs": 30, "learning_rate": 5e-2, "batch_size": 32, "patience": 5},
    "full": {"epochs": 4, "learning_rate": 5e-5, "batch_size": 16, "patience": 2,
             "head_learning_rate": 1e-3},
    # Few examples: many cheap epochs over them; batches of 16 hold 8 same-label pairs. On SST-2
    # with 8 per class (3 seeds), 40 epochs at 5e-5 gave 0.674 dev accuracy; 20 at 2e-5 0.663,
    # 40 at 1e-4 0.665 (head alone: 0.654).
    # Only the adapter (and the head) train: a larger step than `full` suits them.
    "lora": {"epochs": 4, "learning_rate": 5e-4, "batch_size": 16, "patience": 2,
             "head_learning_rate": 1e-3},
    # The other PEFT methods train even fewer weights: larger steps. Prompt and prefix tuning
    # learn a few vectors from scratch and are known to need the largest. AdaLoRA's singular
    # values start at zero: on SST-2 (1,000 rows, 300 dev), 1e-3 never beat the linear probe
    # (0.787 -> 0.777), 3e-3 did (0.803).
    **{method: {"epochs": 4, "learning_rate": rate, "batch_size": 16, "patience": 2,
                "head_learning_rate": 1e-3}
       for method, rate in (("adalora", 3e-3), ("ia3", 5e-3), ("prompt", 3e-2),
                            ("prefix", 1e-2))},
    # None: the method sets them from the data, epochs from its size (`contrastive.epochs_for`)
    # and the learning rate from its labels and their examples (`contrastive.learning_rate_for`).
    "contrastive": {"epochs": None, "learning_rate": None, "batch_size": 16, "patience": 40},
}


@dataclass(kw_only=True)
class TrainConfig:
    """How a function is trained.

    >>> TrainConfig(method="full", epochs=2).resolved().learning_rate
    5e-05
    """

    method: str | None = None
    """`head`: frozen backbone, features computed once, only the head trains (seconds).
    `full`: the whole encoder and the head train together (minutes). `lora`: a LoRA adapter on
    the frozen, shared backbone and the head train (a small artifact); `adalora`, `ia3`,
    `prompt` and `prefix` do the same with AdaLoRA, IA³, prompt or prefix tuning (classify
    only; see docs/methods.md, "More PEFT methods"). `contrastive`: few-shot,
    the encoder learns which texts share a label, then a head is fit. `auto`: chosen from the
    data (see docs/methods.md). None: the task's default (`auto` for classify, `full` for
    tasks that train an encoder or a decoder)."""
    lora: dict[str, Any] | None = None
    """LoRA settings (`funcformer.LoRA` or its dict) for `lora`, and for `contrastive` to tune
    the encoder through an adapter instead of a full copy; None with `lora`: LoRA(); None where
    `auto` picks `lora` for classify: `_methods.AUTO_LORA`, LoRA(r=16, feed_forward=True)."""
    peft: dict[str, Any] | None = None
    """Settings of method `adalora`, `ia3`, `prompt` or `prefix`: a `funcformer.AdaLoRA`,
    `IA3`, `PromptTuning` or `PrefixTuning`, or a dict of its fields; None: its defaults."""
    epochs: int | None = None
    """Passes over the training data; None takes the method's default (head 30, full 4)."""
    learning_rate: float | None = None
    """Peak learning rate after warm-up; None takes the method's default (head 5e-2, full 5e-5)."""
    batch_size: int | None = None
    """Examples per optimizer step; None takes the method's default (head 32, full 16)."""
    head_learning_rate: float | None = None
    """Learning rate of the head while the encoder trains (`full`); None: 1e-3. The head is
    first fit on frozen features (linear probing), then everything is fine-tuned together."""
    optimizer: str = "adamw"
    """`adamw` (AdamW, fused kernel), `sgd` (with momentum `momentum`, Nesterov with
    `nesterov`) or `adafactor` (transformers' Adafactor at the learning rate given here: its
    relative step and parameter scaling are off, so the schedule below drives it). The method
    defaults for the learning rate are tuned for AdamW; SGD usually wants a larger one."""
    momentum: float = 0.9
    """Momentum of `sgd`."""
    nesterov: bool = False
    """Nesterov momentum for `sgd`."""
    weight_decay: float = 0.01
    """Decoupled weight decay (AdamW, Adafactor; L2 for SGD); never applied to biases nor to
    the weights of normalisation layers (LayerNorm, RMSNorm)."""
    schedule: str = "linear"
    """Learning rate after the warm-up: `linear` decay to zero at the last step, `cosine`
    decay to zero, or `constant`."""
    warmup_ratio: float = 0.1
    """Fraction of all steps spent warming the learning rate up linearly from zero."""
    loss: str = "cross_entropy"
    """`classify`: `cross_entropy` (softmax; multi-label: one sigmoid per label) or `focal`
    (Lin et al. 2017: cross-entropy scaled by (1 - p)^focal_gamma, so examples the model
    already gets right count less)."""
    label_smoothing: float = 0.0
    """`classify`: the target keeps 1 - label_smoothing on the gold label and spreads the rest
    over all labels (multi-label: targets move towards 0.5 by label_smoothing / 2)."""
    focal_gamma: float = 2.0
    """Focusing strength of `loss="focal"`; 0 is plain cross-entropy."""
    class_weight: str | dict[str, float] | None = None
    """`classify`: None (every example counts the same), "balanced" (computed from the training
    data: n / (labels x count of the label); multi-label: negatives / positives of each label,
    as BCE's positive weight), or {label: weight} (labels left out weigh 1)."""
    head: str = "linear"
    """`classify`: `linear` (dropout, then one linear layer), `mlp` (dropout, linear to
    `head_hidden` units, GELU, dropout, linear), or your own: "package.module:factory", called
    as factory(hidden=..., outputs=..., **head_options) and returning a torch.nn.Module that
    maps features (B, hidden) to logits (B, outputs). The artifact records the import path and
    options (never the code): loading needs the same code importable."""
    head_hidden: int = 256
    """Hidden units of the `mlp` head."""
    head_options: dict[str, Any] | None = None
    """Keyword arguments for a custom head factory (JSON values: they go in the artifact)."""
    label_texts: bool = True
    """`classify` (single-label, every method): each label also enters training as a short
    text made from its name with `label_template` ("This sentence is sports."), twice, as
    SetFit's templated examples do: names like "sports" or "sadness" carry meaning the encoder
    already has. Used only when every label reads as words ("Sci/Tech", "card_arrival") or is
    named in `label_names`; codes ("0", "LABEL_1") are left out. False: never."""
    label_template: str = LABEL_TEMPLATE
    """The text a label's name (or its `label_names` words) fills in place of `{}`."""
    label_names: dict[str, str] | None = None
    """Words for labels, for `label_template`: {"0": "negative", "1": "positive"} lets coded
    labels take part; labels left out use their own name."""
    contrastive_loss: str = "auto"
    """The encoder's loss in `contrastive`: `pairs` (SetFit's objective on every pair in a
    batch: cosine 1 for two texts of one label, 0 otherwise), `supcon` (supervised contrastive,
    Khosla et al. 2020), or `auto`: `pairs` up to 8 labels, `supcon` above (with 8 examples
    per label, pairs led by 0.8-10 points on SST-2, CR, AG News, Emotion and TREC, supcon by
    3.6 on Banking77's 77 labels; docs/methods.md)."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this global L2 norm."""
    precision: str = "fp32"
    """`fp32`, or `bf16`: the training forward passes run under bfloat16 autocast (matrix
    products in bfloat16; weights, gradients, optimizer state and the loss stay float32). For
    CPUs with AMX or AVX512-BF16 (recent Xeons): on such a Xeon, runs
    took 6-26% less time (more for longer texts) at the same accuracy (bench/precision.py). On
    CPUs without them it is emulated and slower (a warning says so); on an H200 GPU a warm
    run of `full` took float32's time and the first runs 7-16 s more (docs/benchmarks.md, "On
    a GPU"). Evaluation and the saved weights are float32 either way."""
    patience: int | None = None
    """Stop after this many epochs without a better eval metric; None: method default."""
    metric: str = "accuracy"
    """Eval metric for early stopping and choosing the best epoch (`classify`): accuracy,
    macro_f1 or micro_f1 (multi-label uses micro_f1 unless macro_f1 is asked for; micro_f1
    is refused for single-label data, where it equals accuracy)."""
    eval_fraction: float | None = None
    """Share of the training data held out for early stopping when no eval data is given.
    None: `EVAL_FRACTION` (a tenth), except that `contrastive` holds out nothing: its few
    examples all count (Emotion with 64 per class, 3 seeds: 0.715 accuracy trained on all of
    them, 0.691 with a tenth held out to stop the head early). Give eval data, or set this,
    for an eval metric there."""
    max_length: int | None = None
    """Token limit per text; None uses the backbone's (256 for all-MiniLM-L6-v2)."""
    dropout: float = 0.1
    """Dropout before each linear layer of the `linear` and `mlp` heads during training."""
    seed: int = 42
    """Seed for initialisation, data order and the held-out split: same seed, same result."""
    checkpoint_dir: str | None = None
    """Write a checkpoint here (atomically) at each epoch's end, for `resume`. Applies to the
    runs that train an encoder or decoder, and to `tag` / `pair` heads; a `classify` head on
    frozen features trains in seconds and is not saved (it says so)."""
    checkpoint_steps: int | None = None
    """Also checkpoint every this many steps (with `checkpoint_dir`)."""
    log_dir: str | None = None
    """Write TensorBoard scalars here (training loss and learning rate per step, epoch loss
    and eval metric per epoch); needs `pip install 'funcformer[tensorboard]'`."""
    resume: bool = False
    """Continue from the checkpoint in `checkpoint_dir` (if there is one): a run killed mid-way
    ends with the same weights as one never interrupted (same data, options and seed)."""

    def __post_init__(self) -> None:
        if self.lora is not None:
            from ._lora import LoRA

            self.lora = LoRA.from_value(self.lora).to_dict()
            if self.method not in (None, "auto", "lora", "contrastive"):  # head ignored them
                raise TaskError(f"LoRA settings (lora=...) apply to method 'lora' (or "
                                f"'contrastive' tuning through an adapter); '{self.method}' does "
                                "not use them. Fix: drop lora= or use method='lora'.")
        if self.peft is not None and self.method not in (None, "auto"):  # else: once chosen
            from ._peft import settings

            self.peft = settings(self.method, self.peft).to_dict()
        if self.method is not None and self.method not in METHODS:
            raise TaskError(f"Unknown training method '{self.method}'. Choose one of: "
                            f"{', '.join(METHODS)}.")
        if self.metric not in METRICS:
            raise TaskError(f"Unknown metric '{self.metric}'. Choose one of: "
                            f"{', '.join(METRICS)}.")
        for name, choices in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES),
                              ("loss", LOSSES), ("precision", PRECISIONS),
                              ("contrastive_loss", CONTRASTIVE_LOSSES)):
            if getattr(self, name) not in choices:
                raise TaskError(f"Unknown {name} '{getattr(self, name)}'. Choose one of: "
                                f"{', '.join(choices)}.")
        self._check_flags_and_paths()  # first: nesterov 'no' is not "nesterov needs momentum"
        self._check_numbers()
        self._check_head()
        self._check_label_words()
        self.class_weight = _class_weight(self.class_weight)

    def _check_numbers(self) -> None:
        """Every number checked and stored as Python's own int or float (NumPy's are taken:
        a value from `np.arange` or `np.logspace` trains and is saved like a literal)."""
        for name in ("epochs", "batch_size", "patience", "max_length", "checkpoint_steps",
                     "head_hidden"):
            value = self._number(name, integer=True)
            if value is not None and value < 1:
                raise TaskError(f"{name} must be at least 1, got {value}.")
        seed = self._number("seed", integer=True)
        if seed is None or not -2 ** 63 <= seed < 2 ** 64:
            raise TaskError(f"seed must be a whole number (a 64-bit seed), got {seed!r}.")
        for name in ("learning_rate", "head_learning_rate"):
            value = self._number(name)
            if value is not None and not value > 0:
                raise TaskError(f"{name} must be positive, got {value}.")
        ranges = {"eval_fraction": (0, 0.5), "warmup_ratio": (0, 1), "dropout": (0, 1),
                  "label_smoothing": (0, 1), "momentum": (0, 1)}
        for name, (low, high) in ranges.items():
            value = self._number(name)
            if value is not None and not low <= value < high:
                raise TaskError(f"{name} must be in [{low}, {high}), got {value}.")
        for name in ("weight_decay", "focal_gamma", "max_grad_norm"):
            value = self._number(name)
            if value < 0:
                raise TaskError(f"{name} must be at least 0, got {value}.")
        if self.nesterov and self.momentum == 0:
            raise TaskError("nesterov needs momentum > 0.")

    def _check_flags_and_paths(self) -> None:
        """A setting given as text where a switch or a path is due: "no" would have turned
        Nesterov momentum or resuming on, and a number or list for a directory was a TypeError
        deep in training."""
        for name in ("nesterov", "resume"):
            if getattr(self, name) is None:  # a YAML `resume:` left blank: off, as before
                setattr(self, name, False)
            elif not isinstance(getattr(self, name), bool):
                raise TaskError(f"{name} must be true or false, got {getattr(self, name)!r}.")
        for name in ("checkpoint_dir", "log_dir"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise TaskError(f"{name} must be a directory path, got {value!r}.")

    @property
    def eval_share(self) -> float:
        """`eval_fraction`, or the share held out when it is not given (for every method but
        `contrastive`, whose default `_methods.fit` applies).

        >>> TrainConfig().eval_share, TrainConfig(eval_fraction=0).eval_share
        (0.1, 0.0)
        """
        return EVAL_FRACTION if self.eval_fraction is None else self.eval_fraction

    def _number(self, name: str, integer: bool = False) -> Any:
        """Field `name` as Python's int (`integer`) or float, stored back; None stays None;
        anything else (a bool, a string, a float where a whole number is due, NaN or infinity
        except `max_grad_norm=inf`, which turns clipping off) a TaskError."""
        value = getattr(self, name)
        if value is None:
            return None
        if not (is_whole(value) if integer else is_real(value)):
            kind = "a whole number" if integer else "a number"
            raise TaskError(f"{name} must be {kind}, got {value!r}.")
        value = int(value) if integer else float(value)
        if not math.isfinite(value) and not (name == "max_grad_norm" and value == math.inf):
            # an infinite learning rate trains a model of NaNs, and saves it
            raise TaskError(f"{name} must be a finite number, got {value}.")
        setattr(self, name, value)
        return value

    def _check_head(self) -> None:
        if not isinstance(self.head, str) or (self.head not in HEADS
                                              and not _FACTORY_PATH.fullmatch(self.head)):
            raise TaskError(f"Unknown head {self.head!r}. Choose one of: {', '.join(HEADS)}, or "
                            "name your own factory as 'package.module:function'.")
        if self.head_options is not None:
            if not isinstance(self.head_options, dict):
                raise TaskError(f"head_options must be a dict of keyword arguments, got "
                                f"{self.head_options!r}.")
            if self.head in HEADS:
                raise TaskError(f"head_options go to a custom head factory; the '{self.head}' "
                                "head takes head_hidden and dropout.")

    def _check_label_words(self) -> None:
        if not isinstance(self.label_texts, bool):
            raise TaskError(f"label_texts must be true or false, got {self.label_texts!r}.")
        check_template(self.label_template, "label_template")
        names = self.label_names
        if names is not None:
            if not isinstance(names, dict) or not all(
                    isinstance(word, str) and word.strip() for word in names.values()):
                raise TaskError(f"label_names must map labels to non-empty words, e.g. "
                                f"{{'0': 'negative', '1': 'positive'}}; got {names!r}.")
            self.label_names = {str(label): word.strip() for label, word in names.items()}

    def resolved(self) -> TrainConfig:
        """A copy with every None replaced by the method's default."""
        values = asdict(self)
        values["method"] = self.method or "head"
        if values["method"] == "auto":
            raise TaskError("method 'auto' is chosen from the data by funcformer.train; "
                            "resolve a concrete method.")
        defaults = {"head_learning_rate": values["learning_rate"],
                    **_METHOD_DEFAULTS[values["method"]]}
        for name, default in defaults.items():
            if values[name] is None:
                values[name] = default
        return TrainConfig(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> TrainConfig:
        """The settings in a YAML or JSON file (keys are this class's fields).

        >>> TrainConfig.from_file("train.yaml").optimizer   # doctest: +SKIP
        'sgd'
        """
        values = read_config_file(path)
        try:
            return cls(**values)
        except TaskError as err:
            raise DataError(f"{path}: {err}") from None


def check_template(template: Any, name: str = "template") -> str:
    """`template` if it is text with exactly one `{}` (where a label goes) and no other brace
    field; else a TaskError naming the option."""
    if not isinstance(template, str) or template.count("{}") != 1:
        raise TaskError(f"The {name} {template!r} must contain exactly one '{{}}' where the "
                        "label goes, e.g. 'This text is about {}.'")
    try:
        template.format("x")
    except (IndexError, KeyError, ValueError):
        raise TaskError(f"The {name} {template!r} may hold no braces but one '{{}}' (write "
                        "{{ and }} for a literal brace).") from None
    return template


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The {field: value} mapping in a YAML (.yaml, .yml) or JSON file of TrainConfig
    settings; an unknown key, a bad file or a bad value is a DataError naming the file."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"{file}: no such config file. Fix: pass a .yaml or .json file of "
                        "training settings.")
    suffix = file.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise DataError(f"{file}: a config file must be .yaml, .yml or .json.")
    values = _parse(file, suffix)
    if not isinstance(values, dict):
        raise DataError(f"{file}: expected a mapping of settings (e.g. 'epochs: 3'), got "
                        f"{type(values).__name__}.")
    known = [f.name for f in fields(TrainConfig)]
    for key in values:
        if key not in known:
            hint = f" Did you mean '{key.replace('-', '_')}'?" if \
                str(key).replace("-", "_") in known else ""
            raise DataError(f"{file}: unknown key '{key}'.{hint} Known keys: "
                            f"{', '.join(known)}.")
    try:
        TrainConfig(**values)
    except TaskError as err:
        raise DataError(f"{file}: {err}") from None
    return values


def check_metric(metric: str, multi_label: bool) -> None:
    """Refuse a metric a classify function of this kind is not scored with: micro-F1 of a
    single-label one (it equals accuracy there) ended training, or a tuning run after its first
    trial, in a KeyError."""
    known = METRICS if multi_label else tuple(m for m in METRICS if m != "micro_f1")
    if metric not in known:
        kind = "multi-label" if multi_label else "single-label"
        raise TaskError(f"metric {metric!r} does not score {kind} classify functions. Choose "
                        f"one of: {', '.join(known)}.")


def _parse(file: Path, suffix: str) -> Any:
    import json

    raw = file.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # Notepad's byte-order mark is no setting
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataError(f"{file}, line {line}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at "
                        f"byte offset {err.start}). Fix: save the file as UTF-8.") from None
    if suffix == ".json":
        def once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
            keys = [key for key, _ in pairs]
            twice = next((key for key in keys if keys.count(key) > 1), None)
            if twice is not None:  # json kept the last one, silently
                raise DataError(f"{file}: the key {twice!r} is given twice. Fix: give it once.")
            return dict(pairs)

        try:
            return json.loads(text, object_pairs_hook=once)
        except json.JSONDecodeError as err:
            raise DataError(f"{file}, line {err.lineno}: not valid JSON ({err.msg}).") from None
    from ._errors import require

    yaml = require("yaml", "yaml")
    try:
        return yaml.load(text, Loader=_yaml_loader(yaml))  # a SafeLoader: no Python objects
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        raise DataError(f"{file}{where}: not valid YAML "
                        f"({getattr(err, 'problem', None) or err}).") from None


def _yaml_loader(yaml: Any) -> Any:
    """PyYAML's safe loader, reading `5e-5` as the number YAML 1.2 makes it: YAML 1.1 wants
    `5.0e-5`, so a learning rate written the usual way was the text '5e-5' (and refused); and
    refusing a key given twice in one mapping (PyYAML kept the last one, silently)."""

    class Loader(yaml.SafeLoader):  # type: ignore[misc,name-defined]
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            lines: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` may repeat keys
                    continue
                key = self.construct_object(key_node, deep=deep)
                if isinstance(key, (str, int, float, bool)) and key in lines:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {key!r} is given twice, first on line "
                        f"{lines[key] + 1}; give it once", key_node.start_mark)
                lines.setdefault(key, key_node.start_mark.line)
            return super().construct_mapping(node, deep=deep)

    Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                                 re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
                                 list("-+0123456789."))
    return Loader


def _class_weight(value: Any) -> str | dict[str, float] | None:
    if value is None or value == "balanced":
        return value
    if isinstance(value, dict) and value and all(
            is_real(w) and w > 0
            for w in value.values()):
        return {str(label): float(weight) for label, weight in value.items()}
    raise TaskError(f"class_weight must be None, 'balanced' or {{label: positive weight}}, got "
                    f"{value!r}.")
