"""The one training loop every method shares.

A method supplies a `Plan`: the trainable module, how to make an epoch's batches, how to turn
a batch into logits, the loss, and how to score the model on eval data. The loop owns the
optimizer (AdamW, SGD or Adafactor; no decay on biases and norms), the schedule (warm-up, then
linear, cosine or constant), gradient clipping, per-epoch evaluation, early stopping and keeping
the best weights.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

import torch

from ._config import TrainConfig
from ._errors import TaskError
from ._fused import training_linears
from ._progress import Progress
from ._rows import RowAdamW, SparseTables, clip_gradients

Batch = tuple[Any, torch.Tensor]  # (model inputs, targets)
EpochHook = Callable[[str, int, float], None]
"""(run description, epoch, eval metric) -> None; raising stops the run (see `epoch_hook`)."""
_hook: contextvars.ContextVar[EpochHook | None] = contextvars.ContextVar("epoch_hook",
                                                                         default=None)


@dataclass
class Plan:
    """What a method hands the loop."""

    model: torch.nn.Module
    batches: Callable[[int], Sequence[Batch]]
    """epoch -> that epoch's batches, in the order to train on them."""
    forward: Callable[[torch.nn.Module, Any], torch.Tensor]
    """(model, inputs) -> logits (B, C)."""
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    evaluate: Callable[[torch.nn.Module], float | tuple[float, float]] | None = None
    """model -> eval metric, higher is better, or (metric, tie-break) where the tie-break (also
    higher is better, e.g. minus the eval loss) decides between epochs with the same metric;
    None trains every epoch without early stopping."""
    head: torch.nn.Module | None = None
    """A submodule of `model` trained at `config.head_learning_rate` instead."""
    metric_name: str | None = None
    """What `evaluate` measures, for the progress bar; None: `config.metric`."""
    baseline: bool = False
    """Evaluate before training too (epoch 0), so an informed start (a linear probe, a
    zero-shot head) is kept when training never beats it."""
    computed_targets: bool = False
    """The targets are floating-point values computed at run time (a teacher's logits): a
    resume compares them by shape, as another device or thread count rounds them otherwise."""
    after_step: Callable[[int], None] | None = None
    """Called after each optimizer step with the number of steps done (from 1), gradients
    still in place: AdaLoRA moves its rank budget here."""
    eval_key: str | None = None
    """`content_digest` of what `evaluate` scores on, recorded in checkpoints: a run resumed
    with other eval data would choose its kept epoch among scores on two data sets (the killed
    run's epochs and its own), so that checkpoint is refused."""


