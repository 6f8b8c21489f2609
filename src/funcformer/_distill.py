"""Distillation: a smaller student learns what a `classify` function (the teacher) outputs.

The student is the teacher's encoder with evenly spaced layers kept (0, 2, 4 of 6), or another
backbone, starting from the teacher's head. It trains in the one loop (`_train.run`) on the
teacher's soft labels: KL divergence between the temperature-softened distributions (Hinton et
al. 2015; sigmoids and binary cross-entropy for multi-label), mixed with the task's own loss on
the rows that have gold labels. The transfer set is the teacher's training data (read again
from the file its manifest records, or given) plus any unlabelled texts. The result is an
ordinary classify function whose artifact includes its own, smaller encoder.
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ._config import TrainConfig
from ._data import Examples, file_sha256, read_examples, read_texts
from ._errors import DataError, TaskError, is_real

DEFAULT_LAYERS = 3
STUDENT_LEARNING_RATE = 1e-4
"""Twice `full`'s: a student with half its layers gone moves further than a fine-tune. On SST-2
(bench/distill.py, 3 epochs) it kept the drop at 1.49 points where 5e-5 (2 epochs) lost 3.21."""
"""Layers a student made from the teacher's encoder keeps when none are asked for."""
_HEAD_OPTIONS = ("head", "head_hidden", "head_options")


@dataclass
class Transfer:
    """The texts the student learns on: teacher logits for all, gold labels for some."""

    texts: list[str]
    logits: torch.Tensor
    """The teacher's logits (N, C)."""
    gold: Examples | None
    """The labelled rows (the first len(gold) texts), or None."""

    @property
    def labelled(self) -> int:
        return len(self.gold) if self.gold is not None else 0


def distill(teacher: Any, *, student_layers: int | None = None, student: str | None = None,
            data: Any = None, unlabeled: Any = None, eval_data: Any = None,
            temperature: float = 2.0, label_weight: float = 0.5,
            config: TrainConfig | None = None, progress: bool = True,
            device: str | None = None, text_column: str = "text", label_column: str = "label",
            **options: Any) -> Any:
    """A smaller `classify` function trained on the teacher's soft labels.

    `teacher`: a classify function or its directory. `student_layers`: layers to keep of the
    teacher's encoder (default 3, evenly spaced), or of `student`, another backbone by name or
    directory (default: all of its layers). `data`: labelled texts to transfer on; default: the
    teacher's training data, read again from the file its manifest records. `unlabeled`: more
    texts (a .txt file, a list, or a file with a text column): the teacher labels them.
    `temperature` softens both distributions; `label_weight` is the share of the loss that
    comes from the gold labels where a row has one (0: soft labels only). Without `eval_data`,
    a tenth of the texts is held out and the student stops early on its agreement with the
    teacher there. `options` are TrainConfig fields (epochs, learning_rate, ...; default: those
    of `full`). `device`: where the student trains; default: the teacher's device (a teacher
    given as a directory is loaded on the CPU). The manifest records the teacher's digest and
    these settings under `training["distill"]`.

    >>> small = funcformer.distill("functions/sentiment", student_layers=3,
    ...                            unlabeled="more_reviews.txt")          # doctest: +SKIP
    """
    from ._backbone import check_device
    from ._function import Classifier, _manifest, make_config
    from ._methods import Trained

    started = time.perf_counter()
    if device is not None:
        check_device(device)
    teacher, where = _teacher(teacher, device or "cpu")
    device = device or teacher.backbone.device
    _check_settings(temperature, label_weight, options)
    config = _student_config(teacher, config, options, make_config)
    shared, encoder, kept, total = student_encoder(teacher, student, student_layers, device)
    task = _student_task(teacher)
    transfer = transfer_set(teacher, task, data, unlabeled, text_column, label_column, progress)
    if transfer.gold is not None:
        task.configure(config, transfer.gold)  # the hard-label loss: class weights, smoothing
    task.head_choice = teacher.task.head_choice
    evaluation = _evaluation(teacher, task, transfer, eval_data, config, text_column,
                             label_column)
    head = _student_head(teacher, task, shared, config)
    history, truncated = _train(task, shared, encoder, head, transfer, evaluation, config,
                                temperature, label_weight, progress)
    trained = Trained(encoder, head.cpu(), history, truncated, evaluation.source)
    settings = {"teacher": where, "teacher_digest": teacher.digest,
                "teacher_method": teacher.manifest.method,
                "teacher_backbone": teacher.manifest.backbone.name, "student": student,
                "teacher_layers": total, "kept_layers": kept, "temperature": temperature,
                "label_weight": label_weight, "labelled": transfer.labelled,
                "unlabeled": len(transfer.texts) - transfer.labelled}
    report = {"examples": len(transfer.texts), "truncated": truncated,
              "seconds": round(time.perf_counter() - started, 2),
              "eval_source": evaluation.source, "history": history.to_dict(),
              "distill": settings}
    manifest = _manifest(task, shared, trained, config, report)
    source = teacher.manifest.backbone
    ref = manifest.backbone.model_copy(update={
        "name": student or source.name,
        "base_digest": shared.digest if student else source.base_digest or source.digest})
    fn = Classifier(task=task, backbone=shared, head=trained.head,
                    manifest=manifest.model_copy(update={"backbone": ref}), encoder=encoder)
    fn.manifest.metrics = evaluation.metrics(fn)
    return fn


