"""TensorBoard scalars from the shared training loop (`log_dir` / `--log-dir`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import funcformer
from funcformer import MissingExtra


def _scalars(directory: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = [p for p in directory.iterdir() if p.is_dir()]
    assert len(runs) == 1
    events = EventAccumulator(str(runs[0]))
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_loss_learning_rate_and_eval_are_logged(tiny_backbone: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from conftest import make_reviews

    fn = funcformer.train("classify", make_reviews(16), eval_data=make_reviews(8, seed=1),
                          backbone=tiny_backbone, method="full", epochs=2, batch_size=8,
                          progress=False, log_dir=str(tmp_path))
    scalars = _scalars(tmp_path)
    # 32 examples + 4 label texts (2 per label), batches of 8: 5 steps an epoch, 2 epochs
    assert len(scalars["train/loss"]) == 2 * 5
    assert len(scalars["train/learning_rate"]) == 10
    assert max(scalars["train/learning_rate"]) == pytest.approx(5e-5, rel=1e-3)  # after warm-up
    assert scalars["epoch/loss"] == pytest.approx(
        [e["loss"] for e in fn.manifest.training["history"]["epochs"] if "loss" in e])
    assert scalars["eval/accuracy"] == pytest.approx(
        [e["eval"] for e in fn.manifest.training["history"]["epochs"] if e["epoch"] > 0])


def test_missing_tensorboard_names_the_extra(tiny_backbone: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import make_reviews

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    with pytest.raises(MissingExtra, match=r"pip install 'funcformer\[tensorboard\]'"):
        funcformer.train("classify", make_reviews(8), backbone=tiny_backbone, method="full",
                         epochs=1, progress=False, log_dir=str(tmp_path))


def test_cli_log_dir(tiny_backbone: Path, tmp_path: Path, reviews_csv: Path) -> None:
    pytest.importorskip("tensorboard")
    from funcformer._cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "classify", str(reviews_csv), "--out", str(tmp_path / "fn"),
              "--backbone", str(tiny_backbone), "--method", "full", "--epochs", "1",
              "--log-dir", str(tmp_path / "logs")])
    assert exit_info.value.code == 0
    assert _scalars(tmp_path / "logs")["train/loss"]


def test_a_log_dir_that_cannot_be_made_is_a_task_error(tiny_backbone: Path,
                                                       tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from conftest import make_reviews

    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(funcformer.TaskError, match=r"log_dir .*file\.txt/logs: .*file\.txt is a "
                                                   r"file, so no directory can be made .*Fix"):
        funcformer.train("classify", make_reviews(16), backbone=tiny_backbone, method="full",
                         epochs=1, progress=False, log_dir=str(blocker / "logs"))


class _Killed(BaseException):
    """Stands in for SIGKILL in-process."""


def _steps(run: Path, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run))
    events.Reload()
    return [e.step for e in events.Scalars(tag)]


def test_a_resumed_run_logs_each_step_once(tiny_backbone: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The steps between the last checkpoint and the kill were logged twice after resuming."""
    pytest.importorskip("tensorboard")
    from conftest import make_reviews

    from funcformer import _train

    train = dict(backbone=tiny_backbone, method="full", epochs=2, batch_size=8, progress=False,
                 log_dir=str(tmp_path / "logs"), checkpoint_dir=str(tmp_path / "ckpt"),
                 checkpoint_steps=2)
    real = _train._Board.step

    def step_then_die(self: object, step: int, *args: object) -> None:
        real(self, step, *args)
        if step == 3 and self.writer is not None:  # past the checkpoint at step 2 (the head
            raise _Killed                          # fit first logs nothing)

    with monkeypatch.context() as patch:
        patch.setattr(_train._Board, "step", step_then_die)
        with pytest.raises(_Killed):
            funcformer.train("classify", make_reviews(16), **train)
    (run,) = [p for p in (tmp_path / "logs").iterdir() if p.is_dir()]
    assert _steps(run, "train/loss") == [1, 2, 3]
    funcformer.train("classify", make_reviews(16), resume=True, **train)
    assert _steps(run, "train/loss") == list(range(1, 11))  # 5 steps an epoch, 2 epochs


def test_the_heads_refit_is_its_own_run(tiny_backbone: Path, tmp_path: Path) -> None:
    """`head` refits on train + held-out rows: that second run wrote into the first's
    folder, its steps starting again at 1."""
    pytest.importorskip("tensorboard")
    from conftest import make_reviews

    fn = funcformer.train("classify", make_reviews(100), backbone=tiny_backbone, method="head",
                          epochs=3, progress=False, log_dir=str(tmp_path))  # 20 held out
    assert fn.manifest.training["eval_source"].startswith("held out")
    runs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert runs == ["head", "head_refit"]
    assert _steps(tmp_path / "head", "eval/accuracy") == sorted(
        set(_steps(tmp_path / "head", "eval/accuracy")))


def test_self_training_logs_each_round_as_its_own_run(tiny_backbone: Path,
                                                       tmp_path: Path) -> None:
    """Every round logged into one run: the rounds' steps overlapped, and a resumed round
    hid the later rounds' steps."""
    pytest.importorskip("tensorboard")
    from conftest import make_reviews

    texts = [t for t, _ in make_reviews(10, seed=4)]
    funcformer.train("classify", make_reviews(4), backbone=tiny_backbone, unlabeled=texts,
                     method="full", epochs=1, progress=False, log_dir=str(tmp_path),
                     self_training={"rounds": 2, "threshold": 0.5})
    rounds = sorted(p.name for p in tmp_path.iterdir())
    assert rounds == ["round-0", "round-1", "round-2"]
    for folder in rounds:
        (run,) = [p for p in (tmp_path / folder).iterdir() if p.is_dir()]
        steps = _steps(run, "train/loss")
        assert steps == list(range(1, len(steps) + 1))