@dataclass
class History:
    """What happened: per-epoch loss and eval metric, and which epoch was kept."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_metric: float | None = None
    stopped_early: bool = False
    best_tiebreak: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "best_epoch": self.best_epoch,
                "best_metric": self.best_metric, "stopped_early": self.stopped_early,
                "best_tiebreak": self.best_tiebreak}

    def improves(self, metric: float, tiebreak: float | None) -> bool:
        """Whether an epoch scoring `metric` beats the best so far. Accuracy on a small eval
        set ties often (16 examples: steps of 1/16); a tie goes to the better tie-break, so a
        later, more confident epoch is not lost to an early near-uniform one."""
        if self.best_metric is None or metric > self.best_metric:
            return True
        return (metric == self.best_metric and tiebreak is not None
                and (self.best_tiebreak is None or tiebreak > self.best_tiebreak))


def run(plan: Plan, config: TrainConfig, *, progress: bool = True,
        description: str = "training") -> History:
    """Train `plan.model` in place; on return it holds the best epoch's weights.

    With `config.checkpoint_dir`, a checkpoint is written atomically at each epoch's end (and
    every `config.checkpoint_steps` steps); with `config.resume`, a run killed mid-way continues
    from its last checkpoint with the same data order and random state, so it ends with the
    same weights as a run that was never interrupted.
    """
    epochs, patience = int(config.epochs or 1), int(config.patience or 1)
    steps_per_epoch = len(plan.batches(0))
    optimizer = _optimizer(plan, config)
    schedule = _schedule(optimizer, steps_per_epoch * epochs, config.warmup_ratio,
                         config.schedule)
    # An epoch that ends inside the warm-up is no candidate for the best one: its weights have
    # barely moved from the start, and on a small eval set such a head can win by luck (Emotion,
    # 64 per class, `head`: 36 held-out rows picked epoch 1 of 30, whose 3 warm-up epochs left
    # it untrained, and the refit on 1 epoch scored 0.342 against 0.481).
    first = max(1, math.ceil(_warmup_steps(steps_per_epoch * epochs, config.warmup_ratio)
                             / max(1, steps_per_epoch)))
    keeper = _Checkpoints(plan, config, optimizer, schedule, description, steps_per_epoch)
    autocast = mixed_precision(plan.model, config.precision)
    history, best_state, waited = History(), None, 0
    start, skip, carried = 1, 0, (0.0, 0)
    restored = keeper.restore(progress)
    if restored is not None:
        state, best_state = restored
        history = History(**state["history"])
        waited, start, skip = state["waited"], state["epoch"], state["step"]
        carried = (state["loss_total"], state["loss_count"])
        # Saved at the epoch's end: go on with the next one. A step checkpoint at its last step
        # comes before the epoch is evaluated and recorded: that epoch still ends here.
        if skip >= steps_per_epoch and any(r["epoch"] == start for r in history.epochs):
            start, skip, carried = start + 1, 0, (0.0, 0)
    elif plan.baseline and plan.evaluate is not None:
        history.best_metric, history.best_tiebreak = _scored(plan.evaluate(plan.model.eval()))
        history.epochs.append({"epoch": 0.0, "eval": history.best_metric})
        best_state = trainable_state(plan.model)
    # resumed: the steps logged after the checkpoint, before the kill, are logged again
    again = restored is not None and start <= epochs
    board = _Board(config.log_dir, description, plan.metric_name or config.metric,
                   purge_step=(start - 1) * steps_per_epoch + skip + 1 if again else None)
    with board, Progress(description, total=steps_per_epoch * epochs,
                         enabled=progress) as bar:
        bar.advance((start - 1) * steps_per_epoch + skip)
        for epoch in range(start, epochs + 1):
            if waited >= patience:
                break
            keeper.context = (history, best_state, waited)
            loss = _epoch(plan, optimizer, schedule, config, epoch, bar, keeper, skip, carried,
                          board, autocast)
            skip, carried = 0, (0.0, 0)
            record = {"epoch": float(epoch), "loss": loss}
            if plan.evaluate is not None:
                metric, tiebreak = _scored(plan.evaluate(plan.model))
                record["eval"] = metric
                bar.advance(0, loss=loss, **{plan.metric_name or config.metric: metric})
                if epoch < first:
                    pass  # still warming up: neither kept nor counted against patience
                elif history.improves(metric, tiebreak):
                    history.best_metric, history.best_tiebreak = metric, tiebreak
                    history.best_epoch, waited = epoch, 0
                    best_state = trainable_state(plan.model)
                else:
                    waited += 1
                _report(description, epoch, metric)
            else:
                history.best_epoch = epoch
            history.epochs.append(record)
            board.epoch(epoch, record)
            if waited >= patience:
                history.stopped_early = True
            keeper.context = (history, best_state, waited)
            keeper.save(epoch, steps_per_epoch, (0.0, 0))
            if history.stopped_early:
                bar.finish(f"early stop: best epoch {history.best_epoch} "
                           f"({history.best_metric:.3f})")
                break
    if best_state is not None:
        plan.model.load_state_dict(best_state, strict=False)
    plan.model.eval()
    return history


def _scored(value: float | tuple[float, float]) -> tuple[float, float | None]:
    """An evaluation as (metric, tie-break or None)."""
    if isinstance(value, tuple):
        return float(value[0]), float(value[1])
    return float(value), None


@contextlib.contextmanager
def epoch_hook(hook: EpochHook) -> Iterator[None]:
    """Within this context, every run calls `hook(description, epoch, metric)` after each
    evaluated epoch. Hyperparameter search reports to its pruner this way (and stops a bad
    trial by raising): methods build their Plans deep inside `train`, which a context reaches
    without threading a callback through every method.
    """
    token = _hook.set(hook)
    try:
        yield
    finally:
        _hook.reset(token)


def _report(description: str, epoch: int, metric: float) -> None:
    hook = _hook.get()
    if hook is not None:
        hook(description, epoch, metric)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the parameters that train: all of them for `full`, the adapter and head for
    `lora` (whose frozen base weights belong to the shared backbone and never change)."""
    return {name: param.detach().clone() for name, param in model.named_parameters()
            if param.requires_grad}