def _teacher(teacher: Any, device: str) -> tuple[Any, str | None]:
    """The teacher function (loaded on `device` when given as a directory) and its directory,
    if any."""
    from ._function import Function, load

    where = None
    if isinstance(teacher, (str, os.PathLike)):
        where = str(Path(teacher).resolve())
        teacher = load(teacher, device=device)
    if not isinstance(teacher, Function):
        raise TaskError(f"distill needs a function or its directory, got "
                        f"{type(teacher).__name__}.")
    if teacher.task_name != "classify":
        raise TaskError(f"distill trains students of classify functions (single- or "
                        f"multi-label); this function's task is {teacher.task_name}.")
    if teacher.runtime != "torch":
        raise TaskError("distill copies the teacher's encoder, which an ONNX runtime does not "
                        "have. Fix: load the teacher with runtime='torch'.")
    return teacher, where


def _check_settings(temperature: float, label_weight: float, options: dict[str, Any]) -> None:
    if not is_real(temperature) or not 0 < temperature < math.inf:
        raise TaskError(f"temperature must be a positive finite number, got {temperature!r}.")
    if not 0 <= label_weight <= 1:
        raise TaskError(f"label_weight must be in [0, 1], got {label_weight}.")
    for name in _HEAD_OPTIONS:
        if options.get(name) is not None:
            raise TaskError(f"{name}: the student keeps the teacher's head (it starts from its "
                            "weights). Fix: drop it, or train a new function with that head.")
    if options.get("method") not in (None, "full"):
        raise TaskError("distill trains the whole student (method 'full'); drop method.")


def _student_config(teacher: Any, config: TrainConfig | None, options: dict[str, Any],
                    make_config: Any) -> TrainConfig:
    """`full`'s settings at the student's learning rate, the teacher's token limit unless one
    is given, and `options`."""
    options = {k: v for k, v in options.items() if k != "method"}
    if config is None and options.get("max_length") is None:
        options["max_length"] = teacher.manifest.config.get("max_length")
    if config is None and options.get("learning_rate") is None:
        options["learning_rate"] = STUDENT_LEARNING_RATE
    made = make_config(config, "full", options)  # "full" unless `config` names a method
    if made.method != "full":  # whose defaults would not be full's
        raise TaskError(f"distill trains the whole student (method 'full'); config has method "
                        f"{made.method!r}. Fix: drop method from config.")
    return made


