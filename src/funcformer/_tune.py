"""Hyperparameter search for `classify` functions with Optuna (the `[tune]` extra).

Each trial trains a function with settings drawn by Optuna's TPE sampler: the method, its
learning rate and epochs (ranges per method), the head (linear or MLP) and the loss options
(focal or cross-entropy, label smoothing, balanced class weights). The training loop reports
the eval metric after every epoch of a `full` or `lora` trial (through `_train.epoch_hook`), so
a pruner (MedianPruner by default) stops those that fall behind the others at the same epoch.
Every trial trains on the same data with the same seed and is scored on the same eval data:
the search is reproducible. The best function and a table of the trials are kept.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._config import TrainConfig, check_metric
from ._errors import FuncformerError, TaskError, is_real, is_whole, require

RANGES: dict[str, tuple[tuple[float, float], tuple[int, int]]] = {
    "head": ((1e-3, 1e-1), (10, 60)),
    "full": ((1e-5, 1e-4), (1, 4)),
    "lora": ((1e-4, 2e-3), (1, 6)),
    "contrastive": ((1e-5, 2e-4), (5, 40)),  # its default: 1e-4 with 3-8 labels of 32+ rows
}
"""Per method: the learning rate range (searched on a log scale) and the epochs range."""
REPORTED = {"full": "fine-tune", "lora": "lora"}
"""Methods whose trials report their per-epoch eval metric (and so can be pruned), with the
name of the run that reports: the encoder's fine-tuning, not the head fit first. `head` trains
in seconds on cached features, and `contrastive` evaluates only once its encoder is tuned:
there is nothing to save by pruning them."""
COLUMNS = ("trial", "state", "method", "learning_rate", "epochs", "head", "loss",
           "label_smoothing", "class_weight", "metric", "epochs_run", "seconds")
TRIALS_CSV, TRIALS_MD = "trials.csv", "trials.md"


@dataclass
class Tuning:
    """What a search found: the best function, every trial, and the time it took.

    >>> result = funcformer.tune("classify", "train.csv", eval_data="dev.csv",
    ...                          trials=10)                              # doctest: +SKIP
    >>> result.best_settings                                         # doctest: +SKIP
    {'method': 'lora', 'learning_rate': 0.00041, 'epochs': 3, ...}
    >>> result.save("functions/tuned")                               # doctest: +SKIP
    """

    best: Any
    """The best trial's function (trained on the training data, scored on the eval data)."""
    best_settings: dict[str, Any]
    metric: str
    trials: list[dict[str, Any]] = field(default_factory=list)
    """One row per trial: COLUMNS' values (`metric`: the last value a pruned trial reported)."""
    seconds: float = 0.0

    def table(self) -> str:
        """The trials as a Markdown table."""
        head = [c if c != "metric" else self.metric for c in COLUMNS]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(_cell(row[c]) for c in COLUMNS) + " |" for row in self.trials]
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([c if c != "metric" else self.metric for c in COLUMNS])
        writer.writerows([[_cell(row[c]) for c in COLUMNS] for row in self.trials])
        return out.getvalue()

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save the best function to `path`, with trials.csv and trials.md beside its
        manifest; each file is written atomically."""
        from ._artifact import atomic_file

        target = self.best.save(path)
        for name, text in ((TRIALS_CSV, self.csv()), (TRIALS_MD, self.table())):
            with atomic_file(target / name) as handle:
                handle.write(text)
        return target


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def tune(task: str, data: Any, *, eval_data: Any = None, trials: int = 20,
         timeout: float | None = None, methods: Sequence[str] | None = None,
         metric: str | None = None, backbone: str | os.PathLike[str] | None = None,
         seed: int = 42, pruner: Any = None, sampler: Any = None, cache: Any = "memory",
         progress: bool = True, device: str = "cpu", text_column: str = "text",
         label_column: str = "label", **options: Any) -> Tuning:
    """Search training settings for a classify function; returns the best function and the
    table of trials (`Tuning`).

    `eval_data` scores every trial (and stops each early); without it a stratified fifth of
    `data` is held out. Trial 0 trains with the defaults (`auto`'s method where it is
    searched), so the best function is never worse on the eval data than plain `train` would
    give. `trials` and `timeout` (seconds) bound the search; `methods` limits it (default:
    head, lora and full; head, contrastive and full when a label has 64 examples or fewer).
    `options` are TrainConfig fields fixed for every trial; one the search would vary (e.g.
    `head="mlp"`) is then not searched. `pruner` and `sampler` are Optuna's (default
    MedianPruner and TPESampler(seed)); features of the frozen backbone are computed once
    (`cache`) and shared by the trials.

    >>> result = funcformer.tune("classify", "train.csv", eval_data="dev.csv",
    ...                          trials=10)                              # doctest: +SKIP
    """
    optuna = require("optuna", "tune")
    from ._cache import open_cache

    if task != "classify":
        raise TaskError(f"tune searches the settings of classify functions; {task} is not "
                        "supported yet. Fix: train it with funcformer.train and your settings.")
    if not is_whole(trials) or trials < 1:
        raise TaskError(f"trials must be a whole number of at least 1, got {trials!r}.")
    if timeout is not None and (not is_real(timeout) or not timeout > 0):
        raise TaskError(f"timeout must be a positive number of seconds (or None), got "
                        f"{timeout!r}.")
    for name, value, kind, example in (
            ("sampler", sampler, optuna.samplers.BaseSampler, "samplers.TPESampler"),
            ("pruner", pruner, optuna.pruners.BasePruner, "pruners.MedianPruner")):
        if value is not None and not isinstance(value, kind):
            raise TaskError(f"{name} must be an optuna {kind.__name__} (e.g. optuna."
                            f"{example}()), got {value!r}.")
    started = time.perf_counter()
    options = {k: v for k, v in options.items() if v is not None}
    shared = [k for k in ("checkpoint_dir", "resume") if options.get(k)]
    if shared:  # every trial wrote one folder, and resume would start trial 2 from trial 1
        raise TaskError(f"{shared[0]} applies to one training run; tune runs many (one per "
                        "trial). Fix: drop it; the trials are short, and the best one is kept.")
    train_data, eval_examples, multi_label = _data(data, eval_data, seed, text_column,
                                                   label_column, options.get("multi_label"))
    metric = metric or ("micro_f1" if multi_label else "accuracy")
    check_metric(metric, multi_label)  # before any trial: it failed each, or after trial 0
    searched = _methods(methods, train_data, multi_label, options)  # takes a fixed method
    # A bad fixed setting fails here, once, not as the failure of every trial.
    fields = set(TrainConfig().to_dict()) - {"method"}
    TrainConfig.from_dict({"method": searched[0], **{k: v for k, v in
                                                     for_method(options, searched[0]).items()
                                                     if k in fields}}).resolved()
    search = Search(methods=searched,
                    fixed={**options, "seed": options.get("seed", seed), "metric": metric,
                           "multi_label": multi_label},
                    common={"eval_data": eval_examples, "backbone": backbone, "device": device,
                            "cache": open_cache(cache), "progress": False},
                    metric=metric, data=train_data, progress=progress)
    with _quiet(optuna):
        study = optuna.create_study(
            direction="maximize", sampler=sampler or optuna.samplers.TPESampler(seed=seed),
            pruner=pruner or optuna.pruners.MedianPruner(n_startup_trials=2))
        study.enqueue_trial(search.defaults(device))
        study.optimize(search.objective, n_trials=trials, timeout=timeout,
                       catch=(FuncformerError,))
    if search.best is None:
        raise TaskError("No trial finished" + (f": {search.failures[0].rstrip('.')}"
                                                if search.failures else " (all were pruned)")
                        + ".")
    rows = [search.row(t) for t in study.trials]
    seconds = round(time.perf_counter() - started, 2)
    best_fn, best = search.best
    best_fn.manifest.training = {**best_fn.manifest.training, "tune": {
        "trials": len(rows), "pruned": sum(r["state"] == "PRUNED" for r in rows),
        "metric": metric, "best_trial": best["trial"], "seconds": seconds}}
    return Tuning(best=best_fn, best_settings=best["settings"], metric=metric, trials=rows,
                  seconds=seconds)


def _data(data: Any, eval_data: Any, seed: int, text_column: str, label_column: str,
          multi_label: bool | None) -> tuple[Any, Any, bool]:
    """Training and eval examples (read once for all trials) and whether multi-label."""
    from ._data import is_multi_label, read_examples
    from ._methods import holdout

    columns = {"text_column": text_column, "label_column": label_column,
               "empty_labels": bool(multi_label)}
    train = read_examples(data, **columns)
    if multi_label is None:
        multi_label = is_multi_label(train)
    if eval_data is not None:
        return train, read_examples(eval_data, **columns), multi_label
    kept, held = holdout(train, 0.2, seed)
    if held is None:
        raise TaskError(f"tune scores each trial on eval data; {len(train)} examples are too "
                        "few to hold a fifth out. Fix: pass eval_data= (--eval).")
    return kept, held, multi_label


def for_method(fixed: dict[str, Any], method: str) -> dict[str, Any]:
    """The fixed settings a trial of `method` takes: LoRA settings go to the trials that
    build an adapter (lora, contrastive), not to head or full trials, which refuse them; lora
    trials without them take the adapter `auto` gives `lora`."""
    from ._function import as_config
    from ._methods import AUTO_LORA

    config = as_config(fixed.get("config"))
    if method == "lora" and fixed.get("lora") is None and (config is None or config.lora is None):
        return {**fixed, "lora": dict(AUTO_LORA)}
    if method in ("lora", "contrastive"):
        return fixed
    return {k: v for k, v in fixed.items() if k != "lora"}


def _methods(asked: Sequence[str] | None, train: Any, multi_label: bool,
             options: dict[str, Any]) -> list[str]:
    from ._methods import FEW_PER_CLASS

    if options.get("method") not in (None, "auto"):
        if asked is not None:
            raise TaskError("Give method= (fixed) or methods= (searched), not both.")
        asked = [options.pop("method")]
    options.pop("method", None)
    if asked is None:
        few = not multi_label and min(Counter(train.labels).values()) <= FEW_PER_CLASS
        return ["head", "contrastive", "full"] if few else ["head", "lora", "full"]
    unknown = [repr(m) for m in asked if m not in RANGES]  # '' (from "head,") shows as ''
    if unknown or not asked:
        raise TaskError(f"Unknown method(s) to search: {', '.join(unknown) or 'none given'}. "
                        f"Choose from: {', '.join(RANGES)}.")
    if multi_label and "contrastive" in asked:
        raise TaskError("contrastive needs one label per text; search head, lora or full for "
                        "multi-label data.")
    return list(dict.fromkeys(asked))


@dataclass
class Search:
    """The objective Optuna calls once per trial, and what the trials found."""

    methods: list[str]
    fixed: dict[str, Any]
    """Options every trial trains with (the user's, plus seed, metric, multi_label)."""
    common: dict[str, Any]
    """Keyword arguments of `train` shared by every trial (eval data, backbone, cache)."""
    metric: str
    data: Any
    progress: bool = True
    best: tuple[Any, dict[str, Any]] | None = None
    failures: list[str] = field(default_factory=list)

    def objective(self, trial: Any) -> float:
        from optuna import TrialPruned

        from ._function import say, train
        from ._train import epoch_hook

        settings = self.suggest(trial)
        trial.set_user_attr("settings", settings)
        reporter = Reporter(trial, REPORTED.get(settings["method"]))
        started = time.perf_counter()
        try:
            with epoch_hook(reporter):
                fn = train("classify", self.data, **self.common,
                           **for_method(self.fixed, settings["method"]), **settings)
        except FuncformerError as err:
            self.failures.append(str(err))
            trial.set_user_attr("seconds", round(time.perf_counter() - started, 2))
            say(f"trial {trial.number}: failed: {err}", self.progress)
            raise
        except TrialPruned:
            trial.set_user_attr("seconds", round(time.perf_counter() - started, 2))
            trial.set_user_attr("epochs_run", reporter.epochs)
            say(f"trial {trial.number}: {_describe(settings)} -> pruned at epoch "
                f"{reporter.epochs} ({self.metric} {reporter.last:.4f})", self.progress)
            raise
        seconds = round(time.perf_counter() - started, 2)
        trial.set_user_attr("seconds", seconds)
        trial.set_user_attr("epochs_run", sum(e["epoch"] > 0 for e in
                                              fn.manifest.training["history"]["epochs"]))
        value = float(fn.metrics[self.metric])
        say(f"trial {trial.number}: {_describe(settings)} -> {self.metric} {value:.4f} "
            f"({seconds:.1f}s)", self.progress)
        if self.best is None or value > self.best[1]["value"]:
            self.best = (fn, {"trial": trial.number, "value": value, "settings": settings})
        return value

    def defaults(self, device: str) -> dict[str, Any]:
        """Optuna parameters of what `train` does without settings: `auto`'s method (else the
        first searched one) with its default learning rate and epochs, a linear head, plain
        cross-entropy. Options the user fixed are not parameters."""
        from ._config import TrainConfig
        from ._methods import choose
        from ._methods.contrastive import epochs_for, learning_rate_for

        auto, _ = choose(self.data.labels, device, bool(self.fixed.get("multi_label")))
        method = auto if auto in self.methods else self.methods[0]
        config = TrainConfig(method=method).resolved()
        values = {"method": method, f"{method}.learning_rate":
                  config.learning_rate or learning_rate_for(len(set(self.data.labels)),
                                                            len(self.data)),
                  # contrastive's defaults count the training texts; label texts added
                  # at training can make its own count a few epochs different, and at 30-31
                  # rows a label its rate 1e-4 where this trial takes 5e-5
                  f"{method}.epochs": config.epochs or epochs_for(len(self.data)),
                  "head": "linear", "loss": "cross_entropy", "label_smoothing": 0.0,
                  "class_weight": "none"}
        return {name: value for name, value in values.items()
                if name.rpartition(".")[2] not in self.fixed}

    def suggest(self, trial: Any) -> dict[str, Any]:
        """This trial's settings; options fixed by the user are not searched."""
        method = trial.suggest_categorical("method", self.methods)
        (low_lr, high_lr), (low_epochs, high_epochs) = RANGES[method]
        drawn = {
            "method": method,
            "learning_rate": lambda: trial.suggest_float(f"{method}.learning_rate", low_lr,
                                                         high_lr, log=True),
            "epochs": lambda: trial.suggest_int(f"{method}.epochs", low_epochs, high_epochs),
            "head": lambda: trial.suggest_categorical("head", ["linear", "mlp"]),
            "loss": lambda: trial.suggest_categorical("loss", ["cross_entropy", "focal"]),
            "label_smoothing": lambda: round(trial.suggest_float("label_smoothing", 0.0, 0.2,
                                                                 step=0.05), 4),
            "class_weight": lambda: _none(trial.suggest_categorical("class_weight",
                                                                    ["none", "balanced"])),
        }
        return {name: value() if callable(value) else value for name, value in drawn.items()
                if name not in self.fixed}

    def row(self, trial: Any) -> dict[str, Any]:
        """The table row of a finished (or pruned, or failed) trial."""
        settings = {**self.fixed, **trial.user_attrs.get("settings", {})}
        steps = trial.intermediate_values
        value = trial.value if trial.value is not None else (
            steps[max(steps)] if steps else None)
        return {"trial": trial.number, "state": trial.state.name,
                **{c: settings.get(c) for c in COLUMNS[2:9]},
                "metric": None if value is None or math.isnan(value) else round(value, 4),
                "epochs_run": trial.user_attrs.get("epochs_run"),
                "seconds": trial.user_attrs.get("seconds")}


def _none(value: str) -> str | None:
    return None if value == "none" else value


def _describe(settings: dict[str, Any]) -> str:
    return " ".join(f"{k}={_cell(v)}" for k, v in settings.items() if v is not None)


class Reporter:
    """The epoch hook of one trial: reports the eval metric of its run named `run` (None:
    none) to Optuna, one step an epoch, and stops the trial when the pruner says so."""

    def __init__(self, trial: Any, run: str | None) -> None:
        self.trial, self.run = trial, run
        self.epochs, self.last = 0, float("nan")

    def __call__(self, description: str, epoch: int, metric: float) -> None:
        if description != self.run:
            return
        self.epochs, self.last = epoch, metric
        self.trial.report(metric, epoch)
        if self.trial.should_prune():
            import optuna

            raise optuna.TrialPruned(f"epoch {epoch}: {metric:.4f}")


class _quiet:
    """Optuna logs every trial at INFO; `tune` prints its own line per trial instead."""

    def __init__(self, optuna: Any) -> None:
        self.logging = optuna.logging

    def __enter__(self) -> None:
        self.level = self.logging.get_verbosity()
        self.logging.set_verbosity(self.logging.WARNING)

    def __exit__(self, *exc: object) -> None:
        self.logging.set_verbosity(self.level)