def check_output_dir(directory: str, name: str) -> None:
    """Refuse, before training, a `name` directory (checkpoint_dir, log_dir) that is a file, lies
    under one or cannot be written, or is (inside) a function's directory, whose artifact the
    files would change; the checkpoint was an OSError traceback after the first epoch."""
    from pathlib import Path

    from ._artifact import MANIFEST, check_writable, function_home

    path = Path(directory)
    home = path if (path / MANIFEST).is_file() else function_home(path)
    if home is not None:
        raise TaskError(f"{name} {directory} is inside the function {home}, whose artifact "
                        "it would change. Fix: give a directory outside function directories.")
    check_writable(path, f"{name} {directory}", TaskError)


class _Board:
    """TensorBoard scalars under `log_dir/<run>` (nothing without a log_dir); a context that
    closes the writer, so a run that fails still flushes what it logged. `purge_step`: a
    resumed run hides the events logged from that step on by the killed one."""

    def __init__(self, log_dir: str | None, run: str, metric: str,
                 purge_step: int | None = None) -> None:
        self.writer: Any = None
        self.metric = metric
        if log_dir:
            from ._errors import require

            require("tensorboard", "tensorboard")
            from torch.utils.tensorboard import SummaryWriter

            check_output_dir(log_dir, "log_dir")
            name = "".join(c if c.isalnum() or c in "-_" else "_" for c in run)
            try:
                self.writer = SummaryWriter(log_dir=f"{log_dir}/{name}", purge_step=purge_step)
            except OSError as err:
                raise TaskError(f"log_dir {log_dir}: cannot write TensorBoard logs there "
                                f"({err.strerror or err}). Fix: choose a directory you can "
                                "write to.") from None

    def step(self, step: int, loss: float, learning_rate: float) -> None:
        if self.writer is not None:
            self.writer.add_scalar("train/loss", loss, step)
            self.writer.add_scalar("train/learning_rate", learning_rate, step)

    def epoch(self, epoch: int, record: dict[str, float]) -> None:
        if self.writer is not None:
            self.writer.add_scalar("epoch/loss", record["loss"], epoch)
            if "eval" in record:
                self.writer.add_scalar(f"eval/{self.metric}", record["eval"], epoch)

    def __enter__(self) -> _Board:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.close()


_NOT_IN_RESULT = ("checkpoint_dir", "checkpoint_steps", "log_dir", "resume")
"""Options that leave a run's result as it is: resuming with other values is fine."""


def _options(config: TrainConfig) -> dict[str, Any]:
    """The options that decide a run's result (but those the fingerprint names itself), as
    JSON reads them back; adapter settings left out (None) as the defaults they stand for, so
    giving those explicitly resumes too."""
    from ._peft import PEFT_METHODS

    options = {k: v for k, v in config.to_dict().items()
               if k not in (*_NOT_IN_RESULT, "epochs", "seed", "optimizer", "schedule")}
    if config.method == "lora" and config.lora is None:
        from ._lora import LoRA

        options["lora"] = LoRA().to_dict()
    if config.method in PEFT_METHODS:
        from ._peft import settings

        options["peft"] = settings(config.method, config.peft).to_dict()
    return json.loads(json.dumps(options))