def student_encoder(teacher: Any, student: str | None, layers: int | None,
                    device: str) -> tuple[Any, torch.nn.Module, list[int], int]:
    """The student's backbone (tokenizer, pooling), its trainable encoder, the layers kept of
    the source encoder and how many it had."""
    from . import _backbone

    if student is None:
        shared = teacher.backbone
        source = teacher.encoder if teacher.encoder is not None else shared.model
        layers = DEFAULT_LAYERS if layers is None else layers
        if not _backbone.same_device(shared.device, device):  # a teacher loaded elsewhere:
            shared = _backbone.load(shared.path, device=device)  # its tokenizer on `device`
    else:
        shared = _backbone.load(student, device=device)
        source = shared.model
    # float32 whatever the teacher was loaded in: the student trains (and its head is float32)
    encoder = plain_copy(source).to(shared.device, torch.float32)
    total = len(layer_list(encoder)[0])
    if layers is None or (student is not None and layers == total):
        return shared, encoder, list(range(total)), total
    if not 1 <= layers < total:
        raise TaskError(f"student_layers must be from 1 to {total - 1} (the "
                        f"{'student' if student else 'teacher'}'s encoder has {total} layers), "
                        f"got {layers}.")
    return shared, encoder, keep_layers(encoder, layers), total


def plain_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A private, trainable copy of an encoder; a LoRA view's adapter is merged into it."""
    from . import _lora

    encoder = copy.deepcopy(model)
    if _lora.is_view(encoder):
        encoder = _lora.merged(encoder)
        if hasattr(encoder, "peft_config"):
            del encoder.peft_config
    return encoder.train().requires_grad_(True)


def layer_list(model: torch.nn.Module) -> tuple[torch.nn.ModuleList, torch.nn.Module, str]:
    """The encoder's list of transformer blocks, its parent module and attribute name."""
    count = getattr(model.config, "num_hidden_layers", None)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            parent_name, _, attribute = name.rpartition(".")
            return module, model.get_submodule(parent_name), attribute
    raise TaskError(f"Cannot find the transformer layers of this {type(model).__name__} to "
                    "drop some. Fix: pass student= a smaller backbone instead.")


