"""Training checkpoints: everything `_train.run` needs to continue a killed run exactly.

A checkpoint is a directory written atomically (temporary sibling, then rename; the one it
replaces is moved aside first, and a run killed between the two renames resumes from it):

    model.safetensors      the model's weights now
    best.safetensors       the best epoch's weights so far (when there is one)
    optimizer.safetensors  the optimizer's tensors (moments, step counts) and the torch RNG
                           states (the CPU's, and the GPU's for a run on one)
    state.json             epoch, step, loss so far, early-stopping state, history, the
                           optimizer's and schedule's other fields

No pickle: tensors go to safetensors, everything else to JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch

NAME = "checkpoint"
STATE_FIELDS = ("fingerprint", "epoch", "step", "loss_total", "loss_count", "waited",
                "history", "optimizer", "schedule")


def save(directory: str | os.PathLike[str], *, model: torch.nn.Module,
         optimizer: torch.optim.Optimizer, schedule: Any, best: dict[str, torch.Tensor] | None,
         state: dict[str, Any]) -> Path:
    """Write the checkpoint into `directory/checkpoint`, replacing the previous one atomically."""
    from safetensors.torch import save_file

    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    temp = root / f".{NAME}.tmp-{uuid.uuid4().hex[:8]}"
    temp.mkdir()
    try:
        from ._train import trainable_state

        # Only what trains: a LoRA run's frozen base weights are the shared backbone's.
        save_file(_plain(trainable_state(model)), str(temp / "model.safetensors"))
        if best is not None:
            save_file(_plain(best), str(temp / "best.safetensors"))
        tensors, optimizer_rest = _split_optimizer(optimizer.state_dict())
        tensors["rng"] = torch.get_rng_state()
        gpu = _cuda_device(model)
        if gpu is not None:  # dropout on a GPU draws from its own generator
            tensors["rng_cuda"] = torch.cuda.get_rng_state(gpu)
        save_file(tensors, str(temp / "optimizer.safetensors"))
        record = {**state, "optimizer": optimizer_rest, "schedule": schedule.state_dict()}
        (temp / "state.json").write_text(json.dumps(record), "utf-8")
        for file in temp.iterdir():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
        target = root / NAME
        old = root / f".{NAME}.old-{uuid.uuid4().hex[:8]}"
        if target.exists():
            os.replace(target, old)
        os.replace(temp, target)
        for stale in root.glob(f".{NAME}.*-*"):  # this save's old one, and a killed save's
            shutil.rmtree(stale, ignore_errors=True)
        return target
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)


def load(directory: str | os.PathLike[str], *, model: torch.nn.Module,
         optimizer: torch.optim.Optimizer, schedule: Any, expect: dict[str, Any]
         ) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None] | None:
    """Restore model, optimizer, schedule and RNG from `directory/checkpoint`; returns the
    saved state and the best weights, or None when there is no checkpoint. A checkpoint whose
    fingerprint is not `expect` (another run's), or one that cannot be read whole (damaged), is
    a TaskError, and nothing is changed."""
    from ._errors import TaskError

    source = _tidy(Path(directory))
    if not source.exists():
        return None
    state, weights, tensors, best = _read(source)
    saved = state.get("fingerprint") or {}
    differences = _differences(saved, expect)
    if differences:
        raise TaskError(f"{source}: this checkpoint is from another training run "
                        f"({differences}). Fix: resume with the same data and options, or use "
                        "a new checkpoint directory.")
    result = model.load_state_dict(weights, strict=False)
    if result.unexpected_keys:
        raise TaskError(f"{source}: weights {result.unexpected_keys[:3]} are not in this model. "
                        "Fix: resume with the same options, or use a new checkpoint directory.")
    torch.set_rng_state(tensors.pop("rng"))
    cuda_rng, gpu = tensors.pop("rng_cuda", None), _cuda_device(model)
    if cuda_rng is not None and gpu is not None:  # (a GPU run resumed on a CPU has no use
        torch.cuda.set_rng_state(cuda_rng, gpu)   # for it: its dropout draws on the CPU)
    optimizer.load_state_dict(_join_optimizer(tensors, state.pop("optimizer")))
    schedule.load_state_dict(state.pop("schedule"))
    return state, best


def _read(source: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor],
                                 dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """A checkpoint's state, weights, optimizer tensors and best weights, all read before any
    is applied; a file missing, cut short or not what it should be is a TaskError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ._errors import TaskError

    file = "state.json"
    try:
        state = json.loads((source / file).read_text("utf-8"))
        missing = sorted(set(STATE_FIELDS) - set(state)) if isinstance(state, dict) else []
        if not isinstance(state, dict) or missing:
            raise ValueError(f"lacks {', '.join(missing)}" if missing else "not a record")
        file = "model.safetensors"
        weights = load_file(str(source / file))
        file = "optimizer.safetensors"
        tensors = load_file(str(source / file))
        if "rng" not in tensors:
            raise ValueError("lacks the random-number state")
        file = "best.safetensors"
        best = load_file(str(source / file)) if (source / file).exists() else None
    except (OSError, ValueError, SafetensorError) as err:
        why = "missing" if isinstance(err, FileNotFoundError) else str(err).splitlines()[0]
        raise TaskError(f"{source}: the checkpoint is damaged ({file}: {why}). Fix: delete "
                        f"{source} and train again from the start, or resume from an intact "
                        "copy.") from None
    return state, weights, tensors, best


def _tidy(root: Path) -> Path:
    """The checkpoint under `root`, put back in place when a save was killed between its two
    renames (the last one moved aside, the new one not in yet); killed saves' leftovers go."""
    target = root / NAME
    olds = sorted(root.glob(f".{NAME}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds and not target.exists():
        os.replace(olds.pop(), target)
    for stale in [*olds, *root.glob(f".{NAME}.tmp-*")]:
        shutil.rmtree(stale, ignore_errors=True)
    return target


def _cuda_device(model: torch.nn.Module) -> torch.device | None:
    """The GPU `model` trains on, if any."""
    device = next((p.device for p in model.parameters()), None)
    return device if device is not None and device.type == "cuda" else None


def _plain(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def _split_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer tensors by 'param/field' key, and the rest (JSON)."""
    tensors: dict[str, torch.Tensor] = {}
    rest: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for param, fields in state["state"].items():
        for name, value in fields.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{param}/{name}"] = value.detach().cpu().contiguous()
            else:
                rest["state"].setdefault(str(param), {})[name] = value
    return tensors, rest


def _join_optimizer(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(k): dict(v) for k, v in rest["state"].items()}
    for key, value in tensors.items():
        param, name = key.split("/", 1)
        state.setdefault(int(param), {})[name] = value
    return {"state": state, "param_groups": rest["param_groups"]}


def _differences(saved: dict[str, Any], expect: dict[str, Any], prefix: str = "") -> str:
    """What differs between a checkpoint's fingerprint and this run's, e.g. "epochs 2 there,
    3 here; the starting weights differ"; options by name ("lora.alpha 16 there, 64 here").

    >>> _differences({"epochs": 2, "seed": 1, "weights": "a"}, {"epochs": 3, "seed": 1,
    ...                                                         "weights": "b"})
    'epochs 2 there, 3 here; the starting weights differ'
    >>> _differences({"options": {"lora": {"r": 8}}}, {"options": {"lora": {"r": 4}}})
    'lora.r 8 there, 4 here'

    What only one side records (a checkpoint of an older funcformer, before the data, the
    options or an option were part of it) is not held against it:

    >>> _differences({"epochs": 2}, {"epochs": 2, "data": "a", "options": {"lr": 1}})
    ''

    The seed also picks the held-out rows, so with another seed the rows trained on differ
    from the same file; that is said, not that the data changed:

    >>> _differences({"seed": 42, "data": "a"}, {"seed": 5, "data": "b"})
    'the rows trained on differ (the seed picks the held-out part); seed 42 there, 5 here'
    """
    if not prefix and all(k in saved and k in expect and saved[k] != expect[k]
                          for k in ("seed", "data")):
        saved, expect = dict(saved), dict(expect)
        saved["data"] = expect["data"] = None
        rest = _differences(saved, expect, prefix)
        return "; ".join(["the rows trained on differ (the seed picks the held-out part)",
                          *([rest] if rest else [])])
    out = []
    for key in sorted(set(saved) & set(expect)):
        there, here = saved[key], expect[key]
        if there == here:
            continue
        if isinstance(there, dict) and isinstance(here, dict):  # options, and their settings
            inner = _differences(there, here, "" if key == "options" else f"{prefix}{key}.")
            if inner:
                out.append(inner)
        elif not prefix and key in ("weights", "data", "frozen", "eval"):
            out.append({"weights": "the starting weights differ",
                        "data": "the training data differs",
                        "frozen": "the frozen weights (the backbone) differ",
                        "eval": "the eval data differs"}[key])
        else:
            out.append(f"{prefix}{key} {there!r} there, {here!r} here")
    return "; ".join(out)