def data_digest(batches: Sequence[Batch], computed_targets: bool = False) -> str:
    """A sha256 of an epoch's batches: token ids and targets (labels, scores) in full;
    floating-point inputs (features a frozen backbone computed) and `computed_targets` (a
    teacher's logits) by shape only, as another thread count or device rounds them
    differently, and the token ids and labels beside them still count."""
    digest = hashlib.sha256()
    for inputs, targets in batches:
        _feed(digest, inputs, False)
        _feed(digest, targets, not computed_targets)
    return digest.hexdigest()


def content_digest(value: Any) -> str | None:
    """A sha256 of data as read or encoded (texts, labels, scores, token ids), None for None.
    Dataclasses count by their fields, but where the rows came from (`source`, `places`): the
    same rows in another file are the same data.

    >>> content_digest(["a", 1]) == content_digest(("a", 1)), content_digest(None)
    (True, None)
    """
    if value is None:
        return None
    digest = hashlib.sha256()
    _feed(digest, value, True, sized=True)
    return digest.hexdigest()


_WHERE_FROM = frozenset({"source", "places"})


def _feed(digest: Any, value: Any, exact: bool, sized: bool = False) -> None:
    """Add `value` to `digest`: tensors by dtype, shape and bytes (floating-point ones by
    shape only unless `exact`), containers item by item, sets sorted (`sized`: with their
    length, so [[1, 2], [3]] is not [[1], [2, 3]]; `data_digest` goes without, as checkpoints
    record it), anything else by its repr."""
    if isinstance(value, torch.Tensor):
        digest.update(f"{value.dtype}{list(value.shape)}".encode())
        if exact or not value.is_floating_point():
            digest.update(tensor_bytes(value))
    elif isinstance(value, Mapping):
        for key in sorted(value, key=str):  # (the keys of a row may mix names and numbers)
            digest.update(str(key).encode())
            _feed(digest, value[key], exact, sized)
    elif isinstance(value, (list, tuple, set, frozenset)):
        if sized:
            digest.update(f"[{len(value)}".encode())
        # a set's order follows string hashing, which differs from process to process
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        for item in items:
            _feed(digest, item, exact, sized)
    elif is_dataclass(value) and not isinstance(value, type):
        for part in fields(value):
            if part.name not in _WHERE_FROM:
                digest.update(part.name.encode())
                _feed(digest, getattr(value, part.name), exact, sized)
    else:
        digest.update(repr(value).encode())


def frozen_digest(model: torch.nn.Module) -> str:
    """A sha256 of the weights that do not train (a LoRA run's backbone): a checkpoint holds
    only the trained ones, so resuming on another backbone of the same shapes mixed the two."""
    digest = hashlib.sha256()
    for name, value in sorted(model.named_parameters()):
        if not value.requires_grad:
            digest.update(name.encode())
            digest.update(tensor_bytes(value))
    return digest.hexdigest()


def tensor_bytes(tensor: torch.Tensor) -> Any:
    """A tensor's raw bytes as a NumPy uint8 view, for hashing: any dtype (NumPy has no
    bfloat16), and the buffer itself, not a copy of a backbone's bytes."""
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()