def evenly_spaced(total: int, count: int) -> list[int]:
    """Indices of `count` of `total` layers, evenly spaced from the first.

    >>> evenly_spaced(6, 3), evenly_spaced(12, 4), evenly_spaced(2, 1)
    ([0, 2, 4], [0, 3, 6, 9], [0])
    """
    return [i * total // count for i in range(count)]


def keep_layers(model: torch.nn.Module, count: int) -> list[int]:
    """Keep `count` evenly spaced transformer layers of `model` (in place); returns which."""
    layers, parent, attribute = layer_list(model)
    kept = evenly_spaced(len(layers), count)
    setattr(parent, attribute, torch.nn.ModuleList([layers[i] for i in kept]))
    model.config.num_hidden_layers = count
    for position, layer in enumerate(getattr(parent, attribute)):
        for module in layer.modules():  # attention caches are indexed by layer
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = position
    return kept


def _student_task(teacher: Any) -> Any:
    """A fresh task like the teacher's: its labels and, multi-label, its thresholds."""
    from ._tasks import task_class

    options = teacher.manifest.options
    return task_class("classify", options.get("multi_label", False))(
        teacher.labels, **copy.deepcopy(options.get("task", {})))


def transfer_set(teacher: Any, task: Any, data: Any, unlabeled: Any, text_column: str,
                 label_column: str, progress: bool = True) -> Transfer:
    """Labelled rows (given, or the teacher's training file), then unlabelled texts, each
    with the teacher's logits."""
    from ._function import say

    gold = _labelled(teacher, data, text_column, label_column, task.multi_label)
    if gold is not None:
        task.targets(gold)  # a label the teacher does not know fails here, naming its row
    extra = read_texts(unlabeled, text_column=text_column).texts if unlabeled is not None \
        else []
    texts = (gold.texts if gold is not None else []) + extra
    if not texts:
        raise DataError("distill has no texts to learn from. Fix: pass data= (labelled) or "
                        "unlabeled= (texts).")
    say(f"distill: the teacher labels {len(texts)} texts", progress)
    return Transfer(texts=texts, logits=teacher.logits(texts), gold=gold)


def _labelled(teacher: Any, data: Any, text_column: str, label_column: str,
              multi_label: bool) -> Examples | None:
    """`data`, or the teacher's training data from the file its manifest records."""
    if data is not None:
        return read_examples(data, text_column=text_column, label_column=label_column,
                             empty_labels=multi_label)
    record = teacher.manifest.training.get("data")
    if record is None:
        return None
    path = Path(record["path"])
    if not path.is_file():
        raise DataError(f"{path}: the teacher's training data is no longer there. Fix: pass "
                        "data= (--data) with its training file, or only unlabeled= texts.")
    if file_sha256(path) != record.get("sha256"):
        from ._function import log

        log.warning("%s changed since the teacher was trained on it; distilling on it as it "
                    "is now.", path)
    return read_examples(path, text_column=record.get("text_column") or "text",
                         label_column=record.get("label_column") or "label",
                         empty_labels=multi_label)


@dataclass
class _Evaluation:
    """Early stopping's data (gold labels given, or the teacher's labels on held-out texts)
    and how to describe the finished student."""

    train_rows: list[int]
    eval_data: Examples | None
    source: str
    teacher_logits: torch.Tensor | None
    """The teacher's logits on `eval_data` (for agreement)."""
    given: bool

    def metrics(self, fn: Any) -> dict[str, Any]:
        if self.eval_data is None or self.teacher_logits is None:
            return {}
        logits = fn.logits(self.eval_data)
        task = fn.task
        metric = "micro_f1" if task.multi_label else "accuracy"
        agreement = task.score(task.predicted_labels(self.teacher_logits),
                               task.predicted_labels(logits), metric)
        if not self.given:
            return {"held_out_teacher_agreement": agreement, "examples": len(self.eval_data)}
        assert self.eval_data.labels is not None
        student = task.metrics(self.eval_data.labels, task.predicted_labels(logits))
        teacher = task.metrics(self.eval_data.labels,
                               task.predicted_labels(self.teacher_logits))
        keys = [k for k in ("accuracy", "micro_f1", "macro_f1") if k in student]
        return {**{k: student[k] for k in keys}, "examples": len(self.eval_data),
                "teacher_agreement": agreement, **{f"teacher_{k}": teacher[k] for k in keys}}


def _evaluation(teacher: Any, task: Any, transfer: Transfer, eval_data: Any,
                config: TrainConfig, text_column: str, label_column: str) -> _Evaluation:
    from ._methods import MIN_HELD_OUT

    everything = list(range(len(transfer.texts)))
    if eval_data is not None:
        examples = read_examples(eval_data, text_column=text_column, label_column=label_column,
                                 empty_labels=task.multi_label)
        task.targets(examples)
        return _Evaluation(everything, examples, "given", teacher.logits(examples), True)
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(everything), generator=generator).tolist()
    take = round(len(order) * config.eval_share)
    if take < MIN_HELD_OUT:
        return _Evaluation(everything, None, "none", None, False)
    held = sorted(order[:take])
    logits = transfer.logits[held]
    examples = Examples(texts=[transfer.texts[i] for i in held],
                        labels=task.predicted_labels(logits), source="<held out>",
                        places=[f"index {i}" for i in held])
    return _Evaluation(sorted(order[take:]), examples, f"held out {take} (teacher's labels)",
                       logits, False)


def _student_head(teacher: Any, task: Any, shared: Any, config: TrainConfig) -> torch.nn.Module:
    """The teacher's head (a copy) when the student's features have its width; else fresh."""
    if teacher.head is not None and shared.hidden_size == teacher.backbone.hidden_size:
        return copy.deepcopy(teacher.head).train().requires_grad_(True)
    torch.manual_seed(config.seed)
    return task.head(shared.hidden_size, config.dropout)