class _Checkpoints:
    """Saves and restores a run's checkpoints (nothing, without `config.checkpoint_dir`)."""

    def __init__(self, plan: Plan, config: TrainConfig, optimizer: torch.optim.Optimizer,
                 schedule: Any, description: str, steps_per_epoch: int) -> None:
        self.plan, self.config, self.description = plan, config, description
        self.optimizer, self.schedule = optimizer, schedule
        self.directory = config.checkpoint_dir
        if self.directory:
            check_output_dir(self.directory, "checkpoint_dir")
        elif config.resume or config.checkpoint_steps:  # (the CLI refuses --resume alone too)
            raise TaskError(f"{'resume' if config.resume else 'checkpoint_steps'} needs "
                            "checkpoint_dir, the directory checkpoints are written to (and "
                            "resumed from). Fix: give checkpoint_dir too, or drop it.")
        shapes = sorted((k, list(v.shape)) for k, v in plan.model.state_dict().items())
        self.fingerprint = {"run": description, "epochs": config.epochs, "seed": config.seed,
                            "optimizer": config.optimizer, "schedule": config.schedule,
                            "steps_per_epoch": steps_per_epoch,
                            "weights": hashlib.sha256(json.dumps(shapes).encode()).hexdigest()}
        if self.directory:  # what else decides the result: the options, the data and the
            self.fingerprint["options"] = _options(config)  # weights no checkpoint holds
            self.fingerprint["data"] = data_digest(plan.batches(0), plan.computed_targets)
            self.fingerprint["frozen"] = frozen_digest(plan.model)
            self.fingerprint["eval"] = plan.eval_key if plan.evaluate is not None else None
        self.context: tuple[History, dict[str, torch.Tensor] | None, int] = (History(), None, 0)

    def restore(self, progress: bool = True
                ) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None] | None:
        if not self.directory or not self.config.resume:
            return None
        from . import _checkpoint
        from ._function import say

        restored = _checkpoint.load(self.directory, model=self.plan.model,
                                    optimizer=self.optimizer, schedule=self.schedule,
                                    expect=self.fingerprint)
        if restored is None:  # a first run with --resume, or a mistyped directory
            say(f"{self.description}: no checkpoint in {self.directory} to resume from; "
                "training from the start.", progress)
        else:
            state = restored[0]
            say(f"{self.description}: resuming from the checkpoint in {self.directory} "
                f"(epoch {state['epoch']} of {self.config.epochs}, step {state['step']} of "
                f"{self.fingerprint['steps_per_epoch']}).", progress)
        return restored

    def due(self, step: int) -> bool:
        """Whether `step` (counted over the whole run, from 1) is one to checkpoint at."""
        every = self.config.checkpoint_steps
        return bool(self.directory and every and step % every == 0)

    def save(self, epoch: int, step: int, loss: tuple[float, int]) -> None:
        if not self.directory:
            return
        from . import _checkpoint

        history, best, waited = self.context
        _checkpoint.save(self.directory, model=self.plan.model, optimizer=self.optimizer,
                         schedule=self.schedule, best=best,
                         state={"fingerprint": self.fingerprint, "epoch": epoch, "step": step,
                                "loss_total": loss[0], "loss_count": loss[1],
                                "waited": waited, "history": history.to_dict()})


def _epoch(plan: Plan, optimizer: torch.optim.Optimizer, schedule: Any, config: TrainConfig,
           epoch: int, bar: Progress, keeper: _Checkpoints | None = None, skip: int = 0,
           carried: tuple[float, int] = (0.0, 0), board: _Board | None = None,
           autocast: Any = contextlib.nullcontext()) -> float:
    plan.model.train()
    total, count = carried
    linears = training_linears(plan.model)
    rows = SparseTables(plan.model, optimizer)
    for step, (inputs, targets) in enumerate(plan.batches(epoch), start=1):
        if step <= skip:  # done before the checkpoint this run resumed from
            continue
        with autocast, linears, rows:
            outputs = plan.forward(plan.model, inputs)
        loss = plan.loss(outputs if config.precision == "fp32" else outputs.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_gradients(plan.model.parameters(), config.max_grad_norm)
        optimizer.step()
        schedule.step()
        if plan.after_step is not None:
            plan.after_step(schedule.last_epoch)
        total, count = total + float(loss.detach()), count + 1
        bar.advance(1, loss=total / count, epoch=f"{epoch}/{config.epochs}")
        if board is not None:
            board.step(schedule.last_epoch, float(loss.detach()),
                       optimizer.param_groups[0]["lr"])
        if keeper is not None and keeper.due(schedule.last_epoch):  # steps of the whole run
            keeper.save(epoch, step, (total, count))
            plan.model.train()
    plan.model.eval()
    return total / max(count, 1)


def mixed_precision(model: torch.nn.Module, precision: str) -> Any:
    """The autocast context of `precision` for `model`'s device ("fp32": none). The loss is
    computed outside it, from float32 outputs: a contrastive loss's scaled similarities lose
    too much in bfloat16."""
    if precision == "fp32":
        return contextlib.nullcontext()
    device = next(model.parameters(), torch.empty(0)).device.type
    if device == "cuda" and not torch.cuda.is_bf16_supported():
        raise TaskError(f"precision='bf16': this GPU ({torch.cuda.get_device_name()}) has no "
                        "bfloat16. Fix: drop precision (fp32 is the default).")
    if device == "cpu" and not _cpu_has_bf16():
        warnings.warn("precision='bf16' on a CPU without AVX512-BF16 or AMX: bfloat16 is "
                      "emulated there and training runs slower than in float32. Fix: drop "
                      "precision (fp32 is the default).", stacklevel=3)
    return torch.autocast(device_type=device, dtype=torch.bfloat16)


def _cpu_has_bf16() -> bool:
    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None),
              getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(check is not None and check() for check in checks)