def _train(task: Any, shared: Any, encoder: torch.nn.Module, head: torch.nn.Module,
           transfer: Transfer, evaluation: _Evaluation, config: TrainConfig,
           temperature: float, label_weight: float, progress: bool) -> tuple[Any, int]:
    """Train encoder + head on the transfer rows kept for training; (history, truncated)."""
    from ._methods.full import _evaluator
    from ._model import FunctionModel
    from ._train import Plan, content_digest, length_grouped_batches, run

    rows, held = evaluation.train_rows, evaluation.eval_data
    encoded = shared.tokenize([transfer.texts[i] for i in rows], config.max_length)
    ids = encoded.input_ids
    targets = _targets(task, transfer)[rows]  # (N, C + gold columns)
    lengths = [len(r) for r in ids]
    batch_size = int(config.batch_size or 16)
    torch.manual_seed(config.seed)
    model = FunctionModel(encoder.to(shared.device), head.to(shared.device), shared.pooling)

    def batches(epoch: int) -> list[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        order = length_grouped_batches(lengths, batch_size, config.seed + epoch)
        return [(shared.pad([ids[i] for i in idx]), targets[idx].to(shared.device))
                for idx in order]

    plan = Plan(model=model, batches=batches, forward=lambda m, batch: m(**batch),
                loss=distillation_loss(task, temperature, label_weight),
                evaluate=_evaluator(task, shared, evaluation.eval_data, config), head=head,
                metric_name="agreement" if not evaluation.given else None,
                computed_targets=True,  # the teacher's logits, recomputed on resume
                eval_key=content_digest(held if evaluation.given or held is None
                                        else held.texts))  # (their teacher labels: as above)
    history = run(plan, config, progress=progress, description="distill")
    encoder.eval()
    return history, encoded.truncated


def _targets(task: Any, transfer: Transfer) -> torch.Tensor:
    """Per text: the teacher's logits (C), then the gold label: single-label its index (-1:
    none); multi-label the multi-hot row (C) and 1 where there is one."""
    n, classes = transfer.logits.shape
    labelled = transfer.labelled
    if task.multi_label:
        gold = torch.zeros((n, classes + 1))
        if labelled:
            gold[:labelled, :classes] = task.targets(transfer.gold)
            gold[:labelled, classes] = 1.0
    else:
        gold = torch.full((n, 1), -1.0)
        if labelled:
            gold[:labelled, 0] = task.targets(transfer.gold).float()
    return torch.cat([transfer.logits.float(), gold], dim=1)


def distillation_loss(task: Any, temperature: float, label_weight: float) -> Any:
    """(student logits (B, C), targets from `_targets`) -> the loss: the soft-label term (times
    T^2, so its gradients keep their size as T changes), mixed with the task's loss on the rows
    with a gold label."""
    classes = len(task.labels)

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        teacher, gold = targets[:, :classes], targets[:, classes:]
        soft = soft_loss(logits, teacher, temperature, task.multi_label)
        if task.multi_label:
            has, gold_targets = gold[:, -1] > 0, gold[:, :-1]
        else:
            has, gold_targets = gold[:, 0] >= 0, gold[:, 0].long()
        if label_weight == 0 or not bool(has.any()):
            return soft
        hard = task.loss(logits[has], gold_targets[has])
        return (1 - label_weight) * soft + label_weight * hard

    return loss


def soft_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
              multi_label: bool = False) -> torch.Tensor:
    """KL(teacher || student) of the softmaxes at `temperature` (multi-label: binary
    cross-entropy against the teacher's sigmoids), times temperature squared.

    >>> float(soft_loss(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 2.0]]), 2.0))
    0.0
    """
    t = temperature
    if multi_label:
        return F.binary_cross_entropy_with_logits(student / t, torch.sigmoid(teacher / t)) * t * t
    return F.kl_div(F.log_softmax(student / t, dim=-1), F.log_softmax(teacher / t, dim=-1),
                    log_target=True, reduction="batchmean") * t * t