def _optimizer(plan: Plan, config: TrainConfig) -> torch.optim.Optimizer:
    groups = _param_groups(plan, config)
    lr = groups[0]["lr"] if groups else 1e-3
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum,
                               nesterov=config.nesterov)
    if config.optimizer == "adafactor":
        from transformers.optimization import Adafactor

        # An explicit learning rate, unscaled, so the schedule here is what drives it.
        return Adafactor(groups, lr=lr, relative_step=False, scale_parameter=False,
                         warmup_init=False)
    # The fused kernel updates all tensors at once: 2.8x faster than the per-tensor loop on CPU
    # for MiniLM's 22M parameters (0.05 s vs 0.14 s a step), which was a third of a step.
    # RowAdamW is AdamW that also steps the embedding tables' sparse gradients (`_rows`).
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda")
                for g in groups for p in g["params"])
    try:
        return RowAdamW(groups, fused=fused or None)
    except (RuntimeError, TypeError):  # an older torch or an unsupported device/dtype
        return RowAdamW(groups)


def _param_groups(plan: Plan, config: TrainConfig) -> list[dict[str, Any]]:
    """Up to four groups: encoder and head (each at its learning rate), each split into weights
    that decay and those that do not (`no_decay`)."""
    head_ids = {id(p) for p in plan.head.parameters()} if plan.head is not None else set()
    skip = no_decay(plan.model)
    groups = []
    for is_head in (False, True):
        named = [(n, p) for n, p in plan.model.named_parameters()
                 if p.requires_grad and (id(p) in head_ids) == is_head]
        lr = float((config.head_learning_rate if is_head else config.learning_rate) or 1e-3)
        groups += [{"params": [p for n, p in named if n not in skip], "lr": lr,
                    "weight_decay": config.weight_decay},
                   {"params": [p for n, p in named if n in skip], "lr": lr, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def no_decay(model: torch.nn.Module) -> set[str]:
    """Names of the parameters that never decay: biases, and every parameter of a
    normalisation layer (LayerNorm, RMSNorm, ... : any module whose class name has "Norm")."""
    names = set()
    for prefix, module in model.named_modules():
        is_norm = "norm" in type(module).__name__.lower()
        for name, _ in module.named_parameters(prefix=prefix, recurse=False):
            if is_norm or "bias" in name.rpartition(".")[2]:
                names.add(name)
    return names


def _schedule(optimizer: torch.optim.Optimizer, total: int, warmup_ratio: float,
              kind: str = "linear") -> Any:
    """Warm up linearly over `warmup_ratio` of the `total` steps, then decay linearly to zero
    at the last step, follow a half cosine to zero, or stay constant."""
    warmup = _warmup_steps(total, warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        if kind == "cosine":
            done = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.5 * (1.0 + math.cos(math.pi * done))
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _warmup_steps(total: int, warmup_ratio: float) -> int:
    return math.ceil(total * warmup_ratio)


def shuffled_batches(n: int, batch_size: int, seed: int) -> list[list[int]]:
    """Index batches of a seeded permutation of range(n)."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator).tolist()
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int,
                           group: int = 32) -> list[list[int]]:
    """Shuffled batches of similar-length examples, so padding is small (order still random).

    Shuffle, cut into groups of `group` batches, sort each group by length, batch it, then
    shuffle the batches.
    """
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    span = batch_size * group
    batches: list[list[int]] = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start : start + span], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    shuffle = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffle]
